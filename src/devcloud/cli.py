"""`devcloud` command line: up, down, status, fault add/clear/list, openstack (thin wrapper)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from devcloud import cloud, faults, processes
from devcloud.context import (
    BACKEND_PORT_OFFSET,
    DEFAULT_PORTS,
    CloudContext,
    DevcloudError,
    free_ports,
    state_dir_from_env,
)

log = logging.getLogger("devcloud")


def parse_ports(text: str) -> tuple[dict[str, int], bool]:
    """`keystone=35357,glance=39292` -> ports; `auto` -> free ports for everything."""
    if text == "auto":
        return {}, True
    ports: dict[str, int] = {}
    for item in filter(None, text.split(",")):
        name, _, port = item.partition("=")
        if name not in DEFAULT_PORTS or not port.isdigit():
            raise DevcloudError(f"bad --ports item {item!r}: use SERVICE=PORT with SERVICE one "
                                f"of {', '.join(DEFAULT_PORTS)}, or `auto`")
        ports[name] = int(port)
    return ports, False


def context_for_up(args: argparse.Namespace) -> CloudContext:
    ctx = CloudContext.load(state_dir_from_env(args.state_dir))
    if args.fast is not None:
        ctx.fast = args.fast
    wanted = wants_ceph(args.ceph)
    if not ctx.ceph and wanted is not False:
        running = ctx.config_path.exists() and processes.marked_pids(ctx.state_dir)
        if running and wanted:
            raise DevcloudError(f"the cloud in {ctx.state_dir} runs without Ceph; run `devcloud "
                                "down` before `up --ceph` (Cinder must restart with the backend)")
        if running:  # the default must not stop a running cloud: it gets Ceph at its next start
            log.info("the cloud in %s runs without Ceph: `devcloud down`, then `up` adds it", ctx.state_dir)
        else:
            ctx.ceph = True  # kept in config.json: Cinder's volumes on Ceph must stay reachable
    elif ctx.ceph and wanted is False:
        log.info("the cloud in %s keeps its Ceph (Cinder's `ceph` volumes live there): a new state dir "
                 "starts without it", ctx.state_dir)
    if args.cache_dir:
        ctx.cache_dir = Path(args.cache_dir).resolve()
    if args.ports:
        before = (dict(ctx.ports), dict(ctx.backend_ports))
        ports, auto = parse_ports(args.ports)
        if auto:
            names = list(DEFAULT_PORTS)
            both = free_ports(names + [f"{n}-backend" for n in names], ctx.host)
            ctx.ports = {n: both[n] for n in names}
            ctx.backend_ports = {n: both[f"{n}-backend"] for n in names}
        for name, port in ports.items():
            ctx.ports[name] = port
            ctx.backend_ports[name] = port + BACKEND_PORT_OFFSET
        changed = (ctx.ports, ctx.backend_ports) != before
        if changed and ctx.config_path.exists() and processes.marked_pids(ctx.state_dir):
            raise DevcloudError(f"the cloud in {ctx.state_dir} is running on other ports; run "
                                "`devcloud down` before changing --ports")
    return ctx


def wants_ceph(flag: bool | None) -> bool | None:
    """Ceph asked for (True), refused (False) or left to the default (None, which is Ceph): `--ceph`
    / `--no-ceph`, else $DEVCLOUD_CEPH (1/yes/true, 0/no/false)."""
    if flag is not None:
        return flag
    env = os.environ.get("DEVCLOUD_CEPH", "").lower()
    if env in ("1", "yes", "true"):
        return True
    if env in ("0", "no", "false"):
        return False
    return None


def cmd_up(args: argparse.Namespace) -> int:
    ctx = cloud.up(context_for_up(args), skip=cloud.skipped_parts(args.skip))
    print(ctx.clouds_yaml)
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    stopped = cloud.down(state_dir_from_env(args.state_dir))
    log.info("stopped: %s", ", ".join(stopped) if stopped else "nothing was running")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    report = cloud.status(CloudContext.load(state_dir_from_env(args.state_dir)))
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"state dir:   {report['state_dir']}\nclouds.yaml: {report['clouds_yaml']} "
          f"(cloud {report['cloud']}){'  [fast]' if report['fast'] else ''}")
    for name, svc in report["services"].items():
        state = f"running (pid {svc['pid']})" if svc["running"] else "stopped"
        print(f"  {name:<10} {svc.get('url', ''):<28} {state}")
    if "ceph" in report:
        c = report["ceph"]
        print(f"  ceph       {c['mon_host']:<28} {c['health'] or 'monitor stopped'} "
              f"(conf {c['conf']})")
    for image in report["images"]:
        print(f"  image {image['name']} {image['id']} {image['properties']}")
    return 0


def cmd_fault(args: argparse.Namespace) -> int:
    state_dir = state_dir_from_env(args.state_dir)
    if args.fault_cmd == "clear":
        print(f"removed {faults.clear(state_dir, args.service)} rule(s)")
    elif args.fault_cmd == "list":
        print(json.dumps([vars(r) for r in faults.list_rules(state_dir)], indent=2))
    else:
        kind, value = _fault_kind(args)
        rule = faults.add(state_dir, faults.FaultRule(
            service=args.service, kind=kind, value=value, method=args.method,
            path_regex=args.path_regex, count=args.count))
        print(rule.id)
    return 0


def _fault_kind(args: argparse.Namespace) -> tuple[str, float]:
    if args.status is not None:
        return "status", args.status
    if args.latency is not None:
        return "latency", args.latency
    if args.drop_after_bytes is not None:
        return "drop", args.drop_after_bytes
    return ("hang-snapshot" if args.hang_snapshot else "quota-exceeded"), 0


def cmd_openstack(args: argparse.Namespace) -> int:
    """Run python-openstackclient from the services venv against this cloud."""
    ctx = CloudContext.load(state_dir_from_env(args.state_dir))
    exe = ctx.services_bin("openstack")
    if not exe.exists():
        raise DevcloudError(f"{exe} is missing: run `devcloud up` first")
    env = {**os.environ, "OS_CLIENT_CONFIG_FILE": str(ctx.clouds_yaml)}
    env.setdefault("OS_CLOUD", "devcloud")
    argv = args.args[1:] if args.args[:1] == ["--"] else args.args
    os.execve(str(exe), [str(exe), *argv], env)
    return 127  # not reached


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="devcloud", description=__doc__)
    parser.add_argument("--state-dir", help="state directory (default $DEVCLOUD_STATE or "
                                            "<repo>/.state/devcloud)")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("up", help="start the cloud (idempotent); prints the clouds.yaml path")
    p.add_argument("--state-dir", default=argparse.SUPPRESS)
    p.add_argument("--fast", action="store_true", default=None,
                   help="servers are disk files without a VM")
    p.add_argument("--no-fast", dest="fast", action="store_false")
    p.add_argument("--ceph", action="store_true", default=None,
                   help="run a single-node Ceph and Cinder's RBD backend (volume type `ceph`), the "
                        "default; kept for later `up`s of this state dir")
    p.add_argument("--no-ceph", dest="ceph", action="store_false",
                   help="a new state dir without Ceph: a few seconds and ~150 MiB less "
                        "(default $DEVCLOUD_CEPH: 0 is --no-ceph)")
    p.add_argument("--ports", help="SERVICE=PORT,... (public ports) or `auto` for free ports")
    p.add_argument("--cache-dir", help="where the services venv and guest images are cached")
    p.add_argument("--skip", help=f"parts to leave out, comma separated: {','.join(cloud.PARTS)} "
                                  "(default $DEVCLOUD_SKIP)")
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("down", help="stop every process of the cloud (by pid)")
    p.add_argument("--state-dir", default=argparse.SUPPRESS)
    p.set_defaults(func=cmd_down)

    p = sub.add_parser("status", help="services, endpoints, clouds.yaml, images")
    p.add_argument("--state-dir", default=argparse.SUPPRESS)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("fault", help="fault injection rules")
    p.add_argument("--state-dir", default=argparse.SUPPRESS)
    fsub = p.add_subparsers(dest="fault_cmd", required=True)
    add = fsub.add_parser("add", help="add a rule; prints its id")
    add.add_argument("service", choices=faults.SERVICES)
    add.add_argument("--method", help="only this HTTP method")
    add.add_argument("--path-regex", help="only paths matching this regex (re.search)")
    add.add_argument("--count", type=int, help="apply to this many requests, then stop")
    kind = add.add_mutually_exclusive_group(required=True)
    kind.add_argument("--status", type=int, help="answer with this HTTP status")
    kind.add_argument("--latency", type=float, help="delay requests by this many seconds")
    kind.add_argument("--drop-after-bytes", type=int,
                      help="reset the connection after this many response body bytes")
    kind.add_argument("--hang-snapshot", action="store_true",
                      help="Nova: image snapshots never finish")
    kind.add_argument("--quota-exceeded", action="store_true",
                      help="Nova: requests fail with quota exceeded")
    for name in ("clear", "list"):
        fp = fsub.add_parser(name)
        if name == "clear":
            fp.add_argument("service", nargs="?", choices=faults.SERVICES)
    p.set_defaults(func=cmd_fault)

    p = sub.add_parser("openstack", help="the openstack CLI of the services venv, OS_CLOUD=devcloud")
    p.add_argument("--state-dir", default=argparse.SUPPRESS)
    p.add_argument("args", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_openstack)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="devcloud: %(message)s", stream=sys.stderr)
    try:
        return args.func(args)
    except (DevcloudError, ValueError) as exc:
        print(f"devcloud: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `devcloud status | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
