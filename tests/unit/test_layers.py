"""The outer ring (jobs, CLI, service, observability, API) never reaches under the repository.

The repository owns its layout: which keys its objects have, how they are listed, what a store can do.
A job that calls the storage backend itself builds keys the format document does not know about and
skips what the repository checks. So every `.backend` or `.store` (the repository's storage under
either name) in those packages is a finding, named by file and line; a job context opens the storage
for the repository under a private name.
"""

import ast
from pathlib import Path

import stackvault

PACKAGE = Path(stackvault.__file__).parent
OUTER = ("jobs", "cli", "service", "observe", "api")
FORBIDDEN = ("backend", "store")


def reaches_backend(tree: ast.AST) -> list[int]:
    """Lines of `x.backend` or `x.store`, and of `getattr`/`hasattr`/`setattr` naming either."""
    lines = []
    for node in ast.walk(tree):
        attribute = isinstance(node, ast.Attribute) and node.attr in FORBIDDEN
        by_name = (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                   and node.func.id in ("getattr", "hasattr", "setattr") and len(node.args) >= 2
                   and isinstance(node.args[1], ast.Constant) and node.args[1].value in FORBIDDEN)
        if attribute or by_name:
            lines.append(node.lineno)
    return sorted(lines)


def test_the_outer_packages_never_reach_the_storage_backend():
    findings = []
    for package in OUTER:
        files = sorted((PACKAGE / package).rglob("*.py"))
        assert files, f"no modules found under {PACKAGE / package}"
        for path in files:
            for line in reaches_backend(ast.parse(path.read_text(), str(path))):
                findings.append(f"{path.relative_to(PACKAGE.parent)}:{line}")
    assert not findings, ("the repository owns its storage: call a Repository (or JobContext) method instead of "
                          "`.backend` / `.store` at\n  " + "\n  ".join(findings))


def test_the_check_finds_what_it_looks_for():
    source = ("repo.backend.put(k, v)\nx = getattr(repo, 'backend', None)\nrepo.put_chunk(d, b)\n"
              "keys.read_slots(repo.store, repo.id)\nctx._store.location\n")
    assert reaches_backend(ast.parse(source)) == [1, 2, 4]
