import pytest

from stackvault.config import load_settings, parse_size
from stackvault.errors import UsageError


@pytest.mark.parametrize("text,value", [("1MiB", 1 << 20), ("64K", 64 << 10), ("4M", 4 << 20), ("512", 512),
                                        ("16 MiB", 16 << 20)])
def test_parse_size(text, value):
    assert parse_size(text) == value


def test_precedence_file_env_cli(tmp_path, monkeypatch):
    cfg = tmp_path / "sv.toml"
    cfg.write_text('repo = "/from/file"\nworkers = 3\n[retention]\nkeep_last = 4\n')
    monkeypatch.delenv("STACKVAULT_REPO", raising=False)
    s = load_settings(str(cfg))
    assert (s.repo, s.workers, s.retention.keep_last) == ("/from/file", 3, 4)
    monkeypatch.setenv("STACKVAULT_REPO", "/from/env")
    assert load_settings(str(cfg)).repo == "/from/env"
    assert load_settings(str(cfg), repo="/from/cli").repo == "/from/cli"


@pytest.mark.parametrize("body,message", [
    ('keep_lats = 7\n', "unknown key 'keep_lats'"),
    ('[retention]\nkeep_lats = 7\n', "unknown key retention.keep_lats"),
    ('workers = "many"\n', "bad value 'many' for workers"),
    ('repo = \n', "not valid TOML"),
])
def test_bad_config_names_the_key(tmp_path, body, message):
    cfg = tmp_path / "sv.toml"
    cfg.write_text(body)
    with pytest.raises(UsageError, match=message):
        load_settings(str(cfg))


def test_ceph_section_is_read_and_its_sample_share_checked(tmp_path):
    cfg = tmp_path / "sv.toml"
    cfg.write_text('[ceph]\nconf = "/etc/ceph/c.conf"\nclient = "client.stackvault"\nverify_sample = 0.01\n')
    s = load_settings(str(cfg))
    assert (s.ceph.conf, s.ceph.client, s.ceph.keyring, s.ceph.verify_sample) == (
        "/etc/ceph/c.conf", "client.stackvault", None, 0.01)
    for bad in ("1.5", "-0.1", '"often"', "true"):
        cfg.write_text(f"[ceph]\nverify_sample = {bad}\n")
        with pytest.raises(UsageError, match=r"ceph.verify_sample .* not a share from 0 to 1"):
            load_settings(str(cfg))
    cfg.write_text('[ceph]\nclient = 7\n')
    with pytest.raises(UsageError, match=r"ceph.client .* must be a string"):
        load_settings(str(cfg))


def test_the_changed_block_list_is_on_unless_turned_off(tmp_path):
    cfg = tmp_path / "sv.toml"
    cfg.write_text('[ceph]\nconf = "/etc/ceph/c.conf"\n')
    assert load_settings(str(cfg)).ceph.changed_blocks is True
    cfg.write_text("[ceph]\nchanged_blocks = false\n")
    assert load_settings(str(cfg)).ceph.changed_blocks is False
    cfg.write_text('[ceph]\nchanged_blocks = "no"\n')
    with pytest.raises(UsageError, match=r"ceph.changed_blocks .* must be true or false"):
        load_settings(str(cfg))


def test_ceph_volume_backends_map_cinder_backends_to_pools(tmp_path):
    """Off unless set; a table of backend = pool, or a list of backends in the usual pool `volumes`."""
    cfg = tmp_path / "sv.toml"
    cfg.write_text('[ceph]\nconf = "/etc/ceph/c.conf"\n')
    assert load_settings(str(cfg)).ceph.volume_backends == {}
    cfg.write_text('[ceph]\nvolume_backends = { ceph = "volumes", "rbd-ssd" = "fast" }\n')
    assert load_settings(str(cfg)).ceph.volume_backends == {"ceph": "volumes", "rbd-ssd": "fast"}
    cfg.write_text('[ceph]\nvolume_backends = ["ceph", "rbd-ssd=fast"]\n')
    assert load_settings(str(cfg)).ceph.volume_backends == {"ceph": "volumes", "rbd-ssd": "fast"}
    for bad in ('"ceph"', "[1]", '{ ceph = 1 }', '{ ceph = "" }', '[""]'):
        cfg.write_text(f"[ceph]\nvolume_backends = {bad}\n")
        with pytest.raises(UsageError, match=r"ceph\.volume_backends .* must name Cinder backends and their pools"):
            load_settings(str(cfg))
