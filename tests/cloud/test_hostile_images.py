"""A tenant's Glance image that names a file of the proxy (a qcow2 backing file or external data
file) is refused before anything is read through qemu, and leaves nothing in the job's tmpdir."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from stackvault.cloud.transfer import open_image_source
from stackvault.engine.qcow2stream import ImageRefused

from .test_qcow2_stream import upload  # noqa: F401  (the fixture)

pytestmark = pytest.mark.devcloud
MiB = 1 << 20


def _naming(tmp_path: Path, what: str) -> Path:
    secret = tmp_path / "proxy-secret"
    secret.write_bytes(os.urandom(MiB))
    img = tmp_path / "tenant.qcow2"
    if what == "backing file":
        args = ["-F", "raw", "-b", str(secret)]
    else:
        args = ["-o", f"data_file={secret},data_file_raw=on"]
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", *args, str(img), str(MiB)], check=True)
    return img


@pytest.mark.parametrize("what", ["backing file", "external data file"])
def test_a_glance_image_naming_a_proxy_file_is_refused(conn, upload, tmp_path: Path, what: str) -> None:  # noqa: ANN001, F811
    image = upload(_naming(tmp_path, what))
    tmpdir = tmp_path / "job-tmp"
    with pytest.raises(ImageRefused, match=f"image refused: .*{what}"):
        open_image_source(conn, image, name="vda", key="test:vda", tmpdir=str(tmpdir))
    assert not tmpdir.exists() or not os.listdir(tmpdir), "nothing was downloaded"
