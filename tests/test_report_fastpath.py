"""The report in WSGI, before Django (devices.fastpath): a report the view
would store as it is gets the view's own answer there, in the view's two
statements; every other report reaches Django whole and gets Django's
answer. Authentication is the views' own (devices.views.device_by_key)."""

import json

import pytest
from django.core.signals import request_started
from django.db import connection
from django.test.utils import CaptureQueriesContext

from devices.models import Device, DeviceService
from tests.factories import DeviceFactory, DeviceServiceFactory
from tests.wsgi_client import call_wsgi

pytestmark = pytest.mark.django_db

STATE = "/api/v1/device/{uuid}/state"
DIGEST = "sha256:" + "9f86d0" + "a" * 58
GOOD = {
    "target_version": 1,
    "services": {
        "web": {"image": "iotistic/myapp:v2", "digest": DIGEST, "status": "running"},
        "db": {"health": "healthy"},
    },
}
# Answers differ only in these: the date, and the length gunicorn computes.
IGNORED_HEADERS = {"Content-Length", "Date"}


class Answer:
    def __init__(self, status, headers, content):
        self.status_code, self.content = status, content
        self.headers = {k: v for k, v in headers.items() if k not in IGNORED_HEADERS}

    def json(self):
        return json.loads(self.content)


def fast_report(device, body=GOOD, key=None, uuid=None, **headers):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    if key is not False:
        headers.setdefault("Authorization", f"Bearer {key or device.api_key}")
    path = STATE.format(uuid=uuid or device.uuid)
    return Answer(*call_wsgi("PATCH", path, body=raw, headers=headers))


def django_report(client, device, body=GOOD, key=None, uuid=None):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    extra = {} if key is False else {"HTTP_AUTHORIZATION": f"Bearer {key or device.api_key}"}
    response = client.patch(
        STATE.format(uuid=uuid or device.uuid), data=raw, content_type="application/json", **extra
    )
    headers = {k: v for k, v in response.headers.items() if k not in IGNORED_HEADERS}
    return response.status_code, headers, response.content


def stored(device):
    services = DeviceService.objects.filter(device=device).order_by("name")
    fields = ("name", "reported_image", "reported_tag", "reported_digest", "reported_status",
              "reported_health")
    version = Device.objects.get(pk=device.pk).reported_target_version
    return list(services.values_list(*fields)), version


def entered_django(call):
    started = []

    def count(**kwargs):
        started.append(1)

    request_started.connect(count)
    try:
        return call(), bool(started)
    finally:
        request_started.disconnect(count)


def test_a_plain_report_is_answered_and_stored_as_the_view_does(api_client):
    by_view, by_fast_path = DeviceServiceFactory().device, DeviceServiceFactory().device
    Device.objects.filter(pk__in=[by_view.pk, by_fast_path.pk]).update(target_version=7)
    status, headers, content = django_report(api_client, by_view)
    (answer, in_django) = entered_django(lambda: fast_report(by_fast_path))
    assert not in_django
    assert (answer.status_code, answer.headers, answer.content) == (status, headers, content)
    assert answer.json() == {"accepted": True, "target_version": 7}
    assert stored(by_fast_path) == stored(by_view)
    assert stored(by_fast_path)[0][1] == (
        "web", "docker.io/iotistic/myapp", "v2", DIGEST, "running", None
    )


@pytest.mark.parametrize("services", [1, 12])
def test_a_plain_report_is_two_statements_in_the_fast_path(services):
    device = DeviceFactory()
    body = {"services": {f"svc-{n}": {"status": "running"} for n in range(services)}}
    with CaptureQueriesContext(connection) as queries:
        answer, in_django = entered_django(lambda: fast_report(device, body))
    assert answer.status_code == 200
    assert not in_django
    assert len(queries.captured_queries) == 2
    running = DeviceService.objects.filter(device=device, reported_status="running")
    assert running.count() == services


def test_an_empty_report_is_a_sign_of_life_in_the_fast_path():
    device = DeviceFactory()
    answer, in_django = entered_django(lambda: fast_report(device, b""))
    assert (answer.status_code, in_django) == (200, False)
    assert Device.objects.get(pk=device.pk).last_report_at is not None


def other_device_key(device):
    return DeviceFactory().api_key


# Case -> the request, and Django's status for it.
NOT_PLAIN = {
    "no key": (dict(key=False), 401),
    "unknown key": (dict(key="unknown"), 401),
    "another device's key": (dict(key=other_device_key), 404),
    "malformed json": (dict(body=b"{not json"), 400),
    "not an object": (dict(body=b"[1]"), 400),
    "wrong type": (dict(body={"target_version": "7"}), 400),
    "bad service": (dict(body={"services": {"web": {"status": "bogus"}}}), 400),
    "bad reference": (dict(body={"services": {"web": {"image": "not a ref!!"}}}), 400),
    "bad name": (dict(body={"services": {"bad name!": {}}}), 400),
    # Valid, but DRF strips it: only the serializer says what is stored.
    "text DRF strips": (dict(body={"services": {"web": {"tag": " v1"}}}), 200),
}


@pytest.mark.parametrize("case", NOT_PLAIN)
def test_every_other_report_gets_djangos_answer_with_its_body_whole(api_client, case):
    kwargs, expected = NOT_PLAIN[case]
    by_view, by_wsgi = (DeviceServiceFactory(reported_status="running").device for _ in "ab")
    before = stored(by_wsgi)
    view_kwargs, wsgi_kwargs = dict(kwargs), dict(kwargs)
    if callable(kwargs.get("key")):
        view_kwargs["key"], wsgi_kwargs["key"] = kwargs["key"](by_view), kwargs["key"](by_wsgi)
    status, headers, content = django_report(api_client, by_view, **view_kwargs)
    answer, in_django = entered_django(lambda: fast_report(by_wsgi, **wsgi_kwargs))
    assert in_django
    assert status == expected
    assert (answer.status_code, answer.headers, answer.content) == (status, headers, content)
    assert stored(by_wsgi) == (before if expected != 200 else stored(by_view))


def test_a_report_over_the_service_cap_gets_the_views_refusal_in_two_statements(
    api_client, settings
):
    settings.DEVICE_MAX_SERVICES = 3

    def device_with_three_services():
        device = DeviceServiceFactory(name="web").device
        for name in ("db", "old"):
            DeviceServiceFactory(device=device, name=name)
        return device

    by_view, by_wsgi = device_with_three_services(), device_with_three_services()
    # Three stored and up to three sent: only the exact count can tell.
    body = {"services": {"web": {"status": "running"}, "db": {}, "cache": {}}}
    status, headers, content = django_report(api_client, by_view, body)
    with CaptureQueriesContext(connection) as queries:
        answer, in_django = entered_django(lambda: fast_report(by_wsgi, body))
    assert not in_django
    assert (answer.status_code, answer.headers, answer.content) == (status, headers, content)
    assert answer.json()["error"] == "too_many_services"
    # Authentication and the exact count; nothing stored.
    assert len(queries.captured_queries) == 2
    assert DeviceService.objects.filter(device=by_wsgi, reported_status="running").count() == 0


def test_a_report_near_the_service_cap_is_counted_and_stored_in_three_statements(settings):
    settings.DEVICE_MAX_SERVICES = 3
    device = DeviceServiceFactory(name="web").device
    for name in ("db", "old"):
        DeviceServiceFactory(device=device, name=name)
    # Three stored and one sent: within the cap, which only the exact count
    # tells; the fast path counts and stores (no second authentication in Django).
    with CaptureQueriesContext(connection) as queries:
        answer, in_django = entered_django(
            lambda: fast_report(device, {"services": {"web": {"status": "running"}}})
        )
    assert (answer.status_code, in_django) == (200, False)
    assert len(queries.captured_queries) == 3
    assert DeviceService.objects.get(device=device, name="web").reported_status == "running"


@pytest.mark.parametrize(
    ("scheme", "forwarded", "expected"),
    [("https", "http", 301), ("http", "https", 200), ("https", None, 200)],
)
def test_the_proxys_header_outranks_the_connections_scheme_as_in_django(
    settings, scheme, forwarded, expected
):
    from django.core.wsgi import get_wsgi_application

    from devices.fastpath import PollFastPath

    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    app = PollFastPath(get_wsgi_application())
    device = DeviceFactory()
    headers = {"Authorization": f"Bearer {device.api_key}"}
    if forwarded:
        headers["X-Forwarded-Proto"] = forwarded
    raw = json.dumps(GOOD).encode()
    path = STATE.format(uuid=device.uuid)
    status = call_wsgi("PATCH", path, body=raw, headers=headers, app=app, scheme=scheme)[0]
    assert status == expected
    assert (stored(device)[1] == 1) == (expected == 200)


def test_a_chunked_plain_report_is_stored_by_the_fast_path(settings):
    device = DeviceFactory()
    raw = json.dumps(GOOD).encode()

    def call():
        return call_wsgi(
            "PATCH", STATE.format(uuid=device.uuid), body=raw, chunked=True,
            headers={"Authorization": f"Bearer {device.api_key}"},
        )

    (status, _, content), in_django = entered_django(call)
    assert (status, in_django) == (200, False)
    assert stored(device)[1] == 1


def test_a_plain_http_report_with_the_https_redirect_on_is_redirected_by_django(settings):
    from django.core.wsgi import get_wsgi_application

    from devices.fastpath import PollFastPath

    settings.SECURE_SSL_REDIRECT = True
    app = PollFastPath(get_wsgi_application())
    device = DeviceFactory()
    raw = json.dumps(GOOD).encode()
    headers = {"Authorization": f"Bearer {device.api_key}"}
    path = STATE.format(uuid=device.uuid)
    assert call_wsgi("PATCH", path, body=raw, headers=headers, app=app)[0] == 301
    assert stored(device)[0] == []
    status, answer_headers, _ = call_wsgi(
        "PATCH", path, body=raw, headers={**headers, "X-Forwarded-Proto": "https"}, app=app
    )
    assert status == 200
    assert answer_headers["Strict-Transport-Security"].startswith("max-age=")
