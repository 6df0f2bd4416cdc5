"""One run of a command: its parsed options, the settings they give, the job context and the
progress display; and the small helpers several command families share."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

from ..config import Settings, load_settings, volume_backends
from ..jobs.context import JobContext
from ..progress import ProgressFactory


@dataclass
class Invocation:
    args: argparse.Namespace
    settings: Settings
    ctx: JobContext
    progress: ProgressFactory | None = None  # set by the CLI for the length of the command (progress.py)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Invocation:
        """Settings from the config, the environment and the options (the options win)."""
        settings = load_settings(args.config, repo=args.repo, workdir=args.workdir, catalog=args.catalog,
                                 lock_wait=args.wait)
        if args.os_cloud:
            settings.cloud.os_cloud = args.os_cloud
        for key in ("conf", "client", "keyring"):
            if getattr(args, f"ceph_{key}"):
                setattr(settings.ceph, key, getattr(args, f"ceph_{key}"))
        if getattr(args, "no_changed_blocks", False):
            settings.ceph.changed_blocks = False
        if getattr(args, "ceph_volume_backend", None):
            settings.ceph.volume_backends = volume_backends(args.ceph_volume_backend, "--ceph-volume-backend")
        if hasattr(args, "shard"):  # backup, doctor, list
            settings.override_share(args.availability_zone, args.shard)
        return cls(args, settings, JobContext(settings, args.passphrase_file))

    @cached_property
    def share(self) -> dict:
        """This proxy's share of a split, as `cloud.inventory.Selection` takes it."""
        azs, shard = self.settings.share()
        return {"availability_zones": azs, "shard": shard}

    def disk_key(self, spec: str | None) -> str | None:
        """The key a `--source` spec's disk has in the repository (None for no spec)."""
        if spec is None:
            return None
        if spec.startswith("rbd:"):  # its key names the cluster's fsid and the image: ask the cluster
            from ..engine.sources import open_source

            with open_source(spec, self.settings.ceph) as source:
                return source.key
        path = spec.split(":", 1)[1] if ":" in spec and len(spec.split(":", 1)[0]) > 1 else spec
        return f"file:{os.path.realpath(path)}"


def confirmer(yes: bool) -> Callable[[str], bool] | None:
    """--yes answers every question; else a terminal asks; else nobody can answer (None: the job refuses)."""
    if yes:
        return lambda _question: True
    return confirm if sys.stdin is not None and sys.stdin.isatty() else None


def confirm(question: str) -> bool:
    """y/N on the terminal (stderr, so --json output stays one document); no answer is no."""
    print(f"{question} [y/N] ", end="", file=sys.stderr, flush=True)
    return sys.stdin.readline().strip().lower() in ("y", "yes")
