"""The server definition a backup record keeps (stackvault.server_definition): versioned, and read
with its types checked, because a restore boots a server from it."""

from __future__ import annotations

import pytest

from stackvault.errors import DamagedRecordError, UsageError
from stackvault.server_definition import DEFINITION_VERSION, AttachedVolume, ServerDefinition

WRITTEN_BEFORE_VERSIONS = {  # a definition as records written before the version field hold it
    "id": "s-1", "name": "web1", "project_id": "p", "created_at": "2026-12-01T00:00:00Z",
    "flavor": {"original_name": "m1.tiny", "vcpus": 1}, "image_id": None, "boot": "volume",
    "key_name": None, "security_groups": ["default"], "addresses": {}, "metadata": {"role": "web"},
    "ports": [{"id": "port-1", "network_id": "net-1", "mac_address": "fa:16:3e:00:00:01"}],
    "tags": [], "availability_zone": "nova", "root_device_name": "/dev/vda",
    "volumes": [{"id": "v-1", "device": "/dev/vda", "boot_index": 0, "size_gb": 1, "volume_type": "ceph",
                 "name": None, "bootable": True, "metadata": {}, "volume_image_metadata": {"image_id": "i"}},
                {"id": "v-2", "device": "/dev/vdb", "boot_index": None, "size_gb": 2, "volume_type": None,
                 "name": "data", "bootable": False, "metadata": {}, "volume_image_metadata": {}}],
    "image_properties": {"image_id": "i"}, "image_properties_source": "volume v-1",
}


def test_a_definition_without_a_version_is_version_one_and_keeps_every_field():
    d = ServerDefinition.from_dict(WRITTEN_BEFORE_VERSIONS, "b1")
    assert d.version == 1 and d.boot == "volume" and d.flavor_name == "m1.tiny" and d.root_device == "vda"
    assert d.volumes[1] == AttachedVolume(id="v-2", device="/dev/vdb", size_gb=2, name="data")
    assert d.volumes[1].device_name == "vdb"
    assert d.to_dict() == {**WRITTEN_BEFORE_VERSIONS, "version": DEFINITION_VERSION}
    assert ServerDefinition.from_dict(d.to_dict(), "b1") == d


def test_a_newer_definition_is_refused_with_upgrade_and_the_way_to_its_disks():
    with pytest.raises(UsageError) as raised:
        ServerDefinition.from_dict({**WRITTEN_BEFORE_VERSIONS, "version": DEFINITION_VERSION + 1}, "b1")
    assert str(raised.value) == (
        f"backup b1 holds a server definition of version {DEFINITION_VERSION + 1}, newer than this stackvault "
        f"reads ({DEFINITION_VERSION}) (upgrade stackvault to restore it into the cloud; `restore --to file:` "
        "reads its disks as they are)")


@pytest.mark.parametrize(("change", "problem"), [
    ({"version": "2"}, "has version '2'"),
    ({"boot": "floppy"}, "says it booted from 'floppy'"),
    ({"name": None}, "has no name"),
    ({"flavor": "m1.tiny"}, "has a flavor of the wrong type"),
    ({"volumes": [{"id": "v-1"}]}, "has a volume without an id and a device"),
    ({"ports": [{"id": "port-1"}]}, "has a port that is not an object with a network_id"),
])
def test_a_damaged_definition_is_a_damaged_record_naming_what_is_wrong(change, problem):
    with pytest.raises(DamagedRecordError) as raised:
        ServerDefinition.from_dict({**WRITTEN_BEFORE_VERSIONS, **change}, "b1")
    assert raised.value.problem == f"its server definition {problem}"
