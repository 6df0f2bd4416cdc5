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


def test_the_hosts_backend_section_comes_first_then_the_volume_type_then_the_pool_part():
    """Two backends of one Cinder may report one `volume_backend_name` (the pool part): the section
    names the backend itself, so `node@ceph-ssd#ceph` is `ceph-ssd` before it is `ceph`."""
    ssd = volume(host="node@ceph-ssd#ceph", volume_type="ssd")
    found = volume_placement(conn({"volume_backend_name": "ceph"}), ssd)
    assert found.candidates == (("ceph-ssd", "os-vol-host-attr:host node@ceph-ssd#ceph"),
                                ("ceph", "volume type ssd (volume_backend_name ceph)"))
    assert volume_placement(conn(), volume(host="node1@rbd-1#ceph-ssd")).backends == ("rbd-1", "ceph-ssd")
    assert volume_placement(conn(), volume(host="devcloud@ceph#ceph")).backends == ("ceph",)
    assert volume_placement(conn(), volume(host="node1@lvm")).backends == ("lvm",)


def test_a_host_without_a_backend_section_still_asks_the_volume_type():
    found = volume_placement(conn({"volume_backend_name": "ceph"}), volume(host="node1", volume_type="fast"))
    assert found.backends == ("ceph",) and "volume type fast" in found.candidates[0][1]


def test_without_the_host_the_volume_types_backend_name_is_used():
    found = volume_placement(conn({"volume_backend_name": "ceph"}), volume(volume_type="fast"))
    assert found.backends == ("ceph",) and "volume type fast" in found.candidates[0][1]


def test_when_cinder_says_nothing_the_placement_is_empty_and_says_why():
    for c, v in ((conn(None), volume(volume_type="fast")), (conn({}), volume(volume_type="fast")), (conn(), volume())):
        found = volume_placement(c, v)
        assert found.backends == () and "neither" in found.said_by


def test_rbd_names_follow_cinders_rbd_driver():
    assert rbd_image(volume()) == "volume-v1"
    assert rbd_image(volume(migration_id="v9")) == "volume-v9"  # a migrated volume's data is under its name id
    assert rbd_snapshot("s1") == "snapshot-s1"
