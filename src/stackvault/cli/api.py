"""`stackvault api`: the self-service REST API behind Keystone (docs/api.md), until SIGTERM."""

from __future__ import annotations

import argparse
import signal
import sys

from ..config import listen_address
from .command import Outcome, command
from .invocation import Invocation
from .parser import checked


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--listen", metavar="HOST:PORT", default=None,
                   type=checked(lambda v, o: listen_address(v, o) and v, "--listen"),
                   help="where to serve the API ([api] listen; 127.0.0.1:8779 by default)")


class _Stopped(Exception):
    """SIGTERM: leave serve_forever (requests being answered run on their own threads and end with it)."""


def _stop(*_: object) -> None:
    raise _Stopped


@command("api", "serve the self-service REST API behind Keystone (JSON under /v1) until SIGTERM", arguments=_arguments)
def api(inv: Invocation) -> Outcome:
    from werkzeug.serving import make_server

    from ..api.app import create_app

    listen = inv.args.listen or inv.settings.api.listen
    host, port = listen_address(listen, "--listen" if inv.args.listen else "[api] listen")
    app = create_app(inv.settings, passphrase_file=inv.args.passphrase_file)
    server = make_server(host, port, app, threaded=True)
    signal.signal(signal.SIGTERM, _stop)
    print(f"stackvault: serving the API on http://{host}:{server.port}/v1", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except _Stopped:
        pass
    finally:
        server.server_close()
    return Outcome({"listen": f"{host}:{server.port}", "stopped": True})
