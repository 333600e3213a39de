"""Errors: one envelope for every failure, on every route.

``{"success": false, "message": ..., "code": <HTTP status>, "error": {"message", "type", "param", "code"}}``:
the documented three fields, plus the OpenAI error object so SDKs raise the right exception with
``e.code``, ``e.param`` and ``e.type`` filled in.
"""

import logging
import sqlite3

from flask import jsonify, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound, RequestEntityTooLarge

from . import store
from .backends.base import BackendError

log = logging.getLogger(__name__)

# Machine-readable codes for werkzeug's HTTP errors.
HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "unprocessable_entity",
    429: "rate_limited",
}


STORE_STATUS = {store.NotFound: 404, store.Conflict: 409, store.Invalid: 400, store.Busy: 503}


class ApiError(Exception):
    """An error answered with the envelope. Raise it anywhere in request handling."""

    def __init__(self, status, message, *, code=None, param=None, headers=None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code or HTTP_CODES.get(status, "error")
        self.param = param
        self.headers = headers or {}


def error_type(status):
    if status == 401:
        return "authentication_error"
    if status == 403:
        return "permission_error"
    if status == 404:
        return "not_found_error"
    if status == 429:
        return "rate_limit_error"
    if status >= 500:
        return "server_error"
    return "invalid_request_error"


def error_body(status, message, code=None, param=None):
    """The envelope as a dict: used for JSON responses and for the SSE error event alike."""
    return {
        "success": False,
        "message": message,
        "code": status,
        "error": {
            "message": message,
            "type": error_type(status),
            "param": param,
            "code": code or HTTP_CODES.get(status, "error"),
        },
    }


def error_response(status, message, code=None, param=None, headers=None):
    response = jsonify(error_body(status, message, code, param))
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def from_exception(exc):
    """(status, message, code, param, headers) for any exception, without internals for our own bugs."""
    if isinstance(exc, ApiError):
        return exc.status, exc.message, exc.code, exc.param, exc.headers
    if isinstance(exc, BackendError):
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else {}
        return exc.status, exc.message, exc.code, None, headers
    if isinstance(exc, store.StoreError):
        status, headers = STORE_STATUS.get(type(exc), 500), {}
        if isinstance(exc, store.Busy):
            headers = {"Retry-After": "1"}
        return status, str(exc), HTTP_CODES.get(status, "busy"), None, headers
    if isinstance(exc, sqlite3.OperationalError) and ("locked" in str(exc) or "busy" in str(exc)):
        return 503, "The database is busy; try again", "busy", None, {"Retry-After": "1"}
    if isinstance(exc, HTTPException):
        headers = {k: v for k, v in exc.get_headers() if k.lower() == "allow"}
        return exc.code, exc.description, HTTP_CODES.get(exc.code), None, headers
    return 500, "Internal server error; the server log has the details.", "internal_error", None, {}


def _describe_http(exc, message):
    """Say which route or limit was hit instead of werkzeug's generic sentences."""
    if type(exc) is NotFound:
        return f"{request.method} {request.path} does not exist"
    if isinstance(exc, MethodNotAllowed):
        allowed = ", ".join(m for m in exc.valid_methods or () if m not in ("HEAD", "OPTIONS"))
        return f"{request.method} is not allowed on {request.path}; use {allowed}"
    if isinstance(exc, RequestEntityTooLarge):
        limit = request.max_content_length
        return f"Request body is larger than the limit of {limit} bytes (KERNEL_MAX_BODY_BYTES)"
    return message


def _handle(exc):
    status, message, code, param, headers = from_exception(exc)
    if isinstance(exc, HTTPException):
        message = _describe_http(exc, message)
    if status >= 500 and not isinstance(exc, (ApiError, BackendError, HTTPException, store.Busy)):
        log.exception("unhandled error")
    elif isinstance(exc, (BackendError, store.Busy)) or (isinstance(exc, ApiError) and status >= 500):
        log.warning("%s (%s): %s", type(exc).__name__, status, message)
    return error_response(status, message, code, param, headers)


def init_app(app):
    # One handler for everything: Flask finds it along each exception's MRO, HTTP errors included.
    app.register_error_handler(Exception, _handle)
