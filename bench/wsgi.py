"""What bench/run serves: the production WSGI application, plus a bare WSGI app.

The bare app answers under /bench/wsgi/ without Django at all: the floor of
what any Python request costs in this gunicorn. Everything else goes to
`fleet.wsgi.application` (with bench.settings, which adds the bare Django view
of bench.baseline_urls).
"""

from fleet.wsgi import application as django_application

BARE_PREFIX = "/bench/wsgi/"
BARE_ETAG = '"1.60"'
BARE_REPORT_ANSWER = b'{"accepted": true, "target_version": 1}'


def bare_application(environ, start_response):
    """GET: 304. PATCH: the body is read, a small JSON 200 answered."""
    if environ["REQUEST_METHOD"] == "GET":
        start_response("304 Not Modified", [("ETag", BARE_ETAG), ("Cache-Control", "no-cache")])
        return []
    environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    start_response(
        "200 OK",
        [("Content-Type", "application/json"), ("Content-Length", str(len(BARE_REPORT_ANSWER)))],
    )
    return [BARE_REPORT_ANSWER]


def application(environ, start_response):
    if environ.get("PATH_INFO", "").startswith(BARE_PREFIX):
        return bare_application(environ, start_response)
    return django_application(environ, start_response)
