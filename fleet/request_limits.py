"""Request bodies, checked before Django: the size limit and chunked framing.

gunicorn hands a body sent with `Transfer-Encoding: chunked` to the app
de-chunked but without a Content-Length, and Django reads a request without
one as empty: a chunked report would be answered "accepted" and stored
nowhere. So a chunked body is read here (up to its limit) and handed on with
its length. A body over the limit of its endpoint is answered 413 with the
JSON error body before Django reads it: Django's own limit
(DATA_UPLOAD_MAX_MEMORY_SIZE) would answer 400 and log an ERROR.

Limits: the device agent endpoints DEVICE_MAX_BODY_BYTES (256 KiB; 64
services report in about 15 KiB), every other endpoint
DATA_UPLOAD_MAX_MEMORY_SIZE (Django's default, 2.5 MiB). Request lines and
header fields are limited by the server in front (fleet/gunicorn.conf.py).
"""

import io
import json

from django.conf import settings

from devices.middleware import AGENT_PREFIX


def body_limit(path: str) -> int:
    if path.startswith(AGENT_PREFIX):
        return settings.DEVICE_MAX_BODY_BYTES
    return settings.DATA_UPLOAD_MAX_MEMORY_SIZE


def too_large_detail(limit: int) -> str:
    return f"The body is larger than this endpoint's limit of {limit:,} bytes."


def _error(start_response, status: str, error: str, detail: str):
    body = json.dumps({"error": error, "detail": detail}).encode()
    start_response(
        status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return [body]


class RequestBodies:
    """WSGI middleware in front of Django (fleet/wsgi.py)."""

    def __init__(self, application):
        self.application = application

    def __call__(self, environ, start_response):
        limit = body_limit(environ.get("PATH_INFO", ""))
        declared = environ.get("CONTENT_LENGTH")
        if declared:
            try:
                length = int(declared)
            except ValueError:
                return _error(
                    start_response, "400 Bad Request", "bad_request", "Content-Length is not a number."
                )
            if length > limit:
                return _error(
                    start_response, "413 Content Too Large", "too_large", too_large_detail(limit)
                )
        elif "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
            body = environ["wsgi.input"].read(limit + 1)
            if len(body) > limit:
                return _error(
                    start_response, "413 Content Too Large", "too_large", too_large_detail(limit)
                )
            environ["wsgi.input"] = io.BytesIO(body)
            environ["CONTENT_LENGTH"] = str(len(body))
        return self.application(environ, start_response)
