"""swift:// with Keystone credentials from clouds.yaml: the dev cloud's Keystone, the real Swift.

The Swift all-in-one's Keystone proxy is in the dev cloud's catalog as `object-store`, so a user
with a clouds.yaml entry needs nothing else: OS_CLOUD (or ?cloud= in the location) picks the entry.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from e2e.helpers import change_blocks, sha256_file

from stackvault.errors import RepositoryError
from stackvault.storage import open_backend

from .conftest import unique_name
from .test_cli_object_store import ObjectStoreUser, image  # noqa: F401 - the image fixture

pytestmark = pytest.mark.devcloud


@pytest.fixture
def keystone_env(swift_keystone, monkeypatch: pytest.MonkeyPatch) -> str:
    for name in ("ST_AUTH", "ST_USER", "ST_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(swift_keystone.clouds_yaml))
    monkeypatch.setenv("OS_CLOUD", "devcloud-demo")
    return "devcloud-demo"


def test_openstacksdk_sees_what_stackvault_wrote(keystone_env: str, swift_keystone) -> None:
    container = unique_name("ks")
    backend = open_backend(f"swift://{container}/repo")
    backend.create()
    backend.put("config", b"{}")
    assert backend.inner.auth_kind == "keystone"  # type: ignore[attr-defined]  # the Swift driver under the wrapper
    conn = swift_keystone.connect("devcloud-demo")
    names = [o.name for o in conn.object_store.objects(container)]
    assert names == ["repo/config"]


def test_cloud_named_in_the_location(keystone_env: str, monkeypatch) -> None:
    monkeypatch.delenv("OS_CLOUD")
    backend = open_backend(f"swift://{unique_name('ks')}/repo?cloud=devcloud")
    backend.create()
    backend.put("x", b"1")
    assert backend.get("x") == b"1"
    with pytest.raises(Exception, match="nosuchcloud"):
        open_backend("swift://c/p?cloud=nosuchcloud").get("x")


def test_member_of_another_project_is_refused(keystone_env: str, monkeypatch) -> None:
    container = unique_name("ks")
    admin = open_backend(f"swift://{container}/repo?cloud=devcloud")
    admin.create()
    # The same container name in the demo project's account is another, missing container.
    with pytest.raises(RepositoryError, match=f"{container}.* does not exist"):
        open_backend(f"swift://{container}/repo").put("config", b"x")


@pytest.mark.slow
def test_backup_and_restore_through_keystone(keystone_env: str, image: Path, tmp_path: Path) -> None:  # noqa: F811 - the imported fixture
    location = f"swift://{unique_name('ks')}/backups"
    open_backend(location).create()
    user = ObjectStoreUser(tmp_path / "sv", location=location)
    user.init("64KiB")
    user.backup(image, level="full")
    change_blocks(image, [3, 30], random.Random(5))
    user.backup(image, level="incremental")
    assert sha256_file(user.restore("latest", tmp_path / "out.raw")) == sha256_file(image)
    assert user.run("verify", "--deep").data["ok"]
