"""The proxy's own disaster recovery: its working state and configuration, kept in the repository.

The working state is only a cache (every `.sha`/`.bmp` can be rebuilt from the repository), but a
saved copy makes a new proxy's first Incremental as fast as the old one's, and the saved
configuration means a new proxy needs nothing but the repository's location and the credentials.
`state backup` writes `proxy-state/<id>.tar.zst` (a checksummed, compressed tar of the working
directory and the config file); `state restore` and `recover` bring them back. In an encrypted
repository the object is sealed like every other (engine/crypto.py), so the config is saved whole,
secrets included; otherwise lines with secret-looking keys are left out.
"""

from __future__ import annotations

import io
import os
import re
import tarfile
import tomllib
from datetime import datetime, timezone
from pathlib import Path

import blake3
import zstandard

from ..engine.atomic import write_atomic
from ..errors import NotFoundError, RepositoryError, UsageError
from .context import JobContext
from .maintenance import rebuild_catalog, rebuild_state

MAGIC = b"SVSTATE1"
PREFIX = "proxy-state/"
SECRET_KEY = re.compile(r"(pass(word|phrase)?|secret|token|credential|private|api_?key)", re.IGNORECASE)


def _strip_secrets(text: str) -> tuple[str, list[str]]:
    """The config without lines whose key looks secret (the repository is not encrypted)."""
    kept, dropped = [], []
    for line in text.splitlines():
        key = line.split("=", 1)[0].strip() if "=" in line and not line.lstrip().startswith("#") else ""
        if key and SECRET_KEY.search(key):
            dropped.append(key)
            kept.append(f"# {key} = <left out: the repository is not encrypted; set it again>")
        else:
            kept.append(line)
    return "\n".join(kept) + "\n", dropped


def backup_state(ctx: JobContext) -> dict:
    repo = ctx.repo
    state_dir = ctx.state.dir
    buf = io.BytesIO()
    files = 0
    warnings: list[str] = []
    with tarfile.open(fileobj=buf, mode="w") as tar:
        if state_dir.is_dir():
            for path in sorted(state_dir.iterdir()):
                if path.suffix in (".sha", ".bmp"):
                    tar.add(path, arcname=f"state/{path.name}")
                    files += 1
        config = ctx.settings.config_path
        if config is not None and config.is_file():
            text, dropped = config.read_text(), []
            if not repo.encrypted:  # an encrypted repository seals the saved state: secrets stay in it
                text, dropped = _strip_secrets(text)
            if dropped:
                warnings.append(f"left out of the saved config (the repository is not encrypted): {', '.join(dropped)}")
            data = text.encode()
            info = tarfile.TarInfo("config/stackvault.toml")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    body = zstandard.ZstdCompressor(level=3).compress(buf.getvalue())
    blob = MAGIC + blake3.blake3(body).digest() + body
    state_id = f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}"
    with ctx.lock("shared", "state backup"):
        repo.backend.put(f"{PREFIX}{state_id}.tar.zst", blob)
        repo.backend.sync()
    return {"state_id": state_id, "files": files, "config_saved": ctx.settings.config_path is not None,
            "bytes": len(blob), "warnings": warnings, "level": "full"}


def _load(ctx: JobContext, state_id: str | None) -> tuple[str, tarfile.TarFile]:
    ids = sorted(o.key[len(PREFIX):-len(".tar.zst")] for o in ctx.repo.backend.list(PREFIX) if o.key.endswith(".tar.zst"))
    if not ids:
        raise NotFoundError(f"no saved proxy state in {ctx.repo.location}", "save one with `stackvault state backup`")
    chosen = ids[-1] if state_id in (None, "latest") else state_id
    if chosen not in ids:
        raise NotFoundError(f"no saved proxy state {chosen!r}", f"choose one of: {', '.join(ids)}")
    blob = ctx.repo.backend.get(f"{PREFIX}{chosen}.tar.zst")
    if blob[:8] != MAGIC or blake3.blake3(blob[40:]).digest() != blob[8:40]:
        raise RepositoryError(f"saved proxy state {chosen} is damaged (checksum mismatch)",
                              "restore an older one, or run `stackvault recover`, which needs none")
    raw = zstandard.ZstdDecompressor().decompress(blob[40:], max_output_size=1 << 34)
    return chosen, tarfile.open(fileobj=io.BytesIO(raw), mode="r")


def restore_state(ctx: JobContext, state_id: str | None = None, config_out: Path | None = None,
                  force: bool = False, include_state: bool = True) -> dict:
    chosen, tar = _load(ctx, state_id)
    state_dir = ctx.state.dir
    os.makedirs(state_dir, exist_ok=True)
    restored = 0
    config_written = None
    with tar:
        for member in tar.getmembers():
            if not member.isfile():
                continue
            data = tar.extractfile(member).read()  # type: ignore[union-attr]
            if include_state and member.name.startswith("state/") and "/" not in member.name[6:]:
                write_atomic(state_dir / member.name[6:], data)
                restored += 1
            elif member.name == "config/stackvault.toml" and config_out is not None:
                if config_out.exists() and not force:
                    raise UsageError(f"config file {config_out} exists", "choose another --config-out or pass --force")
                tomllib.loads(data.decode())  # never write a config that would not load
                config_out.parent.mkdir(parents=True, exist_ok=True)
                write_atomic(config_out, data)
                config_written = str(config_out)
    return {"state_id": chosen, "state_files": restored, "config": config_written}


def recover(ctx: JobContext, config_out: Path | None = None, force: bool = False) -> dict:
    """A new proxy from the repository alone: config (if saved), catalog, then working state.

    The working state is rebuilt from the newest manifests rather than taken from the newest saved
    copy, which may be older than the newest backups: the repository is the truth.
    """
    result: dict = {"config": None, "state_id": None}
    try:
        saved = restore_state(ctx, None, config_out, force, include_state=False)
        result.update(config=saved["config"], state_id=saved["state_id"])
    except NotFoundError:
        result["warning"] = "no saved proxy state in the repository: the configuration was not recovered"
    result["catalog"] = rebuild_catalog(ctx)
    result["state"] = rebuild_state(ctx)
    return result
