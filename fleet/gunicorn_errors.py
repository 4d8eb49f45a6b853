"""gunicorn's own error answers (a request line or a header field over the
limits of fleet/gunicorn.conf.py, a malformed request) with our JSON error
body instead of its HTML page, so that every error a client sees has the
same shape, whichever layer refused the request.

gunicorn writes those answers with `gunicorn.util.write_error` before any
application code runs; `install()` (called by gunicorn.conf.py, in the master,
so every worker inherits it) puts ours in its place.
"""

import json

from gunicorn import util

# gunicorn's status -> our error code.
ERROR_CODES = {
    400: "bad_request",
    403: "permission_denied",
    414: "request_line_too_long",
    417: "expectation_failed",
    431: "header_fields_too_large",
    500: "server_error",
    501: "not_implemented",
}


def write_json_error(sock, status_int: int, reason: str, mesg: str) -> None:
    body = json.dumps(
        {"error": ERROR_CODES.get(status_int, "bad_request"), "detail": mesg or reason}
    ).encode()
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\n"
        "Connection: close\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode("latin-1")
    util.write_nonblock(sock, head + body)


def install() -> None:
    util.write_error = write_json_error
