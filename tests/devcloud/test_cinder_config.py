"""cinder.conf as the dev cloud renders it: everything under the state dir, nothing from /etc,
the in-process transport, our sparse-file backend. Fast: no cloud needed."""

from __future__ import annotations

import configparser
from pathlib import Path

from devcloud.cinder import config


def rendered(tmp_path: Path, **extra: object) -> configparser.RawConfigParser:
    settings = config.CinderSettings(
        state_dir=tmp_path / "cinder", venv=tmp_path / "venv", listen_host="127.0.0.1",
        listen_port=48776, keystone_url="http://127.0.0.1:45357",
        glance_url="http://127.0.0.1:49292", service_password="s3cret", **extra)
    parser = configparser.RawConfigParser()
    parser.read_string(config.render(settings))
    return parser


def test_config_keeps_every_path_under_the_state_dir_or_the_venv(tmp_path):
    conf = rendered(tmp_path)
    values = [v for s in conf.sections() + ["DEFAULT"] for _, v in conf.items(s)]
    paths = [v for v in values if v.startswith("/") or "file://" in v or "sqlite://" in v]
    assert paths, "expected some paths"
    assert not [p for p in paths if "/etc/cinder" in p and str(tmp_path) not in p]
    assert all(str(tmp_path) in p for p in paths), paths


def test_config_runs_in_one_process_with_our_backend(tmp_path):
    conf = rendered(tmp_path)
    assert conf.get("DEFAULT", "transport_url") == "fake:/"
    assert conf.get("DEFAULT", "enabled_backends") == config.BACKEND
    assert conf.get("DEFAULT", "osapi_volume_workers") == "1"
    backend = dict(conf.items(config.BACKEND))
    assert backend["volume_driver"] == "devcloud.cinder.driver.SparseFileDriver"
    assert backend["sparse_volumes_dir"] == str(config.volumes_dir(tmp_path / "cinder"))


def test_privsep_helpers_start_without_sudo(tmp_path):
    conf = rendered(tmp_path)
    for section in ("cinder_sys_admin", "privsep_osbrick"):
        helper = conf.get(section, "helper_command")
        assert helper.startswith(str(tmp_path / "venv" / "bin" / "privsep-helper"))
        assert "sudo" not in helper


def test_with_a_ceph_conf_cinders_own_rbd_driver_is_a_second_backend(tmp_path):
    conf = rendered(tmp_path, ceph_conf=tmp_path / "ceph" / "ceph.conf")
    assert conf.get("DEFAULT", "enabled_backends") == f"{config.BACKEND},{config.CEPH_BACKEND}"
    rbd = dict(conf.items(config.CEPH_BACKEND))
    assert rbd["volume_driver"] == "cinder.volume.drivers.rbd.RBDDriver"
    assert rbd["volume_backend_name"] == config.CEPH_BACKEND
    assert (rbd["rbd_ceph_conf"], rbd["rbd_pool"], rbd["rbd_user"]) == (
        str(tmp_path / "ceph" / "ceph.conf"), "volumes", "cinder")
    assert not rendered(tmp_path).has_section(config.CEPH_BACKEND)
