"""Which way `backup --volume` reads a volume, decided without a cloud: straight from Ceph only when
`[ceph] volume_backends` names the backend Cinder gives and librbd opens the volume's snapshot; every
other case takes the temporary-volume path and says why. (The dev cloud's Cinder cannot make a
temporary volume of an RBD volume readable to the proxy, so these cases are checked here.)"""

from types import SimpleNamespace

import pytest

from stackvault.config import Settings
from stackvault.engine.sources import RawSource
from stackvault.errors import SourceError
from stackvault.jobs import cloud_backup
from stackvault.jobs.cloud_backup import DiskReaders


class FakeRbd(RawSource):
    """What open_rbd gives: the image's own key and meta, which the reader replaces with the volume's."""


@pytest.fixture
def readers(monkeypatch, tmp_path):
    opened: list[str] = []

    def open_rbd(spec, conf, client, keyring):
        opened.append(spec)
        if "refused" in spec:
            raise SourceError(f"cannot open rbd source {spec} as {client}: [errno 13] RADOS permission denied", "fix")
        source = FakeRbd(path=f"rbd:{spec}", name="volume-x", key="rbd:fsid/volumes/volume-x", format="rbd")
        source.meta = {"rbd": {"fsid": "f", "snapshot": spec.split("@")[1]}}
        return source

    monkeypatch.setattr(cloud_backup, "open_rbd", open_rbd)
    settings = Settings(workdir=tmp_path)
    made: list[str] = []

    def temp(self, snapshot_id, size_gb, *, name, key, meta):
        made.append(snapshot_id)
        return RawSource(path="/dev/null", name=name, key=key, meta=meta)

    monkeypatch.setattr(DiskReaders, "_temp_volume_source", temp)
    reader = DiskReaders(SimpleNamespace(settings=settings), SimpleNamespace(), "job", [])
    return reader, settings, opened, made


def volume(host: str | None, vid: str = "v1") -> SimpleNamespace:
    return SimpleNamespace(id=vid, size=1, host=host, volume_type=None, migration_id=None)


def test_each_mapped_backend_name_is_tried_until_librbd_opens_the_image(readers):
    """`node@ceph-ssd#ceph`: the section names the backend (pool volumes-ssd); the pool part `ceph` is
    another backend's volume_backend_name, tried only when the section's pool does not hold the image."""
    reader, settings, opened, made = readers
    settings.ceph.volume_backends = {"ceph": "volumes", "ceph-ssd": "volumes-ssd"}
    source = read(reader, volume("node@ceph-ssd#ceph"))
    assert opened == ["volumes-ssd/volume-v1@snapshot-s1"] and made == []
    assert source.read_note["backend"] == "ceph-ssd (os-vol-host-attr:host node@ceph-ssd#ceph)"
    settings.ceph.volume_backends = {"ceph": "volumes", "ceph-ssd": "refused"}
    opened.clear()
    source = read(reader, volume("node@ceph-ssd#ceph"))
    assert opened == ["refused/volume-v1@snapshot-s1", "volumes/volume-v1@snapshot-s1"]
    assert source.read_note["rbd"] == "volumes/volume-v1@snapshot-s1"
    settings.ceph.volume_backends = {"ceph": "refused", "ceph-ssd": "refused"}
    opened.clear()
    fallback = read(reader, volume("node@ceph-ssd#ceph"))
    assert len(opened) == 2 and made == ["s1"]
    assert fallback.read_note["why"].startswith("Cinder backend ceph-ssd is RBD (os-vol-host-attr:host "
                                                "node@ceph-ssd#ceph) but librbd cannot read it: ")
    assert "; Cinder backend ceph is RBD (os-vol-host-attr:host node@ceph-ssd#ceph) but" in fallback.read_note["why"]


def read(reader, vol):
    return reader.from_volume(vol, "s1", name="data", key=f"volume:{vol.id}", meta={"volume_id": vol.id})


def test_without_volume_backends_nothing_asks_cinder_or_ceph(readers):
    reader, _, opened, made = readers
    source = read(reader, volume("node@ceph#ceph"))
    assert opened == [] and made == ["s1"]
    assert source.read_note == {}  # the report's `read` stays empty, as it always was


def test_a_volume_on_a_mapped_backend_is_read_from_its_rbd_snapshot_under_the_volumes_key(readers):
    reader, settings, opened, made = readers
    settings.ceph.volume_backends = {"ceph": "volumes"}
    source = read(reader, volume("node@ceph#ceph"))
    assert opened == ["volumes/volume-v1@snapshot-s1"] and made == []
    assert (source.key, source.name) == ("volume:v1", "data")
    assert source.meta == {"volume_id": "v1", "rbd": {"fsid": "f", "snapshot": "snapshot-s1"}}
    assert source.read_note == {"rbd": "volumes/volume-v1@snapshot-s1",
                                "backend": "ceph (os-vol-host-attr:host node@ceph#ceph)"}


def test_every_other_case_takes_the_temporary_volume_and_says_why(readers):
    reader, settings, opened, made = readers
    settings.ceph.volume_backends = {"ceph": "refused"}
    settings.cloud.volume_transfer = "image"
    other = read(reader, volume("node@lvm#lvm"))
    assert other.read_note["path"] == "image"
    assert other.read_note["why"] == ("os-vol-host-attr:host node@lvm#lvm: not one of the RBD backends of "
                                      "[ceph] volume_backends (ceph)")
    unknown = read(reader, volume(None))
    assert "neither the volume's host nor its type's volume_backend_name" in unknown.read_note["why"]
    refused = read(reader, volume("node@ceph#ceph"))
    assert refused.read_note["why"] == (
        "Cinder backend ceph is RBD (os-vol-host-attr:host node@ceph#ceph) but librbd cannot read it: cannot open "
        "rbd source refused/volume-v1@snapshot-s1 as client.admin: [errno 13] RADOS permission denied")
    assert opened == ["refused/volume-v1@snapshot-s1"] and made == ["s1", "s1", "s1"]
    assert refused.key == "volume:v1"
