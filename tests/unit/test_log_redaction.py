"""The log filter behind `-v` / `--debug`: a secret never reaches the log, whatever logger writes it."""

from __future__ import annotations

import io
import logging

import pytest

from stackvault import logs


@pytest.fixture
def log_stream():
    stream = io.StringIO()
    root = logging.getLogger()
    before = list(root.handlers)
    logs.configure(verbose=False, debug=True, stream=stream)
    yield stream
    for handler in root.handlers[len(before):]:
        root.removeHandler(handler)


def test_headers_bodies_and_known_values_are_redacted(log_stream):
    logs.keep_secret("my-app-cred-secret-value")
    ks = logging.getLogger("keystoneauth.session")
    ks.debug('REQ: curl -g -i -X GET https://cloud/v3 -H "X-Auth-Token: gAAAAABtokenvalue123456" -H "Accept: json"')
    ks.debug("RESP: [201] {'X-Subject-Token': 'gAAAAABother7890', 'Content-Type': 'application/json'}")
    ks.debug('RESP BODY: {"auth": {"application_credential": {"id": "abc", "secret": "plain-in-body"}}}')
    logging.getLogger("openstack").debug("auth with %s", "my-app-cred-secret-value")
    logging.getLogger("stackvault.jobs").info("passphrase=hunter2hunter2 for repo")
    try:
        raise RuntimeError("refused password: 'tr4ceback-secret'")
    except RuntimeError:
        logging.getLogger("stackvault").exception("failed")
    text = log_stream.getvalue()
    for secret in ("gAAAAABtokenvalue123456", "gAAAAABother7890", "plain-in-body", "my-app-cred-secret-value",
                   "hunter2hunter2", "tr4ceback-secret"):
        assert secret not in text, text
    assert "X-Auth-Token: ***" in text and "GET https://cloud/v3" in text and "Accept: json" in text


def test_verbose_shows_stackvault_steps_not_cloud_calls(log_stream):
    root = logging.getLogger()
    for handler in root.handlers[:]:
        if getattr(handler, "stream", None) is log_stream:
            root.removeHandler(handler)
    stream = io.StringIO()
    logs.configure(verbose=True, debug=False, stream=stream)
    logging.getLogger("stackvault.jobs.backup").info("disk vda")
    logging.getLogger("keystoneauth.session").debug("REQ: curl")
    logging.getLogger("stackvault.jobs.backup").debug("detail")
    assert "disk vda" in stream.getvalue() and "REQ" not in stream.getvalue() and "detail" not in stream.getvalue()
    for handler in root.handlers[:]:
        if getattr(handler, "stream", None) is stream:
            root.removeHandler(handler)
