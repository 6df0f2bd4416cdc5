"""Typed settings: embedded defaults < TOML file < STACKVAULT_* environment < command line.

Unknown keys are errors, not silently ignored: a misspelt `keep_lats = 7` must not quietly keep every
backup forever.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .domain import Consistency
from .durations import duration_seconds
from .errors import UsageError

CONSISTENCY_LEVELS = tuple(c.value for c in Consistency)  # strongest first, as cloud/consistency.py ranks them
_SIZE = re.compile(r"^\s*(\d+)\s*([KMGT]?)(i?B?)\s*$", re.IGNORECASE)


def parse_shard(text: str, origin: str) -> tuple[int, int]:
    """`"2/4"` -> (2, 4): this proxy's share K of N; `origin` names the key or flag in the error."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
        raise UsageError(f"{origin} is {text!r}, not K/N with 1 <= K <= N",
                         'write e.g. "2/4" for the second of four proxies, each given its own K of the same N')
    return int(m.group(1)), int(m.group(2))


def parse_size(text: str | int) -> int:
    """`1MiB`, `64K`, `4M`, `1048576` -> bytes (binary units: backups speak in blocks)."""
    if isinstance(text, int):
        return text
    m = _SIZE.match(str(text))
    if not m:
        raise UsageError(f"cannot read size {text!r}", "write it like 1MiB, 64KiB or 4M")
    return int(m.group(1)) << (10 * " KMGT".index(m.group(2).upper() or " "))


#: zstd levels a repository may be created with: 0 (no compression: chunks are stored as they are,
#: see engine/chunks.py), 1 (fastest, the default) to 22 (smallest output). Repositories made with 0
#: exist, so 0 stays; zstd's negative "fast" levels are not worth a setting here.
COMPRESSION_LEVELS = range(0, 23)

#: A config file is a page of settings; anything larger (a device, a log file given by mistake) is refused
#: rather than read whole.
MAX_CONFIG_BYTES = 1 << 20


def listen_address(text: str, origin: str) -> tuple[str, int]:
    """HOST:PORT (an IPv6 host in brackets; port 0: any free one) -> (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise UsageError(f"{origin} is {text!r}, not HOST:PORT", 'write e.g. "127.0.0.1:8779"')
    return host.strip("[]"), int(port)


#: The longest `full_every_days` a policy takes (a century).
MAX_FULL_EVERY_DAYS = 36_500

def whole_number(value: object, origin: str, minimum: int = 0) -> int:
    """A whole number >= `minimum` from TOML, the environment or the command line; `origin` names it.

    A negative count must never pass as "keep nothing" or "no limit": `--keep-daily -1` once removed
    every backup.
    """
    number = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
        number = int(value)
    if number is None or number < minimum:
        raise UsageError(f"bad value {value!r} for {origin}: not a whole number >= {minimum}",
                         f"give a whole number from {minimum} up")
    return number


def seconds(value: object, origin: str, positive: bool = False) -> float:
    """A finite number of seconds, >= 0 (> 0 with `positive`), or a duration (`30m`, `1h`, `7d`);
    NaN and infinity are refused too."""
    number = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            number = duration_seconds(value)
    if number is None or not math.isfinite(number) or number < 0 or (positive and number == 0):
        bound = "> 0" if positive else ">= 0"
        raise UsageError(f"bad value {value!r} for {origin}: not a duration {bound}",
                         f"give seconds or a duration such as 30s, 10m, 1h, 7d ({bound})")
    return number


def sample_share(value: object, origin: str) -> float:
    """A share from 0 to 1 (0.005 is half a percent)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and 0 <= value <= 1:
        return float(value)
    raise UsageError(f"bad value {value!r} for {origin}: not a share from 0 to 1", "write e.g. 0.005 for 0.5 %")


#: The pool of a Cinder RBD backend named without one: the name most deployments give it.
DEFAULT_RBD_POOL = "volumes"


def volume_backends(value: object, origin: str) -> dict[str, str]:
    """`[ceph] volume_backends`: a table of Cinder backend name = pool, or a list of backend names
    (each in pool `volumes`); `NAME[=POOL]` strings on the command line."""
    if isinstance(value, list) and all(isinstance(v, str) and v for v in value):
        pairs = [v.partition("=")[::2] for v in value]
        value = {name: pool or DEFAULT_RBD_POOL for name, pool in pairs}
    if not isinstance(value, dict) or not all(isinstance(k, str) and k and isinstance(v, str) and v
                                              for k, v in value.items()):
        raise UsageError(f"{origin} must name Cinder backends and their pools",
                         'write e.g. volume_backends = { ceph = "volumes" }, or a list of backend names')
    return dict(value)


def compression_level(value: object, origin: str) -> int:
    """A zstd level from COMPRESSION_LEVELS: a level zstd refuses would fail every later backup."""
    level = whole_number(value, origin, minimum=-(1 << 31))
    if level not in COMPRESSION_LEVELS:
        raise UsageError(f"bad value {level} for {origin}: not a compression level from {COMPRESSION_LEVELS.start} "
                         f"to {COMPRESSION_LEVELS.stop - 1}",
                         "use 0 for no compression, 1 for speed (the default), up to 19 for smaller backups")
    return level


def default_workdir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "stackvault"


@dataclass
class Retention:
    keep_last: int = 0  # the newest N backups of each disk
    keep_hourly: int = 0  # the newest backup of each of the last N hours that have one
    keep_daily: int = 0  # the newest backup of each of the last N days that have one
    keep_weekly: int = 0  # the newest backup of each of the last N weeks that have one
    keep_monthly: int = 0  # the newest backup of each of the last N months that have one
    keep_yearly: int = 0  # the newest backup of each of the last N years that have one
    #: Seconds: every backup made within this long of the newest one is kept (restic's --keep-within).
    keep_within: float = 0.0

    def any(self) -> bool:
        return any((self.keep_last, self.keep_hourly, self.keep_daily, self.keep_weekly, self.keep_monthly,
                    self.keep_yearly, self.keep_within))


@dataclass
class CloudSettings:
    """How stackvault reaches OpenStack and moves data (the [cloud] section)."""

    os_cloud: str | None = None  # a clouds.yaml entry; OS_* variables when unset
    proxy_server: str | None = None  # this proxy's server (name or id), for attaching volumes
    device_root: str = "/dev/disk/by-id"  # where attached volumes appear as virtio-<id prefix>
    volume_transfer: str = "attach"  # attach (read the device) | image (upload to Glance, download)
    timeout: float = 1800.0  # per wait: snapshot, volume, attachment
    parallel: int = 2  # servers backed up at once
    retries: int = 5  # per broken download
    require_consistency: str = "crash"  # servers whose next backup would be below this are refused
    verify_quiesce: bool = True  # read the freeze hook's marker from each backed-up root disk
    #: Lock each server (Nova's lock) while it is backed up, so that its users cannot delete, rebuild
    #: or resize it under the snapshot; unlocked on every path. A server already locked stays locked.
    lock_servers: bool = False
    # This proxy's share when several split the work (docs/several-proxies.md); [[jobs]] may override.
    availability_zones: list[str] = field(default_factory=list)  # only servers and volumes in these AZs
    shard: str | None = None  # "K/N": only the K-th of N shares of the servers and volumes, by id


@dataclass
class CephSettings:
    """How stackvault reaches a Ceph cluster to read `rbd:` sources (the [ceph] section)."""

    conf: str | None = None  # ceph.conf path; librados looks in its usual places when unset
    client: str = "client.admin"  # a read-only user is enough: `profile rbd-read-only pool=...`
    keyring: str | None = None  # when ceph.conf does not name the user's keyring
    #: Share of the blocks holding data that the changed-block list calls unchanged which are read
    #: anyway and compared with the previous backup (at least 8, and 8 never-written ones); 0 trusts
    #: the list without checking.
    verify_sample: float = 0.005
    #: False: every rbd backup reads the whole image (what is allocated), as if no list existed; for an
    #: operator who wants the changed-block list ruled out, and to measure what the list saves.
    changed_blocks: bool = True
    #: Cinder backends (`volume_backend_name`) whose volumes are RBD images, and each one's pool:
    #: `backup --volume` reads such volumes straight from Ceph. Empty: every volume is read as
    #: before (a temporary volume, attached or uploaded). A list of names means pool `volumes`.
    volume_backends: dict[str, str] = field(default_factory=dict)


#: What `[notify] on` may list (observe.notify.Event): a failed job, a job with warnings, the daily summary.
NOTIFY_EVENTS = ("failure", "warning", "summary")


@dataclass
class NotifySettings:
    """Where and when to send notifications (the [notify] section, docs/monitoring.md)."""

    #: apprise URLs (mailto://, json://, slack://, ...). They hold tokens: never printed or stored.
    urls: list[str] = field(default_factory=list)
    #: Which events are sent: failure, warning, summary.
    on: list[str] = field(default_factory=lambda: list(NOTIFY_EVENTS))
    #: Seconds all targets together may take; a target still sending then is given up with a warning.
    timeout: float = 15.0


@dataclass
class ApiSettings:
    """How `stackvault api` serves the self-service API behind Keystone (the [api] section, docs/api.md)."""

    listen: str = "127.0.0.1:8779"  # HOST:PORT the API binds; put a TLS-terminating proxy in front
    #: The clouds.yaml entry of the service user that validates callers' tokens (keystonemiddleware);
    #: its password stays in clouds.yaml, never in this file or a log.
    service_cloud: str | None = None
    auth_url: str | None = None  # Keystone's v3 URL told to callers without a token; None: the service_cloud's
    policy_file: str | None = None  # an oslo.policy YAML file overriding the default rules; None: the defaults


@dataclass(kw_only=True)
class CloudSelection:
    """Which servers and volumes of which cloud and project: the part a `[[jobs]]` entry and a
    `[policy.NAME]` share (keyword-only, so each keeps its own positional `name`)."""

    os_cloud: str | None = None  # a clouds.yaml entry; [cloud] os_cloud when unset
    project: str | None = None  # another project's servers (needs an admin user)
    servers: list[str] = field(default_factory=list)  # ids, names or globs
    volumes: list[str] = field(default_factory=list)  # volume ids, names or globs
    all: bool = False  # every server of the project
    server_tags: list[str] = field(default_factory=list)  # servers carrying all these tags
    server_metadata: dict[str, str] = field(default_factory=dict)  # servers with these metadata values
    exclude: list[str] = field(default_factory=list)  # ids, names or globs left out


@dataclass
class CloudJob(CloudSelection):
    """One `[[jobs]]` entry: what to back up, in which cloud and project. A config may hold many, so one
    proxy serves several clouds and projects (`stackvault backup --job NAME`)."""

    name: str  # what `backup --job` names
    availability_zones: list[str] | None = None  # None: [cloud] availability_zones
    shard: str | None = None  # None: [cloud] shard


@dataclass
class Settings:
    repo: str | None = None  # the repository: a directory, s3://, swift:// or restic: URL (docs/cli.md)
    workdir: Path = field(default_factory=default_workdir)  # working state; $XDG_STATE_HOME/stackvault
    catalog: str | None = None  # SQLAlchemy URL, never with a password; None: sqlite in workdir
    block_size: int = 512 << 10  # a new repository's block size (`init` fixes it for the repository)
    compression_level: int = 1  # zstd level of a new repository: 0 (none) to 22
    workers: int = field(default_factory=lambda: max(2, os.cpu_count() or 2))  # threads moving blocks
    sync: str = "job"  # directory repositories: job (one syncfs per backup) | file (fsync every object)
    lock_wait: float = 0.0  # seconds backup, prune and gc wait for a conflicting lock (--wait)
    retention: Retention = field(default_factory=Retention)
    cloud: CloudSettings = field(default_factory=CloudSettings)
    ceph: CephSettings = field(default_factory=CephSettings)
    notify: NotifySettings = field(default_factory=NotifySettings)
    api: ApiSettings = field(default_factory=ApiSettings)
    jobs: list[CloudJob] = field(default_factory=list)
    #: `[policy.NAME]` tables, by name; the built-in proxy-state policy is always there (maybe disabled).
    policies: dict[str, Policy] = field(default_factory=lambda: {PROXY_STATE_POLICY: proxy_state_policy()})
    config_path: Path | None = None
    #: Refuse plain repositories (and so a plain `config` planted by the store): docs/encryption.md.
    require_encryption: bool = False

    @property
    def catalog_url(self) -> str:
        return self.catalog or f"sqlite:///{self.workdir / 'catalog.db'}"

    def share(self, job: CloudJob | None = None) -> tuple[list[str], tuple[int, int] | None]:
        """This proxy's availability zones and shard for `job`: the job's own, else those of [cloud]."""
        azs = job.availability_zones if job and job.availability_zones is not None else self.cloud.availability_zones
        shard = job.shard if job and job.shard is not None else self.cloud.shard
        return list(azs), parse_shard(shard, "shard") if shard else None

    def override_share(self, availability_zones: list[str], shard: str | None) -> None:
        """`--availability-zone` / `--shard`: this run's share, in place of the config's (jobs' too)."""
        if shard is not None:
            parse_shard(shard, "--shard")
            self.cloud.shard = shard
            for job in self.jobs:
                job.shard = None
        if availability_zones:
            self.cloud.availability_zones = list(availability_zones)
            for job in self.jobs:
                job.availability_zones = None

    def require_repo(self) -> str:
        if not self.repo:
            raise UsageError("no repository given", "pass --repo PATH, set STACKVAULT_REPO, or `repo` in the config")
        return self.repo


_TOP_KEYS = {"repo", "workdir", "catalog", "block_size", "compression_level", "workers", "sync", "lock_wait",
             "require_encryption"}
# Each key's type: a class, or the annotation's text (this module's annotations are strings).
_SECTIONS: dict[str, dict[str, type | str]] = {"retention": {f.name: int for f in fields(Retention)},
             "cloud": {f.name: f.type for f in fields(CloudSettings)},
             "ceph": {f.name: f.type for f in fields(CephSettings)},
             "notify": {f.name: f.type for f in fields(NotifySettings)},
             "api": {f.name: f.type for f in fields(ApiSettings)}}


def load_settings(config_file: str | None = None, **overrides: object) -> Settings:
    """Settings from the config file (if any), the environment, then explicit `overrides` (not None)."""
    settings = Settings()
    path = config_file or os.environ.get("STACKVAULT_CONFIG")
    if path:
        _apply_file(settings, Path(path))
    for key, env in (("repo", "STACKVAULT_REPO"), ("workdir", "STACKVAULT_WORKDIR"), ("catalog", "STACKVAULT_CATALOG")):
        if os.environ.get(env):
            _set(settings, key, os.environ[env], env)
    for key, value in overrides.items():
        if value is not None:
            _set(settings, key, value, f"--{key.replace('_', '-')}")
    return settings


def _apply_file(settings: Settings, path: Path) -> None:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
        if len(data) > MAX_CONFIG_BYTES:
            raise UsageError(f"config file {path} is larger than {MAX_CONFIG_BYTES >> 20} MiB",
                             "check --config / STACKVAULT_CONFIG: it must name a TOML settings file")
        doc = tomllib.loads(data.decode("utf-8"))
    except FileNotFoundError:
        raise UsageError(f"config file {path} does not exist", "check --config / STACKVAULT_CONFIG") from None
    except IsADirectoryError:
        raise UsageError(f"config file {path} is a directory", "check --config / STACKVAULT_CONFIG: "
                         "it must name a TOML settings file") from None
    except OSError as exc:
        raise UsageError(f"cannot read config file {path}: {exc.strerror}",
                         "check the file's permissions and --config / STACKVAULT_CONFIG") from None
    except UnicodeDecodeError as exc:
        raise UsageError(f"config file {path} is not UTF-8 text (byte {exc.start})",
                         "save it as UTF-8; TOML files are UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"config file {path} is not valid TOML: {exc}", "fix the line it names") from None
    settings.config_path = path
    for key, value in doc.items():
        if key in _SECTIONS and isinstance(value, dict):
            for sub, subvalue in value.items():
                if sub not in _SECTIONS[key]:
                    raise UsageError(f"unknown key {key}.{sub} in {path}",
                                     f"valid keys in [{key}]: {', '.join(sorted(_SECTIONS[key]))}")
                setattr(getattr(settings, key), sub, _section_value(key, sub, subvalue, path))
        elif key in _TOP_KEYS:
            _set(settings, key, value, f"{key} in {path}")
        elif key == "policy" and isinstance(value, dict):
            for name, entry in value.items():
                settings.policies[name] = parse_policy(name, entry, path)
        elif key == "jobs" and isinstance(value, list):
            settings.jobs = [_cloud_job(entry, n, path) for n, entry in enumerate(value, 1)]
            names = [j.name for j in settings.jobs]
            if len(set(names)) != len(names):
                raise UsageError(f"two [[jobs]] in {path} have the same name", "give each job its own name")
        else:
            valid = sorted(_TOP_KEYS | {f"[{s}]" for s in _SECTIONS} | {"[[jobs]]", "[policy.NAME]"})
            raise UsageError(f"unknown key {key!r} in {path}", f"valid keys: {', '.join(valid)}")


# Any: mypy cannot narrow a value by `kind is list` below.
_JOB_TYPES: dict[str, Any] = {"name": str, "os_cloud": str, "project": str, "servers": list, "volumes": list,
                             "all": bool, "server_tags": list, "server_metadata": dict, "exclude": list,
                             "availability_zones": list, "shard": str}


def _cloud_job(entry: object, number: int, path: Path) -> CloudJob:
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise UsageError(f"[[jobs]] number {number} in {path} has no name", 'add name = "..." to it')
    for key, value in entry.items():
        kind = _JOB_TYPES.get(key)
        if kind is None:
            raise UsageError(f"unknown key {key!r} in job {entry['name']!r} of {path}",
                             f"valid keys in [[jobs]]: {', '.join(sorted(_JOB_TYPES))}")
        if not isinstance(value, kind) or (kind is list and not all(isinstance(v, str) for v in value)) \
                or (kind is dict and not all(isinstance(v, str) for v in value.values())):
            raise UsageError(f"{key} of job {entry['name']!r} in {path} must be a {kind.__name__}"
                             + (" of strings" if kind in (list, dict) else ""), "fix the value")
    if "shard" in entry:
        parse_shard(entry["shard"], f"shard of job {entry['name']!r} in {path}")
    return CloudJob(**entry)


def _section_value(section: str, key: str, value: object, path: Path) -> object:
    kind = _SECTIONS[section][key]
    origin = f"{section}.{key} in {path}"
    if (section, key) == ("ceph", "verify_sample"):
        return sample_share(value, origin)
    if (section, key) == ("retention", "keep_within"):
        return seconds(value, origin)
    if (section, key) == ("ceph", "volume_backends"):
        return volume_backends(value, origin)
    if kind in (int, "int"):
        return whole_number(value, origin, minimum=_MINIMUM.get((section, key), 0))
    if kind in (float, "float"):
        return seconds(value, origin, positive=True)
    if kind in ("str", "str | None") and not isinstance(value, str):
        raise UsageError(f"{origin} must be a string", "quote the value")
    if (section, key) == ("cloud", "volume_transfer") and value not in ("attach", "image"):
        raise UsageError(f"cloud.volume_transfer in {path} must be attach or image", "fix the value")
    if (section, key) == ("cloud", "require_consistency") and value not in CONSISTENCY_LEVELS:
        raise UsageError(f"cloud.require_consistency in {path} must be one of {', '.join(CONSISTENCY_LEVELS)}",
                         "fix the value")
    if kind == "list[str]" and (not isinstance(value, list) or not all(isinstance(v, str) for v in value)):
        raise UsageError(f"{origin} must be a list of strings", 'write e.g. ["az1", "az2"]')
    if (section, key) == ("api", "listen"):
        listen_address(value, origin)  # type: ignore[arg-type]  # a string: checked just above
    if (section, key) == ("cloud", "shard"):
        parse_shard(value, f"cloud.shard in {path}")  # type: ignore[arg-type]  # any TOML value: it refuses all but K/N
    if (section, key) == ("notify", "on") and isinstance(value, list) and not set(value) <= set(NOTIFY_EVENTS):
        raise UsageError(f"{origin} lists {', '.join(sorted(set(value) - set(NOTIFY_EVENTS)))}",
                         f"list some of: {', '.join(NOTIFY_EVENTS)}")
    if kind in (bool, "bool") and not isinstance(value, bool):
        raise UsageError(f"{origin} must be true or false", "write true or false, unquoted")
    return value


# -- policies of `stackvault server` and `stackvault run-policy` (docs/service.md) ---------------------------

#: The built-in policy: the proxy's own working state and config, saved daily (`stackvault state backup`).
PROXY_STATE_POLICY = "proxy-state"
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
@dataclass
class Policy(CloudSelection):
    """One `[policy.NAME]`: what to back up, when, at which level, how long to keep it, what to check."""

    name: str
    #: A cron expression (five fields; a sixth, last, gives seconds), read in `timezone`.
    schedule: str = "0 2 * * *"
    #: The IANA time zone (e.g. "Europe/Berlin") that `schedule` and `verify_full_schedule` are read in,
    #: with its summer-time rules; empty: the machine's ($TZ, else /etc/localtime), as cron reads its table.
    timezone: str = ""
    enabled: bool = True  # false: the server never runs it
    availability_zones: list[str] = field(default_factory=list)  # only servers and volumes in these AZs
    # The level plan: a Full on `full_on` days or when the last Full is `full_every_days` old, `level` otherwise.
    level: str = "incremental"  # incremental | differential: what runs between Fulls
    full_on: list[str] = field(default_factory=list)  # weekdays: mon .. sun
    full_every_days: int = 0  # 0: no Full forced by age
    retention: Retention = field(default_factory=Retention)  # nothing set: the policy forgets nothing
    gc: bool = True  # after a run whose retention forgot backups
    require_consistency: str | None = None  # None: [cloud] require_consistency
    #: Per run, deep-verify this percentage of the repository's chunks, a different share each run, so
    #: that every chunk is read within 100/percentage runs; 0: no verify.
    verify_sample_percent: float = 0.0
    #: A cron expression (as `schedule`) for a deep verify of every chunk of the repository, run apart
    #: from the backups (it reads the whole repository: hours, where the sampled share takes minutes);
    #: empty: none.
    verify_full_schedule: str = ""
    #: Seconds (or 30m, 6h, 1d) after which a run's servers and volumes in an availability zone of
    #: which no proxy took any item fail, naming the zone: no proxy serves it, and the run would stay open.
    unserved_zone_wait: float = 21600.0
    #: A second repository (a directory, s3://, swift://, as --repo takes it) that gets a copy of the
    #: policy's backups after each run (`stackvault copy`): those it lacks, so a run that could not copy
    #: is caught up by the next; empty: no copy.
    copy_to: str = ""
    #: The file holding `copy_to`'s passphrase when it is encrypted; empty: STACKVAULT_TO_PASSPHRASE.
    copy_to_passphrase_file: str = ""

    @property
    def builtin(self) -> bool:
        return self.name == PROXY_STATE_POLICY

    def selects_anything(self) -> bool:
        return bool(self.servers or self.volumes or self.all or self.server_tags or self.server_metadata)


def proxy_state_policy() -> Policy:
    """The built-in policy, on by default: a daily Full of this proxy's working state and config."""
    return Policy(PROXY_STATE_POLICY, schedule="30 3 * * *", level="full")


_POLICY_LISTS = ("servers", "volumes", "server_tags", "exclude", "availability_zones", "full_on")
_POLICY_STRINGS = ("os_cloud", "project", "schedule", "level", "require_consistency", "verify_full_schedule",
                   "timezone", "copy_to", "copy_to_passphrase_file")
#: The keys that name the proxy's own credentials or stores: a policy written through the API may not
#: set them (an API admin could otherwise point a policy at another cloud, or copy backups anywhere).
PROXY_POLICY_KEYS = ("os_cloud", "copy_to", "copy_to_passphrase_file")
_POLICY_KEYS = {f.name for f in fields(Policy)} - {"name"}
#: What the built-in policy takes: it backs up this proxy's state, not servers.
_BUILTIN_KEYS = {"schedule", "enabled", "timezone"}


def cron_schedule(value: object, origin: str) -> str:
    """A cron expression croniter accepts: five fields, or six with seconds last."""
    from croniter import croniter

    if not isinstance(value, str) or len(value.split()) not in (5, 6) or not croniter.is_valid(value):
        raise UsageError(f"bad value {value!r} for {origin}: not a cron expression",
                         'write five fields (minute hour day month weekday), e.g. "0 2 * * *" for 02:00 daily')
    return value


def time_zone(name: str, origin: str) -> None:
    """Refuses a name that is not a time zone of the system's (or tzdata's) zone database."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise UsageError(f"bad value {name!r} for {origin}: not a time zone",
                         'write an IANA name, e.g. "Europe/Berlin" or "UTC" (see timedatectl list-timezones)') from None


def parse_policy(name: str, entry: object, source: Path | str) -> Policy:
    """One `[policy.NAME]` table of the config at `source`, or the same keys from another source (the catalog)."""
    where = f"policy {name!r} in {source}"
    if not isinstance(entry, dict):
        raise UsageError(f"{where} is not a table", f"write it as [policy.{name}] with its keys below")
    valid = _BUILTIN_KEYS if name == PROXY_STATE_POLICY else _POLICY_KEYS
    policy = proxy_state_policy() if name == PROXY_STATE_POLICY else Policy(name)
    for key, value in entry.items():
        origin = f"{key} of {where}"
        if key not in valid:
            raise UsageError(f"unknown key {key!r} in {where}", f"valid keys: {', '.join(sorted(valid))}")
        if key == "schedule" or (key == "verify_full_schedule" and value != ""):
            value = cron_schedule(value, origin)
        elif key in _POLICY_STRINGS and not isinstance(value, str):
            raise UsageError(f"{origin} must be a string", "quote the value")
        elif key in _POLICY_LISTS and (not isinstance(value, list) or not all(isinstance(v, str) for v in value)):
            raise UsageError(f"{origin} must be a list of strings", 'write e.g. ["a", "b"]')
        elif key in ("all", "gc", "enabled") and not isinstance(value, bool):
            raise UsageError(f"{origin} must be true or false", "write true or false, unquoted")
        elif key == "server_metadata" and (not isinstance(value, dict)
                                           or not all(isinstance(v, str) for v in value.values())):
            raise UsageError(f"{origin} must be a table of strings", 'write e.g. { backup = "yes" }')
        elif key == "full_every_days":
            value = whole_number(value, origin)
            if value > MAX_FULL_EVERY_DAYS:  # a date that far out overflows: no schedule could run
                raise UsageError(f"bad value {value} for {origin}: more than {MAX_FULL_EVERY_DAYS} days",
                                 "write 0 for no Full forced by age")
        elif key == "verify_sample_percent":
            if not (isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 100):
                raise UsageError(f"bad value {value!r} for {origin}: not a percentage from 0 to 100",
                                 "write e.g. 10 to read a tenth of the chunks per run, all of them in ten runs")
            value = float(value)
        elif key == "retention":
            value = _policy_retention(value, origin)
        elif key == "unserved_zone_wait":
            value = seconds(value, origin, positive=True)
        if key == "level" and value not in ("incremental", "differential"):
            raise UsageError(f"{origin} must be incremental or differential",
                             "Fulls come from full_on and full_every_days; level is what runs between them")
        if key == "require_consistency" and value not in CONSISTENCY_LEVELS:
            raise UsageError(f"{origin} must be one of {', '.join(CONSISTENCY_LEVELS)}", "fix the value")
        if key == "timezone" and value:
            time_zone(value, origin)
        if key == "full_on" and not set(value) <= set(WEEKDAYS):
            raise UsageError(f"{origin} names a day that is not one of {', '.join(WEEKDAYS)}", 'write e.g. ["sun"]')
        setattr(policy, key, value)
    if not policy.builtin and policy.enabled and not policy.selects_anything():
        raise UsageError(f"{where} selects nothing to back up",
                         "add servers, volumes, all = true, server_tags or server_metadata")
    return policy


def _policy_retention(value: object, origin: str) -> Retention:
    if not isinstance(value, dict):
        raise UsageError(f"{origin} must be a table", "write e.g. retention = { keep_daily = 7, keep_weekly = 4 }")
    retention = Retention()
    for key, count in value.items():
        if key not in {f.name for f in fields(Retention)}:
            raise UsageError(f"unknown key {key!r} in {origin}",
                             f"valid keys: {', '.join(f.name for f in fields(Retention))}")
        setattr(retention, key, seconds(count, f"{key} of {origin}") if key == "keep_within"
                else whole_number(count, f"{key} of {origin}"))
    return retention


#: Whole-number settings that 0 would break ([cloud] parallel = 0 would back up no server at all).
_MINIMUM = {("cloud", "parallel"): 1}


def parse_pairs(pairs: list[str], what: str) -> dict[str, str]:
    """`KEY=VALUE` command-line pairs; `what` names the option in the error."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"{what} {pair!r} is not KEY=VALUE", f"write --{what} key=value")
        out[key] = value
    return out


def _set(settings: Settings, key: str, value: object, origin: str) -> None:
    if key == "compression_level":
        value = compression_level(value, origin)
    elif key == "workers":
        value = whole_number(value, origin, minimum=1)
    elif key == "lock_wait":
        value = seconds(value, origin)
    elif key in ("repo", "workdir", "catalog"):
        if not isinstance(value, str) or not value.strip():
            raise UsageError(f"bad value {value!r} for {origin}: "
                             + ("it is empty" if isinstance(value, str) else "not a string"),
                             f"give a non-empty {key}, or leave the setting out")
        value = Path(os.path.expanduser(value)) if key == "workdir" else value
    else:
        try:
            if key == "block_size":
                value = parse_size(value)  # type: ignore[arg-type]  # any TOML value: it refuses all but sizes
            elif ((key == "sync" and value not in ("file", "job"))
                  or (key == "require_encryption" and not isinstance(value, bool))):
                raise ValueError
        except (TypeError, ValueError):
            raise UsageError(f"bad value {value!r} for {origin}", "see docs/cli.md for the allowed values") from None
    setattr(settings, key, value)
