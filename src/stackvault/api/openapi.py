"""The OpenAPI description the service publishes, generated from its routes by apispec: each view's
docstring holds its operation after `---`, so the document cannot list a route the service lacks."""

from __future__ import annotations

from apispec import APISpec
from apispec.yaml_utils import load_operations_from_docstring
from apispec_webframeworks.flask import FlaskPlugin
from flask import Flask

from .. import __version__


def describe(app: Flask) -> dict:
    spec = APISpec(title="stackvault", version=__version__, openapi_version="3.0.3", plugins=[FlaskPlugin()],
                   security=[{"keystone": []}],
                   info={"description": "Self-service backups behind Keystone (docs/api.md). Every request but "
                                        "/v1/health and /v1/openapi.json carries a Keystone token in X-Auth-Token."})
    spec.components.security_scheme("keystone", {"type": "apiKey", "in": "header", "name": "X-Auth-Token"})
    with app.test_request_context():
        for name, view in app.view_functions.items():
            if name != "static" and load_operations_from_docstring(view.__doc__ or ""):
                spec.path(view=view, app=app)
    return spec.to_dict()
