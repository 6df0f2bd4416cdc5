"""Only src/stackvault/cloud/ talks to openstacksdk's service proxies.

Jobs, the service and the CLI go through the typed functions of `stackvault.cloud` (which retry and
wait in one way, and translate the SDK's errors into the project's); a job reaching `conn.compute`
itself brings back the hand-written loops and the raw SDK objects the facade exists to keep out. The
check reads the source with `ast`, so it also sees calls on paths no test runs.
"""

from __future__ import annotations

import ast
from pathlib import Path

import stackvault

SOURCE = Path(stackvault.__file__).parent
CLOUD = SOURCE / "cloud"
PROXIES = {"compute", "block_storage", "image", "network", "identity"}

#: Attributes of the same names on objects that are no openstacksdk connection, by the last name of the
#: receiver (`args.network` -> "args"), each with what it is.
NOT_A_CONNECTION = {
    ("network", "args"): "the `restore --network` option",
    ("image", "snap"): "cloud.snapshots.ServerSnapshot.image, the snapshot's Glance image",
    ("identity", "backend"): "a storage backend's identity (the store it names)",
    ("identity", "inner"): "a wrapped storage backend's identity",
    ("identity", "repo"): "the repository's store identity",
    ("identity", "store"): "the repository's storage identity (engine.repository)",
}


def _receiver_name(node: ast.expr) -> str:
    """`self.conn` -> "conn", `repo.backend` -> "backend", `conn` -> "conn", a call's result -> ""."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return ""


def proxy_accesses(root: Path) -> list[str]:
    """`file:line: expression` for every proxy attribute reached outside `root`/cloud."""
    found = []
    for path in sorted(root.rglob("*.py")):
        if path.is_relative_to(root / "cloud"):
            continue
        reached = [node for node in ast.walk(ast.parse(path.read_text(), filename=str(path)))
                   if isinstance(node, ast.Attribute) and node.attr in PROXIES
                   and (node.attr, _receiver_name(node.value)) not in NOT_A_CONNECTION]
        for node in sorted(reached, key=lambda n: (n.lineno, n.col_offset)):
            found.append(f"{path.relative_to(root.parents[1])}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_only_the_cloud_package_reaches_openstacksdk_proxies():
    found = proxy_accesses(SOURCE)
    assert not found, ("openstacksdk proxies used outside src/stackvault/cloud/ (add a typed function to "
                       "stackvault.cloud and call that):\n" + "\n".join(found))


def test_the_check_names_file_and_line_of_a_proxy_call(tmp_path):
    """The check is no test that cannot fail: a job that calls a proxy is named, one inside cloud/ is not."""
    pkg = tmp_path / "src" / "stackvault"
    (pkg / "jobs").mkdir(parents=True)
    (pkg / "cloud").mkdir()
    (pkg / "jobs" / "restore.py").write_text("def f(conn, args):\n    x = args.network\n"
                                             "    return conn.block_storage.get_volume(x)\n")
    (pkg / "cloud" / "volumes.py").write_text("def g(conn):\n    return conn.block_storage.volumes()\n")
    assert proxy_accesses(pkg) == ["src/stackvault/jobs/restore.py:3: conn.block_storage"]
