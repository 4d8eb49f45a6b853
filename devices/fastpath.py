"""The poll and the report, answered in WSGI before Django's request machinery.

Devices poll far more than anything else is requested, and most polls are a
304; a report follows every change of what a device runs. In Django, each
pays for the request object, the request signals, URL resolving and the
middleware chain on top of its SQL; here it pays for the statements and the
answer. The answers are the Django view's own (devices.views.poll_response
and answer_report, with SecurityMiddleware's headers), and the
authentication is the views' own (devices.views.device_by_key).

Only what the fast path can answer exactly as Django would is answered here:
an authenticated GET, or an authenticated PATCH whose body the view takes
as it is (devices.views.plain_report: stored, or refused over the service cap), of `/api/v1/device/{uuid}/state`
on an allowed host, over https or with the https redirect off. Everything
else, including every refused request (401, 404), every body the view has
something to say about (malformed or invalid: 400; 413) and every body without a Content-Length,
goes to Django, which answers it as always (a body read here is handed on
whole).
"""

import io
import re

from django.conf import settings
from django.core.signals import request_finished
from django.http.request import split_domain_port, validate_host
from django.middleware.security import SecurityMiddleware

from . import selectors, views

STATE_PATH = re.compile(r"/api/v1/device/([^/]+)/state")


class _Request:
    """What SecurityMiddleware.process_response asks of a request."""

    __slots__ = ("secure",)

    def __init__(self, secure: bool):
        self.secure = secure

    def is_secure(self) -> bool:
        return self.secure


class PollFastPath:
    """WSGI middleware in front of Django (fleet/wsgi.py): polls and reports."""

    def __init__(self, application):
        self.application = application
        # Only its response headers are used, never its get_response.
        self.security = SecurityMiddleware(lambda request: None)

    def __call__(self, environ, start_response):
        answer = _ANSWERS.get(environ["REQUEST_METHOD"])
        if answer is None:
            return self.application(environ, start_response)
        match = STATE_PATH.fullmatch(environ.get("PATH_INFO", ""))
        if match is None:
            return self.application(environ, start_response)
        secure = _is_secure(environ)
        # Redirected to https by Django's SecurityMiddleware (which, like
        # ours, read SECURE_SSL_REDIRECT when the app was built).
        if (self.security.redirect and not secure) or not _allowed_host(environ):
            return self.application(environ, start_response)
        try:
            response = answer(environ, match[1])
            if response is None:
                return self.application(environ, start_response)
            response = self.security.process_response(_Request(secure), response)
        finally:
            # What Django's handler does when a request ends (among others:
            # drop a connection that failed or outlived CONN_MAX_AGE).
            request_finished.send(sender=self.__class__)
        start_response(
            f"{response.status_code} {response.reason_phrase}", list(response.items())
        )
        return [response.content]


def _poll(environ, uuid: str):
    lookup = views.poll_lookup(environ.get("HTTP_IF_NONE_MATCH"))
    device, refusal = views.device_by_key(environ.get("HTTP_AUTHORIZATION"), uuid, lookup)
    return None if refusal else views.poll_response(device)


def _report(environ, uuid: str):
    device, refusal = views.device_by_key(
        environ.get("HTTP_AUTHORIZATION"), uuid, selectors.device_report_for_api_key
    )
    if refusal:
        return None
    declared = environ.get("CONTENT_LENGTH") or ""
    # Without a length, or over the limit: Django's answer (fleet.request_limits
    # gives every body one, or refuses it, before this runs under gunicorn).
    if not declared.isdigit() or int(declared) > settings.DEVICE_MAX_BODY_BYTES:
        return None
    raw = environ["wsgi.input"].read(int(declared))
    report = views.plain_report(raw) if len(raw) == int(declared) else None
    if report is None:
        # Django reads the body again, as the client sent it.
        environ["wsgi.input"] = io.BytesIO(raw)
        return None
    return views.answer_report(device, *report)


# What the fast path answers, by method: the response, or None for Django.
_ANSWERS = {"GET": _poll, "PATCH": _report}


def _is_secure(environ) -> bool:
    """As HttpRequest.is_secure decides: the proxy's header, when the settings
    name one and the request has it, outranks the scheme of the connection."""
    header = settings.SECURE_PROXY_SSL_HEADER
    if header:
        name, secure_value = header
        value = environ.get(name)
        if value is not None:
            return value.split(",", 1)[0].strip() == secure_value
    return environ.get("wsgi.url_scheme") == "https"


def _allowed_host(environ) -> bool:
    """As HttpRequest.get_host would accept it; anything unusual goes to Django."""
    host = environ.get("HTTP_HOST")
    if not host or settings.USE_X_FORWARDED_HOST:
        return False
    domain, _ = split_domain_port(host)
    return bool(domain) and validate_host(domain, settings.ALLOWED_HOSTS)
