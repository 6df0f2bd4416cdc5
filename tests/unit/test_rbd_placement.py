"""Where Cinder says a volume lives, read without a cloud: the names `[ceph] volume_backends` is
looked up with, and the RBD names Cinder's RBD driver gives a volume and a snapshot."""

from types import SimpleNamespace

from stackvault.cloud.rbd import rbd_image, rbd_snapshot, volume_placement


class Types:
    def __init__(self, specs: dict | None):
        self.specs = specs

    def find_type(self, name, ignore_missing=True):
        return None if self.specs is None else SimpleNamespace(extra_specs=self.specs)


def conn(specs: dict | None = None) -> SimpleNamespace:
    return SimpleNamespace(block_storage=Types(specs))


def volume(**fields) -> SimpleNamespace:
    return SimpleNamespace(**{"id": "v1", "host": None, "volume_type": None, "migration_id": None, **fields})


def test_the_host_names_the_backend_pool_first_then_its_section():
    found = volume_placement(conn(), volume(host="node1@rbd-1#ceph-ssd"))
    assert found.backends == ("ceph-ssd", "rbd-1") and found.said_by == "os-vol-host-attr:host node1@rbd-1#ceph-ssd"
    assert volume_placement(conn(), volume(host="devcloud@ceph#ceph")).backends == ("ceph",)
    assert volume_placement(conn(), volume(host="node1@lvm")).backends == ("lvm",)


def test_without_the_host_the_volume_types_backend_name_is_used():
    found = volume_placement(conn({"volume_backend_name": "ceph"}), volume(volume_type="fast"))
    assert found.backends == ("ceph",) and "volume type fast" in found.said_by


def test_when_cinder_says_nothing_the_placement_is_empty_and_says_why():
    for c, v in ((conn(None), volume(volume_type="fast")), (conn({}), volume(volume_type="fast")), (conn(), volume())):
        found = volume_placement(c, v)
        assert found.backends == () and "neither" in found.said_by


def test_rbd_names_follow_cinders_rbd_driver():
    assert rbd_image(volume()) == "volume-v1"
    assert rbd_image(volume(migration_id="v9")) == "volume-v9"  # a migrated volume's data is under its name id
    assert rbd_snapshot("s1") == "snapshot-s1"
