"""The agent endpoints' hot path (issue 11): statements per request, one
implementation of device authentication, the middleware they skip, the
health check they skip, and one consistent read per poll (issue 15, point 3)."""

import json
import threading
from datetime import timedelta

import pytest
from django.db import connection, connections, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from devices.models import Device, DeviceService
from tests.factories import DeviceFactory, DeviceServiceFactory
from tests.wsgi_client import call_wsgi

STATE = "/api/v1/device/{uuid}/state"
REPORT = {"target_version": 1, "services": {"web": {"status": "running", "health": "healthy"}}}


def poll(client, device, etag=None, key=None, uuid=None):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {key or device.api_key}"}
    if etag:
        headers["HTTP_IF_NONE_MATCH"] = etag
    return client.get(STATE.format(uuid=uuid or device.uuid), **headers)


class WsgiAnswer:
    """fleet.wsgi's answer, read like a test client's response."""

    def __init__(self, status, headers, content):
        self.status_code, self.headers, self.content = status, headers, content

    def __getitem__(self, name):
        return self.headers[name]

    def json(self):
        return json.loads(self.content)


def fast_poll(device, etag=None, key=None, uuid=None, app=None, **headers):
    """A poll through fleet.wsgi.application, where devices.fastpath answers."""
    headers = {"Authorization": f"Bearer {key or device.api_key}", **headers}
    if etag:
        headers["If-None-Match"] = etag
    path = STATE.format(uuid=uuid or device.uuid)
    extra = {"app": app} if app else {}
    return WsgiAnswer(*call_wsgi("GET", path, headers=headers, **extra))


def report(client, device, body=REPORT, key=None, uuid=None):
    return client.patch(
        STATE.format(uuid=uuid or device.uuid),
        data=json.dumps(body),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {key or device.api_key}",
    )


def device_with_services(count: int) -> Device:
    device = DeviceFactory()
    for number in range(count):
        DeviceServiceFactory(device=device, name=f"svc-{number}")
    # Seen just now: a steady-state poll has no presence to record.
    Device.objects.filter(pk=device.pk).update(last_seen_at=timezone.now())
    return device


def statements(request) -> tuple[object, list[str]]:
    with CaptureQueriesContext(connection) as queries:
        response = request()
    return response, [query["sql"] for query in queries.captured_queries]


# --- statements per request ---------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("services", [1, 12])
def test_a_304_poll_is_one_statement_however_many_services(api_client, services):
    device = device_with_services(services)
    etag = poll(api_client, device)["ETag"]
    response, sql = statements(lambda: poll(api_client, device, etag))
    assert response.status_code == 304
    assert len(sql) == 1, sql


@pytest.mark.django_db
@pytest.mark.parametrize("services", [1, 12])
@pytest.mark.parametrize("etag", [None, '"0.60"'], ids=["no etag", "stale etag"])
def test_a_200_poll_is_one_statement_however_many_services(api_client, services, etag):
    device = device_with_services(services)
    response, sql = statements(lambda: poll(api_client, device, etag))
    assert response.status_code == 200
    assert len(response.json()["services"]) == services
    assert len(sql) == 1, sql


@pytest.mark.django_db
@pytest.mark.parametrize("services", [1, 12])
def test_a_report_is_two_statements_however_many_services(api_client, services):
    device = device_with_services(services)
    body = {
        "target_version": 1,
        "services": {f"svc-{n}": {"status": "running", "health": "healthy"} for n in range(services)},
    }
    response, sql = statements(lambda: report(api_client, device, body))
    assert response.status_code == 200
    assert len(sql) == 2, sql
    assert DeviceService.objects.filter(device=device, reported_health="healthy").count() == services


@pytest.mark.django_db
def test_a_report_of_two_shapes_is_still_two_statements_and_stores_both(api_client):
    device = device_with_services(2)
    body = {
        "services": {
            "svc-0": {"status": "exited"},
            "svc-1": {"image": "docker.io/library/redis", "tag": "7", "status": "running"},
        }
    }
    response, sql = statements(lambda: report(api_client, device, body))
    assert response.status_code == 200
    assert len(sql) == 2, sql
    rows = dict(
        DeviceService.objects.filter(device=device).values_list("name", "reported_status")
    )
    assert rows == {"svc-0": "exited", "svc-1": "running"}


# --- one implementation of device authentication --------------------------------

PATHS = {
    "poll 304 path": lambda client, device, **kw: poll(client, device, '"1.60"', **kw),
    "poll 200 path": lambda client, device, **kw: poll(client, device, **kw),
    "report": lambda client, device, **kw: report(client, device, **kw),
    "fast path 304": lambda client, device, **kw: fast_poll(device, '"1.60"', **kw),
    "fast path 200": lambda client, device, **kw: fast_poll(device, **kw),
}


@pytest.mark.django_db
@pytest.mark.parametrize("path", PATHS)
def test_every_agent_path_refuses_a_missing_key_with_401(api_client, path):
    device = DeviceFactory()
    response = PATHS[path](api_client, device, key=" ")
    assert response.status_code == 401
    assert response.json()["error"] == "not_authenticated"
    assert response["WWW-Authenticate"] == 'Bearer realm="device"'


@pytest.mark.django_db
@pytest.mark.parametrize("path", PATHS)
def test_every_agent_path_serves_the_device_its_own_key_names(api_client, path):
    device = DeviceServiceFactory().device
    response = PATHS[path](api_client, device)
    assert response.status_code in (200, 304)
    if "304" in path:
        assert response.status_code == 304
        assert response["ETag"] == '"1.60"'


@pytest.mark.django_db
@pytest.mark.parametrize("path", PATHS)
def test_every_agent_path_refuses_an_unknown_key_with_401(api_client, path):
    device = DeviceFactory()
    response = PATHS[path](api_client, device, key="not-a-key-of-anyone")
    assert response.status_code == 401
    assert response.json()["error"] == "not_authenticated"


@pytest.mark.django_db
@pytest.mark.parametrize("path", PATHS)
def test_every_agent_path_answers_404_to_a_key_of_another_device(api_client, path):
    device, other = DeviceFactory(), DeviceFactory()
    response = PATHS[path](api_client, device, key=other.api_key)
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


@pytest.mark.django_db
@pytest.mark.parametrize("path", PATHS)
def test_every_agent_path_looks_the_key_up_by_its_hash(api_client, path):
    device = DeviceFactory()
    Device.objects.filter(pk=device.pk).update(api_key_hash=device.api_key)
    assert PATHS[path](api_client, device).status_code == 401


# --- middleware and health checks ------------------------------------------------

SEEN = []


class RecordingMiddleware:
    """Put at the end of MIDDLEWARE: records the paths that went through it."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        SEEN.append(request.path)
        return self.get_response(request)


@pytest.mark.django_db
def test_agent_endpoints_skip_the_middleware_they_do_not_need(settings, admin_api):
    from rest_framework.test import APIClient

    settings.MIDDLEWARE = [*settings.MIDDLEWARE, "tests.test_agent_hot_path.RecordingMiddleware"]
    SEEN.clear()
    client = APIClient()
    device = DeviceFactory()
    assert poll(client, device).status_code == 200
    assert report(client, device).status_code == 200
    assert client.get("/healthz").status_code == 200
    assert SEEN == ["/healthz"]


@pytest.mark.django_db
def test_agent_answers_keep_the_security_headers(api_client):
    response = poll(api_client, DeviceFactory())
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"


@pytest.mark.django_db
def test_agent_endpoints_refuse_a_host_outside_allowed_hosts(api_client):
    device = DeviceFactory()
    response = api_client.get(
        STATE.format(uuid=device.uuid),
        HTTP_AUTHORIZATION=f"Bearer {device.api_key}",
        HTTP_HOST="evil.example.com",
    )
    assert response.status_code == 400


@pytest.mark.django_db
def test_the_agent_endpoints_make_no_health_check_round_trip(api_client, admin_api):
    database = connections["default"]
    checks = []
    original_is_usable, was_enabled = database.is_usable, database.health_check_enabled

    def counting_is_usable():
        checks.append(1)
        return original_is_usable()

    database.is_usable, database.health_check_enabled = counting_is_usable, True
    try:
        device = DeviceFactory()
        for request in (lambda: poll(api_client, device), lambda: report(api_client, device)):
            database.health_check_done = False
            assert request().status_code == 200
        assert checks == []
        # The operator API keeps Django's check (the spy does see it).
        database.health_check_done = False
        assert admin_api.get("/api/v1/devices/").status_code == 200
        assert checks == [1]
    finally:
        del database.is_usable
        database.health_check_enabled = was_enabled


@pytest.mark.django_db(transaction=True)
def test_a_poll_on_a_dead_connection_reconnects_and_answers(api_client):
    device = DeviceFactory()
    connection.ensure_connection()
    # The server went away (a restart, an idle timeout) behind Django's back.
    connection.connection.close()
    response = poll(api_client, device)
    assert response.status_code == 200
    assert response.json()["uuid"] == str(device.uuid)


# --- one consistent read per poll (issue 15, point 3) --------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_poll_during_a_retarget_answers_the_old_state_whole_and_without_waiting(api_client):
    service = DeviceServiceFactory(target_tag="v1")
    device = service.device
    first = poll(api_client, device)
    # Presence is due, so the poll would write the row the writer locks if
    # it waited for locks.
    Device.objects.filter(pk=device.pk).update(last_seen_at=timezone.now() - timedelta(hours=1))
    holding, release, done = threading.Event(), threading.Event(), threading.Event()

    def retarget_and_hold():
        # As the engine does: the service's target, then the device's
        # version, in one transaction held open while the device polls.
        try:
            with transaction.atomic():
                DeviceService.objects.filter(pk=service.pk).update(target_tag="v2")
                Device.objects.filter(pk=device.pk).update(target_version=2)
                holding.set()
                release.wait(timeout=30)
        finally:
            connections.close_all()
            done.set()

    writer = threading.Thread(target=retarget_and_hold)
    writer.start()
    try:
        assert holding.wait(timeout=10)
        during = poll(api_client, device)
        assert not done.is_set(), "the poll waited for the writer's transaction"
    finally:
        release.set()
        writer.join(timeout=30)
    assert during.status_code == 200
    assert during["ETag"] == first["ETag"]
    assert during.json() == first.json()
    after = poll(api_client, device, etag=first["ETag"])
    assert after.status_code == 200
    assert after["ETag"] != first["ETag"]
    assert after.json()["target_version"] == 2
    assert after.json()["services"]["web"]["tag"] == "v2"


# --- the poll in WSGI, before Django (devices.fastpath) ----------------------------------

IGNORED_HEADERS = {"Content-Length", "Date"}


def comparable(headers) -> dict:
    return {name: value for name, value in dict(headers).items() if name not in IGNORED_HEADERS}


@pytest.mark.django_db
@pytest.mark.parametrize("etag", [None, '"1.60"', '"0.60"'], ids=["no etag", "current", "stale"])
def test_the_fast_path_answers_exactly_as_the_django_view(api_client, etag):
    device = DeviceServiceFactory().device
    Device.objects.filter(pk=device.pk).update(last_seen_at=timezone.now())
    django = poll(api_client, device, etag)
    fast = fast_poll(device, etag)
    assert fast.status_code == django.status_code
    assert fast.content == django.content
    assert comparable(fast.headers) == comparable(django.headers)


@pytest.mark.django_db
@pytest.mark.parametrize("services", [1, 12])
def test_the_fast_path_is_one_statement_and_never_enters_django(services):
    from django.core.signals import request_started

    device = device_with_services(services)
    started = []

    def count(**kwargs):
        started.append(1)

    request_started.connect(count)
    try:
        for etag in (None, '"1.60"'):
            with CaptureQueriesContext(connection) as queries:
                answer = fast_poll(device, etag)
            assert answer.status_code == (304 if etag else 200)
            assert len(queries.captured_queries) == 1
    finally:
        request_started.disconnect(count)
    assert started == []


@pytest.mark.django_db
def test_the_fast_path_records_presence(settings):
    device = DeviceFactory()
    assert fast_poll(device).status_code == 200
    assert Device.objects.get(pk=device.pk).last_seen_at is not None


@pytest.mark.django_db
def test_a_plain_http_poll_with_the_https_redirect_on_is_redirected_by_django(settings):
    from django.core.wsgi import get_wsgi_application

    from devices.fastpath import PollFastPath

    settings.SECURE_SSL_REDIRECT = True
    # Built as fleet.wsgi builds it, under these settings.
    app = PollFastPath(get_wsgi_application())
    device = DeviceFactory()
    assert fast_poll(device, app=app).status_code == 301
    # Behind the TLS proxy: answered, with the HSTS header Django would add.
    answer = fast_poll(device, app=app, **{"X-Forwarded-Proto": "https"})
    assert answer.status_code == 200
    assert answer["Strict-Transport-Security"].startswith("max-age=")


@pytest.mark.django_db
def test_a_poll_for_a_host_outside_allowed_hosts_is_refused_by_django():
    device = DeviceFactory()
    assert fast_poll(device, Host="evil.example.com").status_code == 400
