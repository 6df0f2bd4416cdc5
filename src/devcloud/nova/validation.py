"""Request checks real Nova makes with its JSON schemas, with its 400 messages.

A client that sends what Nova rejects must fail against the dev cloud too, or it passes here and
fails on a real cloud: names and metadata longer than the database columns (255), blank or
ill-formed metadata keys, non-string metadata values, and `limit`/`marker` query values.
"""

from __future__ import annotations

import datetime
import ipaddress
import re
from collections.abc import Callable
from typing import Any

import webob

from devcloud.nova.wsgi import bad_request

#: Nova's osapi_max_limit: the most items one list page holds, whatever `limit` asks.
MAX_LIMIT = 1000
#: parameter_types.metadata: keys of 1-255 of these characters, string values of up to 255.
METADATA_KEY = re.compile(r"^[a-zA-Z0-9-_:. ]{1,255}$")
MAX_LENGTH = 255


#: parameter_types.boolean: JSON booleans and these spellings of them.
BOOLEAN_TRUE = ("True", "true", "TRUE", "1", "on", "On", "ON", "yes", "Yes", "YES", "t", "T", "y",
                "Y")
BOOLEAN_FALSE = ("False", "false", "FALSE", "0", "off", "Off", "OFF", "no", "No", "NO", "f", "F",
                 "n", "N")


def invalid(field: str, value: Any, why: str) -> Exception:
    return bad_request(f"Invalid input for field/attribute {field}. Value: {value}. {why}")


def name(field: str, value: Any) -> str:
    """A server or image name: a non-blank string of at most 255 characters."""
    if not isinstance(value, str):
        raise invalid(field, value, f"{value!r} is not of type 'string'")
    if not value.strip():
        raise invalid(field, value, f"{value!r} is too short")
    if len(value) > MAX_LENGTH:
        raise invalid(field, value, f"{value!r} is too long")
    return value


def metadata(field: str, value: Any) -> dict[str, str]:
    """A metadata object: keys matching METADATA_KEY, string values of at most 255 characters."""
    if not isinstance(value, dict):
        raise invalid(field, value, f"{value!r} is not of type 'object'")
    for key, item in value.items():
        if not METADATA_KEY.match(key):
            raise invalid(field, value, f"Additional properties are not allowed ({key!r} was "
                                        "unexpected)")
        if not isinstance(item, str):
            raise invalid(f"{field}/{key}", item, f"{item!r} is not of type 'string'")
        if len(item) > MAX_LENGTH:
            raise invalid(f"{field}/{key}", item, f"{item!r} is too long")
    return dict(value)


def boolean(field: str, value: Any) -> bool:
    """A value of parameter_types.boolean (`preserve_ephemeral`, `return_reservation_id`)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value in BOOLEAN_TRUE + BOOLEAN_FALSE:
        return value in BOOLEAN_TRUE
    raise invalid(field, value, f"{value!r} is not of type 'boolean'")


def access_ip(field: str, value: Any, version: int) -> str:
    """accessIPv4/accessIPv6: an address of that version, stored (and shown) in its canonical form
    as Nova's IPAddress column does; empty clears it."""
    if value in ("", None):
        return ""
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        address = None
    if address is None or address.version != version:
        raise invalid(field, value, f"{value!r} is not a 'ipv{version}'")
    return str(address)


def timestamp(param: str, value: str | None) -> None:
    """changes-since/changes-before: an ISO 8601 date-time (format 'date-time' in Nova's schema)."""
    if value is None:
        return
    try:
        datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise bad_request(f"Invalid input for query parameters {param}. Value: {value}. "
                          f"'{value}' is not a 'date-time'") from None


def page(items: list[dict[str, Any]], query: webob.multidict.MultiDict,
         key: Callable[[dict[str, Any]], str]) -> list[dict[str, Any]]:
    """The items after `marker` (matched by `key`), at most `limit` of them (MAX_LIMIT if unset)."""
    raw = query.get("limit")
    limit = MAX_LIMIT
    if raw is not None:
        if not re.fullmatch(r"\d+", raw):
            raise bad_request(f"Invalid input for query parameters limit. Value: {raw}. "
                              f"'{raw}' does not match '^[0-9]*$'")
        limit = min(int(raw), MAX_LIMIT)
    marker = query.get("marker")
    if marker:
        keys = [key(item) for item in items]
        if marker not in keys:
            raise bad_request(f"marker [{marker}] not found")
        items = items[keys.index(marker) + 1:]
    return items[:limit]
