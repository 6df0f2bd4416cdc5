"""Fault rules as the proxy and Nova read them: matching, counting down, kinds, clearing."""

from __future__ import annotations

import pytest

from devcloud import faults
from devcloud.faultproxy import error_body
from devcloud.faults import FaultRule


def test_a_counted_rule_applies_that_many_times(tmp_path):
    faults.add(tmp_path, FaultRule(service="glance", kind="status", value=503, method="GET",
                                   path_regex="^/v2/images", count=2))
    hits = [faults.match(tmp_path, "glance", "GET", "/v2/images/abc") for _ in range(3)]
    assert [h.value if h else None for h in hits] == [503, 503, None]


def test_rules_match_service_method_and_path(tmp_path):
    faults.add(tmp_path, FaultRule(service="glance", kind="drop", value=10, method="GET",
                                   path_regex="/file$"))
    assert faults.match(tmp_path, "glance", "GET", "/v2/images/x/file").kind == "drop"
    assert faults.match(tmp_path, "glance", "PUT", "/v2/images/x/file") is None
    assert faults.match(tmp_path, "glance", "GET", "/v2/images/x") is None
    assert faults.match(tmp_path, "cinder", "GET", "/v2/images/x/file") is None


def test_nova_rules_are_invisible_to_the_proxy(tmp_path):
    faults.add(tmp_path, FaultRule(service="nova", kind="hang-snapshot", count=1))
    assert faults.match(tmp_path, "nova", "POST", "/v2.1/servers/x/action",
                        kinds=faults.HTTP_KINDS) is None
    rule = faults.match(tmp_path, "nova", "POST", "/v2.1/servers/x/action",
                        kinds={"hang-snapshot"})
    assert rule is not None and rule.kind == "hang-snapshot"


def test_clear_removes_rules_per_service_or_all(tmp_path):
    for service in ("glance", "cinder"):
        faults.add(tmp_path, FaultRule(service=service, kind="latency", value=1))
    assert faults.clear(tmp_path, "glance") == 1
    assert [r.service for r in faults.list_rules(tmp_path)] == ["cinder"]
    assert faults.clear(tmp_path) == 1
    assert faults.match(tmp_path, "cinder", "GET", "/") is None


def test_bad_rules_are_refused_with_the_choices(tmp_path):
    with pytest.raises(ValueError, match="unknown service 'swift'"):
        faults.add(tmp_path, FaultRule(service="swift", kind="status", value=500))
    with pytest.raises(ValueError, match="unknown fault kind"):
        faults.add(tmp_path, FaultRule(service="nova", kind="explode"))


def test_error_bodies_look_like_each_service():
    assert error_body("keystone", 503, "m") == {
        "error": {"code": 503, "title": "Service Unavailable", "message": "m"}}
    assert error_body("nova", 503, "m") == {"serviceUnavailable": {"code": 503, "message": "m"}}
    assert error_body("cinder", 500, "m") == {"computeFault": {"code": 500, "message": "m"}}
    assert error_body("glance", 503, "m")["code"] == "503 Service Unavailable"
    assert error_body("neutron", 503, "m")["NeutronError"]["type"] == "HTTPServiceUnavailable"
