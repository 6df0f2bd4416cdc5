"""The web dashboard (docs/dashboard.md): server-rendered pages under /dashboard, served by the API's
own application, on the same resource functions and the same oslo.policy rules as /v1. A login with
Keystone credentials gives a token that stays in the API process; the browser holds only a random
session id (sessions.py). Every asset is in this package: no CDN, usable offline."""
