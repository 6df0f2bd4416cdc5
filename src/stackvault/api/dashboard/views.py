"""The dashboard's pages. Each one asks `scope()` with the rule of the API resource it shows and calls
that resource's own function (server_list, backup_list, visible_jobs, policy_list, usage_of,
start_restore, ...): the same data, the same rules, never a second implementation.

Every page needs a logged-in session whose token Keystone still takes (keystonemiddleware validated
it in front of Flask); every POST carries the session's CSRF token.
"""

from __future__ import annotations

from http import HTTPStatus

from flask import Blueprint, Response, abort, current_app, g, redirect, render_template, request, url_for
from werkzeug.exceptions import HTTPException

from ... import __version__
from ...cloud.servers import flavor_names, network_names
from ...errors import StackvaultError
from ...progress import human_bytes
from ..backups import backup_list
from ..faults import status_of
from ..jobs import job_detail, visible_jobs
from ..policies import policy_list
from ..restores import cancel_restore, find_restore, restore_view, start_restore
from ..scope import caller, scope, service
from ..servers import caller_connection, server_list
from ..usage import usage_of
from .badges import Badge, fleet_consistency, last_run
from .login import Credentials, log_in
from .sessions import COOKIE, ENVIRON_KEY, PREFIX, DashboardSession, SessionStore

blueprint = Blueprint("dashboard", __name__, url_prefix=PREFIX, template_folder="templates",
                      static_folder="static", static_url_path="/static")

#: Pages a visitor without a session may see.
OPEN = {"dashboard.login", "dashboard.static"}


def store() -> SessionStore:
    return current_app.extensions["stackvault.dashboard"]


def _session() -> DashboardSession | None:
    return request.environ.get(ENVIRON_KEY)


@blueprint.before_request
def guard():
    session = _session()
    if request.method == "POST" and not (session and session.csrf_matches(request.form.get("csrf_token"))):
        return _page("refused.html", HTTPStatus.BAD_REQUEST, title="Form refused")
    if request.endpoint in OPEN:
        return None
    if session is None or not session.logged_in:
        return redirect(url_for("dashboard.login", next=request.full_path if request.method == "GET" else None))
    if request.environ.get("HTTP_X_IDENTITY_STATUS") != "Confirmed":  # Keystone no longer takes the token
        store().drop(session.id)
        return _page("expired.html", HTTPStatus.UNAUTHORIZED, title="Session expired")
    g.session = session
    g.may_see_all = service().rules.allows("stackvault:all_projects", caller(), caller().project_id)
    if "all_projects" in request.args and g.may_see_all:
        session.all_projects = request.args["all_projects"] == "1"
    g.every = bool(g.may_see_all and session.all_projects is not False)
    return None


@blueprint.after_request
def headers(response: Response) -> Response:
    """Pages are private and never framed; the session cookie is HttpOnly, SameSite=Lax, and Secure
    behind TLS (the proxy's X-Forwarded-Proto, docs/dashboard.md)."""
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Content-Security-Policy"] = ("default-src 'self'; img-src 'self' data:; "
                                                   "frame-ancestors 'none'; form-action 'self'")
    response.headers["Referrer-Policy"] = "same-origin"
    session = getattr(g, "new_session", None) or _session()
    if session is not None:
        response.set_cookie(COOKIE, session.id, httponly=True, samesite="Lax", secure=request.is_secure,
                            path=PREFIX)
    elif getattr(g, "logged_out", False):
        response.delete_cookie(COOKIE, path=PREFIX)
    return response


@blueprint.app_template_filter("bytes")
def _bytes(value: int | None) -> str:
    return human_bytes(value or 0)


@blueprint.app_template_filter("duration")
def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = round(seconds)
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


@blueprint.app_template_filter("when")
def _when(iso: str | None) -> str:
    return (iso or "-").replace("T", " ")[:16]


@blueprint.app_template_global("badge")
def _badge(consistency: str | None) -> Badge:
    return Badge.of(consistency)


def _page(template: str, status: HTTPStatus = HTTPStatus.OK, **values) -> tuple[str, int]:
    session = getattr(g, "new_session", None) or _session()
    return render_template(f"{template}", session=session, version=__version__, **values), status.value


@blueprint.errorhandler(StackvaultError)
def failed(exc: StackvaultError):
    status = status_of(exc)
    return _page("error.html", status, title=status.phrase, message=exc.message, fix=exc.fix)


@blueprint.route("/login", methods=["GET", "POST"])
def login():
    session = _session()
    if session is None:
        session = g.new_session = store().new()
    error = None
    if request.method == "POST":
        form = request.form
        credentials = Credentials(method=form.get("method", "password"), username=form.get("username", ""),
                                  password=form.get("password", ""), project=form.get("project", ""),
                                  domain=form.get("domain", "") or "Default",
                                  credential_id=form.get("credential_id", ""),
                                  credential_secret=form.get("credential_secret", ""))
        try:
            done = log_in(service().service_auth["auth_url"], credentials)
        except StackvaultError as exc:
            error = exc
        else:
            g.new_session = store().log_in(session, done.token, done.user_name, done.project_name, done.expires)
            target = request.args.get("next") or ""
            return redirect(target if target.startswith(PREFIX + "/") else url_for("dashboard.overview"))
    return _page("login.html", HTTPStatus.UNAUTHORIZED if error else HTTPStatus.OK, title="Log in", error=error,
                 method=request.form.get("method", "password"), username=request.form.get("username", ""),
                 project=request.form.get("project", ""))


@blueprint.post("/logout")
def logout():
    store().drop(g.session.id)
    g.logged_out = True
    request.environ[ENVIRON_KEY] = None
    return redirect(url_for("dashboard.login"))


@blueprint.get("/")
def overview():
    servers = server_list(scope("stackvault:server:list", every=g.every))
    run = last_run(visible_jobs(scope("stackvault:job:list", every=g.every)))
    protected = [s for s in servers if s["protected"]]
    return _page("overview.html", title="Overview", servers=servers, protected=protected,
                 unprotected=[s for s in servers if not s["protected"]], run=run,
                 fleet=fleet_consistency(servers))


@blueprint.get("/servers/<server_id>")
def server(server_id: str):
    within = scope("stackvault:backup:list", every=g.every)
    backups = [b for b in backup_list(within) if (b["server"] or {}).get("id") == server_id]
    known = {s["id"]: s for s in server_list(scope("stackvault:server:list", every=g.every))}
    if not backups and server_id not in known:
        abort(HTTPStatus.NOT_FOUND)
    name = known[server_id]["name"] if server_id in known else backups[-1]["server"]["name"]
    return _page("server.html", title=name, name=name, server=known.get(server_id), server_id=server_id,
                 backups=list(reversed(backups)))


@blueprint.get("/jobs")
def jobs():
    entries = list(reversed(visible_jobs(scope("stackvault:job:list", every=g.every))))[:200]
    return _page("jobs.html", title="Jobs", jobs=entries)


@blueprint.get("/jobs/<job_id>")
def job(job_id: str):
    entry = job_detail(scope("stackvault:job:show", every=g.every), job_id)
    return _page("job.html", title=f"Job {job_id[:8]}", job=entry, shown=entry.to_dict(detailed=True))


@blueprint.get("/policies")
def policies():
    shown = policy_list(scope("stackvault:policy:list", every=g.every))
    return _page("policies.html", title="Policies", policies=shown)


@blueprint.get("/usage")
def usage():
    rows = usage_of(scope("stackvault:usage:show", every=g.every))
    top = max([r["bytes_stored"] for r in rows] + [1])
    return _page("usage.html", title="Storage use", rows=rows, top=top)


@blueprint.route("/restore", methods=["GET", "POST"])
def restore():
    within = scope("stackvault:backup:list", every=g.every)
    backups = [b for b in reversed(backup_list(within)) if b["server"] and b["status"] in ("success", "warning")]
    error = None
    if request.method == "POST":
        form = request.form
        try:
            run = start_restore(scope("stackvault:restore:create", every=g.every), form.get("backup_id", ""),
                                form.get("name", ""), form.get("flavor"), form.get("network"))
        except StackvaultError as exc:
            error = exc
        else:
            return redirect(url_for("dashboard.restore_status", restore_id=run.id), code=HTTPStatus.SEE_OTHER)
    conn = caller_connection(caller())
    flavors, networks = flavor_names(conn), network_names(conn)
    chosen = request.form.get("backup_id") or request.args.get("backup") or ""
    return _page("restore.html", HTTPStatus.BAD_REQUEST if error else HTTPStatus.OK, title="Restore",
                 backups=backups, chosen=chosen, flavors=flavors, networks=networks, error=error, form=request.form)


@blueprint.get("/restores/<restore_id>")
def restore_status(restore_id: str):
    within = scope("stackvault:restore:show", every=g.every)
    shown = restore_view(within, find_restore(within, restore_id))
    done = shown["status"] in ("active", "failed", "cancelled")
    percent = min(100, int(100 * shown["bytes_written"] / shown["size"])) if shown["size"] else 0
    return _page("restore_status.html", title=f"Restore {shown['name']}", restore=shown, done=done, percent=percent)


@blueprint.post("/restores/<restore_id>/cancel")
def cancel(restore_id: str):
    cancel_restore(scope("stackvault:job:cancel", every=g.every), restore_id)
    return redirect(url_for("dashboard.restore_status", restore_id=restore_id), code=HTTPStatus.SEE_OTHER)


@blueprint.errorhandler(HTTPException)
def http_failed(exc: HTTPException):
    status = HTTPStatus(exc.code or 500)
    return _page("error.html", status, title=status.phrase, message=f"{request.path}: {status.phrase.lower()}",
                 fix="go back to the overview")
