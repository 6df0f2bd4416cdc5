"""The WSGI application: Flask routes under /v1, Keystone's auth_token in front, errors as OpenStack's.

keystonemiddleware validates every request's X-Auth-Token against Keystone (and strips any identity
headers a client sent). It runs with `delay_auth_decision`, so a request without a valid token still
reaches Flask, marked invalid: the public routes (/v1/health, /v1/openapi.json) answer it, every
other route refuses it with 401 and the error body of the rest of the API.
"""

from __future__ import annotations

import logging
from http import HTTPStatus

from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from .. import __version__
from ..config import Settings
from ..errors import StackvaultError
from . import backup_files, backups, jobs, policies, restores, servers, usage, volumes
from .dashboard import file_browser  # noqa: F401 - its pages join the dashboard's blueprint
from .dashboard import views as dashboard_views
from .dashboard.sessions import SessionStore, SessionTokens
from .faults import error_response, from_error
from .openapi import describe
from .service import ApiService

log = logging.getLogger("stackvault.api")

#: Routes any client may call without a token: what a load balancer and an API client need first.
PUBLIC = {"health", "openapi"}

#: clouds.yaml `auth` keys that keystonemiddleware's password plugin takes as they are.
_AUTH_KEYS = ("auth_url", "username", "password", "user_id", "project_name", "project_id", "user_domain_name",
              "user_domain_id", "project_domain_name", "project_domain_id")


#: The largest request body the API reads.
MAX_BODY_BYTES = 256 * 1024

def create_app(settings: Settings, *, authenticate: bool = True, passphrase_file: str | None = None) -> Flask:
    """The API's Flask application; `authenticate=False` leaves out keystonemiddleware (the OpenAPI
    document and the routes' tests without a cloud: every protected route then answers 401)."""
    app = Flask("stackvault.api")
    # Every body the API takes (a policy, a restore, a login form) is a few KiB: a larger one is a 413
    # before anything parses it, whoever sends it.
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.json.sort_keys = False  # type: ignore[attr-defined]  # DefaultJSONProvider's; keep the documented order
    svc = ApiService(settings, passphrase_file)
    app.extensions["stackvault"] = svc
    for module in (backups, backup_files, jobs, policies, restores, servers, usage, volumes):
        app.register_blueprint(module.blueprint)
    sessions = SessionStore()
    app.extensions["stackvault.dashboard"] = sessions
    app.register_blueprint(dashboard_views.blueprint)
    # Behind a TLS-terminating proxy: its X-Forwarded-Proto makes the dashboard's cookie Secure.
    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=0, x_proto=1, x_host=0, x_port=0, x_prefix=0)  # type: ignore[method-assign]  # WSGI middleware, Flask's way

    @app.get("/v1/health", endpoint="health")
    def health():
        """Whether the service can open its repository and catalog.
        ---
        get:
          summary: Health
          security: []
          responses:
            200: {description: "{status: ok, version}"}
            503: {description: the repository or the catalog cannot be opened (message and fix)}
        """
        try:
            ctx = svc.context()
            ctx.catalog.backups(ctx.repo.id, "")  # a query of the catalog, of no rows
        except StackvaultError as exc:
            return error_response(HTTPStatus.SERVICE_UNAVAILABLE, exc.message, exc.fix)
        return jsonify({"status": "ok", "version": __version__})

    @app.get("/v1/openapi.json", endpoint="openapi")
    def openapi():
        """This document.
        ---
        get:
          summary: The OpenAPI description of this API
          security: []
          responses:
            200: {description: OpenAPI 3 document}
        """
        return jsonify(describe(app))

    @app.before_request
    def require_token():
        if request.endpoint in PUBLIC or request.endpoint is None or request.blueprint == "dashboard":
            return None  # the dashboard refuses a request without a session itself, with a page
        if request.environ.get("HTTP_X_IDENTITY_STATUS") != "Confirmed":
            response = error_response(HTTPStatus.UNAUTHORIZED, "the request has no valid Keystone token",
                                      "send a token of the cloud's Keystone in X-Auth-Token "
                                      "(`openstack token issue`)")
            if authenticate:
                response.headers["WWW-Authenticate"] = f"Keystone uri='{svc.auth_url}'"
            return response
        return None

    @app.errorhandler(StackvaultError)
    def stackvault_error(exc: StackvaultError):
        return from_error(exc)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        status = HTTPStatus(exc.code or 500)
        fix = "see GET /v1/openapi.json for the resources and methods" if status in (
            HTTPStatus.NOT_FOUND, HTTPStatus.METHOD_NOT_ALLOWED) else None
        return error_response(status, f"{request.method} {request.path}: {status.phrase.lower()}", fix)

    if authenticate:
        app.wsgi_app = _auth_token(app.wsgi_app, svc)  # type: ignore[method-assign]  # WSGI middleware, Flask's way
    app.wsgi_app = SessionTokens(app.wsgi_app, sessions)  # type: ignore[method-assign]  # outside auth_token
    return app


def _auth_token(wsgi_app, svc: ApiService):
    from keystonemiddleware import auth_token

    auth = svc.service_auth
    conf = {key: auth[key] for key in _AUTH_KEYS if auth.get(key)}
    conf.update(auth_type="password", www_authenticate_uri=svc.auth_url, delay_auth_decision=True,
                service_type="stackvault", include_service_catalog=False, log_name="stackvault.api.auth_token")
    if auth.get("region_name"):
        conf["region_name"] = auth["region_name"]
    if auth.get("interface"):
        conf["interface"] = auth["interface"]
    return auth_token.AuthProtocol(wsgi_app, conf)
