"""The API as a WSGI module for a WSGI server (uWSGI, gunicorn, mod_wsgi), as other OpenStack APIs
are deployed: `uwsgi --module stackvault.api.wsgi:application`. Settings come from STACKVAULT_CONFIG
and the environment, as for `stackvault api`."""

from __future__ import annotations

from ..config import load_settings
from .app import create_app

application = create_app(load_settings())
