"""Errors as an OpenStack API returns them: a status code and Keystone's error body, which carries
the CLI's one line split as it is written there (`message`, then `fix`).

A client of any OpenStack API reads `{"error": {"code", "title", "message"}}` already (keystoneauth
shows `message`); `fix` is the part the CLI prints in parentheses.
"""

from __future__ import annotations

from http import HTTPStatus

from flask import Response, jsonify

from ..errors import LockedError, NotFoundError, StackvaultError, UsageError


class ApiError(StackvaultError):
    """A refusal that only the API makes (no token, a rule that forbids): carries its HTTP status."""

    def __init__(self, status: HTTPStatus, message: str, fix: str | None = None) -> None:
        self.status = status
        super().__init__(message, fix)


def status_of(exc: StackvaultError) -> HTTPStatus:
    """The HTTP status of a job's error: the CLI's exit code classes, mapped once."""
    if isinstance(exc, ApiError):
        return exc.status
    if isinstance(exc, NotFoundError):
        return HTTPStatus.NOT_FOUND
    if isinstance(exc, LockedError):
        return HTTPStatus.CONFLICT  # busy: try again (the CLI's exit 75)
    if isinstance(exc, UsageError):
        return HTTPStatus.BAD_REQUEST
    return HTTPStatus.INTERNAL_SERVER_ERROR


def error_response(status: HTTPStatus, message: str, fix: str | None = None) -> Response:
    response = jsonify({"error": {"code": status.value, "title": status.phrase, "message": message, "fix": fix}})
    response.status_code = status.value
    return response


def from_error(exc: StackvaultError) -> Response:
    return error_response(status_of(exc), exc.message, exc.fix)
