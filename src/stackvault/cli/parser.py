"""The argument parser: global options, the options every share of a split takes, one subparser per
command of the table (each command adds its own options)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from enum import StrEnum
from typing import NoReturn

from .. import __version__
from ..config import seconds
from ..errors import UsageError
from .command import load_commands


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2, as every other usage error
        raise UsageError(message, f"see `{self.prog} --help`")


def checked(check: Callable[..., object], option: str) -> Callable[[str], object]:
    """An argparse type that refuses a bad value with the one-line error naming the option (not a bare
    "invalid value"), e.g. a negative count that would otherwise read as "keep nothing"."""
    return lambda text: check(text, option)


def _global_options(p: argparse.ArgumentParser, default: object) -> None:
    flag_default = default if default is not None else False
    p.add_argument("--config", default=default, help="TOML settings file (env STACKVAULT_CONFIG)")
    p.add_argument("--repo", default=default, help="repository location (env STACKVAULT_REPO)")
    p.add_argument("--workdir", default=default, help="working state directory (env STACKVAULT_WORKDIR)")
    p.add_argument("--catalog", default=default, help="catalog SQLAlchemy URL (env STACKVAULT_CATALOG)")
    p.add_argument("--json", action="store_true", default=flag_default, help="machine-readable output")
    p.add_argument("-q", "--quiet", action="store_true", default=flag_default)
    p.add_argument("-v", "--verbose", action="store_true", default=flag_default,
                   help="log what the job does on stderr, one line per step and disk")
    p.add_argument("--debug", action="store_true", default=flag_default,
                   help="log more: also every cloud API call (secrets are never written)")
    p.add_argument("--wait", type=checked(seconds, "--wait"), default=default, metavar="DURATION",
                   help="wait this long for a conflicting lock to go away (seconds, or 30s, 10m, 1h)")
    p.add_argument("--progress-interval", type=checked(seconds, "--progress-interval"), default=default,
                   metavar="DURATION", help="off a terminal: a progress line per disk this often (default 30s)")
    p.add_argument("--os-cloud", default=default, metavar="NAME", help="clouds.yaml entry (default: OS_CLOUD / OS_*)")
    p.add_argument("--passphrase-file", default=default, metavar="PATH",
                   help="an encrypted repository's passphrase (else STACKVAULT_PASSPHRASE, else asked on a terminal)")
    p.add_argument("--ceph-conf", default=default, metavar="PATH", help="rbd sources: ceph.conf ([ceph] conf)")
    p.add_argument("--ceph-client", default=default, metavar="client.NAME",
                   help="rbd sources: the Ceph user, read-only is enough ([ceph] client)")
    p.add_argument("--ceph-keyring", default=default, metavar="PATH",
                   help="rbd sources: that user's keyring ([ceph] keyring)")


def share_options(p: argparse.ArgumentParser) -> None:
    """This proxy's share when several split the servers (overrides [cloud] and [[jobs]] settings)."""
    p.add_argument("--availability-zone", action="append", default=[], metavar="AZ",
                   help="only servers and volumes in this availability zone (repeat for several)")
    p.add_argument("--shard", default=None, metavar="K/N",
                   help="only the K-th of N shares of the servers, by a hash of their ids (proxies 1/N .. N/N)")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="stackvault", description="Block-level backup and restore of disks and OpenStack servers.")
    parser.add_argument("--version", action="version", version=f"stackvault {__version__}")
    _global_options(parser, None)
    common = Parser(add_help=False)
    _global_options(common, argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for cmd in load_commands().values():
        p = sub.add_parser(cmd.name, help=cmd.help, parents=[common])
        if cmd.arguments is not None:
            cmd.arguments(p)
    return parser


def enum_choice(cls: type[StrEnum]) -> dict:
    """`add_argument` keywords for an option taking one value of a `StrEnum`: the parsed value is the
    member, and a bad value gets argparse's usual "invalid choice ... (choose from 'full', ...)"
    (a text the enum does not know is passed on unconverted for argparse's own choices check)."""
    return {"choices": [member.value for member in cls],
            "type": lambda text: cls(text) if text in cls._value2member_map_ else text}
