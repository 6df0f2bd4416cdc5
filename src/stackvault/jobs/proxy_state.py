"""The proxy's own disaster recovery: its working state and configuration, kept in the repository.

The working state is only a cache (every `.sha`/`.bmp` can be rebuilt from the repository), but a
saved copy makes a new proxy's first Incremental as fast as the old one's, and the saved
configuration means a new proxy needs nothing but the repository's location and the credentials.
`state backup` writes `proxy-state/<id>.tar.zst` (a checksummed, compressed tar of the working
directory, the config file and the policies written through the API, which live in the catalog and
nowhere else); `state restore` brings back the first two, `recover` all three.

In an encrypted repository the object is sealed like every other (engine/crypto.py): the config is
saved whole, secrets included, and what is read back is authenticated. A plain repository's store
can read and write everything, so there the saved config keeps no secret (passwords in URLs such as
the catalog's are taken out, and a config holding a secret that cannot be taken out is not saved),
and saved state is taken back only when the operator accepts it (`--yes` or y/N on a terminal)
after being shown what it points to: a planted config must not send the new proxy's catalog, or
its repository, somewhere else.
"""

from __future__ import annotations

import io
import json
import os
import re
import secrets
import tarfile
import tomllib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO
from urllib.parse import parse_qsl, urlsplit

import blake3
import zstandard

from ..config import PROXY_POLICY_KEYS, parse_policy
from ..engine.atomic import TEMP_PREFIX, fsync_dir, write_atomic
from ..errors import NotFoundError, RepositoryError, UsageError
from ..storage.base import ObjectTooLargeError
from .context import JobContext
from .maintenance import rebuild_catalog, rebuild_state

MAGIC = b"SVSTATE1"
SECRET_KEY = re.compile(r"(pass(word|phrase)?|secret|token|credential|private|api_?key)", re.IGNORECASE)


#: Settings whose values hold secrets under a name that does not say so: notification URLs carry their
#: tokens in the path (`json://host/hooks/TOKEN`, `tgram://BOT_TOKEN/CHAT`).
SECRET_SETTINGS = {("notify", "urls")}

#: `scheme://user:PASSWORD@`: the password of a URL setting, as in the documented catalog URL
#: postgresql+psycopg://user:PASSWORD@host/db (libpq then finds it in ~/.pgpass or PGPASSFILE).
URL_PASSWORD = re.compile(r"(?P<head>\b[a-z][a-z0-9+.-]*://[^\s:/@\"']*):[^\s/@\"']*@", re.IGNORECASE)

#: A saved state file's name: one disk's `.sha` or `.bmp`, nothing that could name another path.
STATE_FILE = re.compile(r"state/(?P<name>[A-Za-z0-9._-]+\.(?:sha|bmp))")

CONFIG_MEMBER = "config/stackvault.toml"

#: The catalog's policies of the repository (those written through the API), as {name: keys} JSON.
POLICIES_MEMBER = "catalog/policies.json"

#: What the proxy does with a question (y/N): None when nobody can answer (no terminal, no --yes).
Confirm = Callable[[str], bool] | None


def without_password(text: str) -> str:
    """`text` with the password of every `scheme://user:password@` in it taken out."""
    return URL_PASSWORD.sub(r"\g<head>@", text)


def _strip_secrets(text: str) -> tuple[str | None, list[str]]:
    """The config with no secret left in it, for a repository that is not encrypted, and what was left out.

    Lines with a secret-looking key are commented out and URL passwords are taken out; the result is
    then parsed and searched again, and a config that still holds a secret (a password as a URL query
    parameter, an odd quoting) is not saved at all (None): a plain repository's store must never see one.
    """
    kept, dropped = [], []
    section, open_array = "", False
    for line in text.splitlines():
        if open_array:  # the rest of a left-out multi-line value: dropped, not commented (it is the secret)
            open_array = "]" not in line
            continue
        bare = line.strip()
        if bare.startswith("[") and "=" not in bare:
            section = bare.strip("[] ")
        key = line.split("=", 1)[0].strip() if "=" in line and not line.lstrip().startswith("#") else ""
        if key and (SECRET_KEY.search(key) or (section, key) in SECRET_SETTINGS):
            name = f"{section}.{key}" if (section, key) in SECRET_SETTINGS else key
            dropped.append(name)
            kept.append(f"# {key} = <left out: the repository is not encrypted; set it again>")
            value = line.split("=", 1)[1]
            open_array = value.count("[") > value.count("]")
        else:
            kept.append(line)
    stripped = without_password("\n".join(kept) + "\n")
    try:
        before, after = tomllib.loads(text), tomllib.loads(stripped)
    except tomllib.TOMLDecodeError:
        return None, ["the config (it is not valid TOML)"]
    dropped += [f"the password in {name}" for name in _changed(before, after, "") if name not in dropped]
    if _secrets_in(after, ""):
        return None, [f"the config (it holds a secret in {', '.join(_secrets_in(after, ''))} that cannot be taken "
                      "out; keep secrets in ~/.pgpass, clouds.yaml or the environment)"]
    return stripped, dropped


def _changed(before: object, after: object, where: str) -> list[str]:
    """The names of the settings whose values differ between two parsed configs."""
    if isinstance(before, dict) and isinstance(after, dict):
        return [n for k in before for n in _changed(before[k], after.get(k), f"{where}.{k}".lstrip("."))]
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        return [n for i, (b, a) in enumerate(zip(before, after, strict=True)) for n in _changed(b, a, f"{where}[{i}]")]
    return [] if before == after else [where]


def _secrets_in(value: object, where: str) -> list[str]:
    """Settings in a parsed config that still hold a secret: a secret-looking key, a URL with a password
    or a secret-looking query parameter."""
    if isinstance(value, dict):
        return [n for k, v in value.items()
                for n in ([f"{where}.{k}".lstrip(".")] if SECRET_KEY.search(str(k)) else
                          _secrets_in(v, f"{where}.{k}".lstrip(".")))]
    if isinstance(value, list):
        return [n for i, v in enumerate(value) for n in _secrets_in(v, f"{where}[{i}]")]
    if isinstance(value, str) and "://" in value:
        try:
            url = urlsplit(value)
            if url.password or any(SECRET_KEY.search(k) for k, _ in parse_qsl(url.query)):
                return [where]
        except ValueError:
            return [where]  # not a URL urllib can read: it cannot be shown to hold no password
    return []


def backup_state(ctx: JobContext) -> dict:
    repo = ctx.repo
    state_dir = ctx.state.dir
    buf = io.BytesIO()
    files = 0
    warnings: list[str] = []
    config_saved = False
    with tarfile.open(fileobj=buf, mode="w") as tar:
        if state_dir.is_dir():
            for path in sorted(state_dir.iterdir()):
                if path.suffix in (".sha", ".bmp"):
                    tar.add(path, arcname=f"state/{path.name}")
                    files += 1
        config = ctx.settings.config_path
        if config is not None and config.is_file():
            text: str | None = config.read_text()
            dropped: list[str] = []
            if not repo.encrypted:  # an encrypted repository seals the saved state: secrets stay in it
                text, dropped = _strip_secrets(text)  # type: ignore[arg-type]  # a str: read just above
            if dropped:
                warnings.append(f"left out of the saved config (the repository is not encrypted): {', '.join(dropped)}")
            if text is not None:
                data = text.encode()
                info = tarfile.TarInfo(CONFIG_MEMBER)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
                config_saved = True
        policies = _stored_policies(ctx)
        if policies:
            data = json.dumps(policies, sort_keys=True).encode()
            info = tarfile.TarInfo(POLICIES_MEMBER)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    body = zstandard.ZstdCompressor(level=3).compress(buf.getvalue())
    blob = MAGIC + blake3.blake3(body).digest() + body
    state_id = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
    with ctx.lock("shared", "state backup"):
        repo.proxy_states.save(state_id, blob)
    return {"state_id": state_id, "files": files, "config_saved": config_saved, "policies": len(policies),
            "bytes": len(blob), "warnings": warnings, "level": "full"}


def _stored_policies(ctx: JobContext) -> dict[str, dict]:
    """The catalog's policies of this repository. A catalog that cannot be read fails the state backup:
    saved without them, the newest state would be the one `recover` takes, and they would be lost."""
    from ..catalog.policies import StoredPolicies

    return StoredPolicies(ctx.catalog, ctx.repo.id).all()


#: Bounds on what a saved state may make a proxy read: the whole tar (the working state of many
#: large disks fits), and the config (a page of settings), so a crafted object cannot exhaust memory.
MAX_STATE_BYTES = 1 << 36
MAX_CONFIG_BYTES = 1 << 20
MAX_POLICIES_BYTES = 1 << 28  # thousands of policies of a few KiB each (the API takes 256 KiB bodies)
MAX_SAVED_BYTES = MAX_STATE_BYTES + (MAX_STATE_BYTES >> 7) + (1 << 20)
_COPY = 1 << 20


def _load(ctx: JobContext, state_id: str | None) -> tuple[str, bytes]:
    """The chosen saved state's id and its checked, still compressed tar."""
    ids = ctx.repo.proxy_states.ids()
    if not ids:
        raise NotFoundError(f"no saved proxy state in {ctx.repo.location}", "save one with `stackvault state backup`")
    chosen = ids[-1] if state_id in (None, "latest") else state_id
    if chosen not in ids:
        raise NotFoundError(f"no saved proxy state {chosen!r}", f"choose one of: {', '.join(ids)}")
    try:  # at most what zstd makes of MAX_STATE_BYTES: all `state backup` writes that restore reads
        blob = ctx.repo.proxy_states.read(chosen, MAX_SAVED_BYTES)
    except ObjectTooLargeError as exc:
        raise RepositoryError(f"saved proxy state {chosen} is damaged ({exc.problem})",
                              "restore an older one, or run `stackvault recover`, which needs none") from None
    if blob[:8] != MAGIC or blake3.blake3(blob[40:]).digest() != blob[8:40]:
        raise RepositoryError(f"saved proxy state {chosen} is damaged (checksum mismatch)",
                              "restore an older one, or run `stackvault recover`, which needs none")
    return chosen, blob


def _members(state_id: str, blob: bytes) -> Iterator[tuple[str, IO[bytes]]]:
    """The files of a saved state's tar as streams, decompressed as they are read (never the whole tar
    in memory, never more than MAX_STATE_BYTES)."""
    reader = zstandard.ZstdDecompressor().stream_reader(memoryview(blob)[40:], read_across_frames=True)
    try:
        with tarfile.open(fileobj=_Bounded(reader, state_id), mode="r|") as tar:
            for member in tar:
                if member.isfile():
                    yield member.name, tar.extractfile(member)  # type: ignore[misc]  # a file's is never None
    except (tarfile.TarError, zstandard.ZstdError, EOFError) as exc:
        raise RepositoryError(f"saved proxy state {state_id} is damaged: {exc}",
                              "restore an older one, or run `stackvault recover`, which needs none") from None


class _Bounded(io.RawIOBase):
    """A read-only stream that refuses to deliver more than MAX_STATE_BYTES."""

    def __init__(self, raw: IO[bytes], state_id: str) -> None:
        self._raw, self._state_id, self._left = raw, state_id, MAX_STATE_BYTES

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:  # a writable buffer
        data = self._raw.read(min(len(buf), self._left + 1))
        if len(data) > self._left:
            raise RepositoryError(f"saved proxy state {self._state_id} is larger than {MAX_STATE_BYTES >> 30} GiB",
                                  "it was not written by stackvault: restore another one, or run `stackvault "
                                  "recover`, which needs none")
        self._left -= len(data)
        buf[:len(data)] = data
        return len(data)


def restore_state(ctx: JobContext, state_id: str | None = None, config_out: Path | None = None,
                  force: bool = False, confirm: Confirm = None) -> dict:
    """Write a saved state's files into the working state and its config to `config_out`. Its
    policies are left in the saved state: the catalog's are newer (a policy deleted through the API
    since stays deleted); `recover`, whose catalog starts empty, puts them back."""
    return _restore_state(ctx, state_id, config_out, force, include_state=True, confirm=confirm)[0]


def _restore_state(ctx: JobContext, state_id: str | None, config_out: Path | None, force: bool, *,
                   include_state: bool, confirm: Confirm,
                   policies_problems: list[str] | None = None) -> tuple[dict, dict[str, dict]]:
    """Write a saved state's files and config as `restore_state` does. With `policies_problems` (a
    list for what is wrong with them), its policies are read too and returned, for the caller to write
    once the catalog is ready; they are shown with the rest when the operator is asked.

    Nothing is written before everything was checked: the config file to write does not exist (or
    `force`), the saved config loads, and the state is authenticated (an encrypted repository) or
    accepted through `confirm` after the operator saw what it points to. The tar is read twice,
    streamed: once for the config and the names, then, once accepted, to write the state files.
    """
    _check_config_out(config_out, force)
    chosen, blob = _load(ctx, state_id)
    names, config, policies = [], None, {}
    for name, stream in _members(chosen, blob):
        if include_state and STATE_FILE.fullmatch(name):
            names.append(name)
        elif name == POLICIES_MEMBER and policies_problems is not None:
            try:
                policies = _saved_policies(chosen, stream.read(MAX_POLICIES_BYTES + 1))
            except RepositoryError as exc:  # the config and working state are still worth having
                policies_problems.append(str(exc))
        elif name == CONFIG_MEMBER and config_out is not None:
            config = stream.read(MAX_CONFIG_BYTES + 1)
            if len(config) > MAX_CONFIG_BYTES:
                raise RepositoryError(f"the config in saved proxy state {chosen} is larger than 1 MiB",
                                      "it was not written by stackvault: write the config by hand")
    settings = _saved_settings(chosen, config)
    if names or config is not None or policies:
        _accept(ctx, chosen, settings, confirm, policies)
    state_dir = ctx.state.dir
    if names:
        os.makedirs(state_dir, exist_ok=True)
        for name, stream in _members(chosen, blob):
            if name in names:
                _write_stream(state_dir / STATE_FILE.fullmatch(name)["name"], stream)  # type: ignore[index]  # names match
    config_written = None
    if config is not None and config_out is not None:
        config_out.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(config_out, config)
        config_written = str(config_out)
    return {"state_id": chosen, "state_files": len(names), "config": config_written}, policies


def _saved_policies(state_id: str, data: bytes) -> dict[str, dict]:
    """The saved policies, checked for shape only: what they say is checked by the config's parser
    whenever they are read from the catalog, as for a policy written through the API."""
    try:
        if len(data) > MAX_POLICIES_BYTES:
            raise ValueError(f"larger than {MAX_POLICIES_BYTES >> 20} MiB")
        found = json.loads(data)
        if not (isinstance(found, dict) and all(isinstance(k, str) and isinstance(v, dict) for k, v in found.items())):
            raise ValueError("not an object of policies")
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise RepositoryError(f"the policies in saved proxy state {state_id} are damaged ({exc}) and were "
                              "not put back", "write them again through the API") from None
    return found


def _put_back_policies(ctx: JobContext, policies: dict[str, dict], problems: list[str]) -> list[str]:
    """Write saved policies the catalog lacks; the names written. One that the API would not take (a
    name that is no URL segment, keys the config's parser refuses) is left out and said in `problems`."""
    from ..catalog.policies import POLICY_NAME, StoredPolicies

    stored, written = StoredPolicies(ctx.catalog, ctx.repo.id), []
    for name, keys in sorted(policies.items()):
        try:
            if not POLICY_NAME.fullmatch(name) or name in ctx.settings.policies:
                raise UsageError(f"policy {name!r} is no name the API writes, or is the config's", None)
            if proxy_keys := [key for key in PROXY_POLICY_KEYS if key in keys]:
                raise UsageError(f"policy {name!r} sets {', '.join(proxy_keys)}, which the API never writes", None)
            parse_policy(name, keys, "the saved proxy state")
        except UsageError as exc:
            problems.append(f"a saved policy was not put back: {exc}")
            continue
        if stored.add(name, keys):
            written.append(name)
    return written


def _write_stream(path: Path, stream: IO[bytes]) -> None:
    """A state file written from a stream, atomically (as write_atomic writes bytes), 1 MiB at a time."""
    tmp = path.with_name(f"{TEMP_PREFIX}{secrets.token_hex(6)}-{path.name}")
    try:
        with open(tmp, "xb") as out:
            while block := stream.read(_COPY):
                out.write(block)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def _check_config_out(config_out: Path | None, force: bool) -> None:
    if config_out is None:
        return
    if config_out.is_dir():
        raise UsageError(f"--config-out {config_out} is a directory", "give the path of the config file to write")
    if config_out.exists() and not force:
        raise UsageError(f"config file {config_out} exists", "choose another --config-out or pass --force")


def _saved_settings(state_id: str, config: bytes | None) -> dict:
    """The saved config, parsed: a config that would not load is never written."""
    if config is None:
        return {}
    try:
        return tomllib.loads(config.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise RepositoryError(f"the config in saved proxy state {state_id} is damaged: {exc}",
                              "restore an older one with `stackvault state restore ID`, or write the config by hand") \
            from None


def _accept(ctx: JobContext, state_id: str, settings: dict, confirm: Confirm,
            policies: dict[str, dict] | None = None) -> None:
    """Take saved state only when it is authenticated and points to this repository, or the operator says so.

    An encrypted repository authenticates what it holds; a plain one's store could have written the
    saved state, and a config whose `repo` is another repository would quietly move the new proxy
    elsewhere: both are shown (id, location, what the config points to, the policies it would put in
    the catalog and the projects they back up) and need a yes.
    """
    repo = ctx.repo
    doubts = []
    if not repo.encrypted:
        doubts.append("the repository is not encrypted, so nothing proves this proxy saved it")
    saved_repo = settings.get("repo")
    if isinstance(saved_repo, str) and _normal(saved_repo) != _normal(repo.location):
        doubts.append(f"its config points to another repository, {saved_repo}")
    if not doubts:
        return
    points_to = ", ".join(f"{key} = {without_password(str(settings[key])) if key in settings else '(not set)'}"
                          for key in ("repo", "catalog", "workdir")) if settings else "no config"
    if policies:
        points_to += "; policies " + ", ".join(f"{name} (project {keys.get('project', '(none)')})"
                                               for name, keys in sorted(policies.items()))
    what = (f"saved proxy state {state_id} of repository {repo.id} at {repo.location} ({points_to}): "
            + "; ".join(doubts))
    if confirm is None:
        raise UsageError(what, "check it, then pass --yes to take it, or write the config by hand")
    if not confirm(f"{what}. Take it?"):
        raise UsageError(f"saved proxy state {state_id} not taken", "nothing was written")


def _normal(location: str) -> str:
    """A repository location as compared: local paths absolute, URLs without a trailing slash."""
    return location.rstrip("/") if "://" in location else os.path.realpath(os.path.expanduser(location))


def recover(ctx: JobContext, config_out: Path | None = None, force: bool = False, confirm: Confirm = None) -> dict:
    """A new proxy from the repository alone: config (if saved), catalog, then working state.

    The working state is rebuilt from the newest manifests rather than taken from the newest saved
    copy, which may be older than the newest backups: the repository is the truth.
    """
    result: dict = {"config": None, "state_id": None, "policies": []}
    policies: dict[str, dict] = {}
    problems: list[str] = []
    try:
        saved, policies = _restore_state(ctx, None, config_out, force, include_state=False, confirm=confirm,
                                         policies_problems=problems)
        result.update(config=saved["config"], state_id=saved["state_id"])
    except NotFoundError:
        result["warning"] = "no saved proxy state in the repository: the configuration was not recovered"
    kept = ctx.set_damaged_catalog_aside()
    result["catalog"] = {**rebuild_catalog(ctx), **({"damaged_kept_as": kept} if kept else {})}
    result["policies"] = _put_back_policies(ctx, policies, problems)
    if problems:
        result["warnings"] = problems
    result["state"] = rebuild_state(ctx)
    return result
