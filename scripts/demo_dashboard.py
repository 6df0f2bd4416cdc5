"""The demo's last act: `stackvault api` left running with its web dashboard, and a user to log in as.

The API is started detached (its own session), so it outlives `make demo` as the dev cloud does; the
next `make demo` stops the one it left (by the pid it wrote). The user `demo-viewer` is a member of
the project the demo's servers are in: the dashboard shows them, their backups and jobs, and lets
them be restored.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

from devcloud.keystone import register_stackvault_api

VIEWER = "demo-viewer"


def _stop_earlier(pid_file: Path) -> None:
    try:
        pid = int(pid_file.read_text())
    except (OSError, ValueError):
        return
    try:
        os.killpg(pid, signal.SIGTERM)  # the API the last demo started, in the session it made
    except ProcessLookupError:
        pass
    pid_file.unlink(missing_ok=True)


def _viewer(conn) -> str:
    """`demo-viewer`, a member of the demo's project, with a new password each run."""
    password = secrets.token_urlsafe(12)
    user = conn.identity.find_user(VIEWER)
    if user is None:
        user = conn.identity.create_user(name=VIEWER, password=password, domain_id="default",
                                         default_project_id=conn.current_project_id)
    else:
        conn.identity.update_user(user, password=password)
    conn.identity.assign_project_role_to_user(conn.current_project_id, user,
                                              conn.identity.find_role("member", ignore_missing=False))
    return password


def start_dashboard(sv: str, config: Path, env: dict, conn, ctx, out: Path) -> bool:
    """Start the API with its dashboard, print where and as whom to log in; True when it answers."""
    pid_file = out / "api.pid"
    _stop_earlier(pid_file)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config.write_text(config.read_text() + f'\n[api]\nlisten = "127.0.0.1:{port}"\n'
                      'service_cloud = "devcloud-stackvault"\n')
    log = out / "api.log"
    print(f"+ stackvault api &      (its log: {log})", flush=True)
    with log.open("w") as sink:
        api = subprocess.Popen([sv, "api"], env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    pid_file.write_text(str(api.pid))
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(url + "/v1/health", timeout=10):  # noqa: S310 - an http URL made above
                break
        except OSError:
            if api.poll() is not None or time.monotonic() > deadline:
                print(f"stackvault api did not start: see {log}")
                return False
            time.sleep(0.5)
    register_stackvault_api(ctx, url)
    password = _viewer(conn)
    print(f"the dashboard: {url}/dashboard/")
    project = conn.identity.get_project(conn.current_project_id).name
    print(f"  log in as user {VIEWER}, password {password}, project {project} (domain Default)")
    print(f"  the API stays up after the demo; `kill -- -{api.pid}` stops it")
    return True
