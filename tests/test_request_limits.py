"""Request framing and limits before Django (issue 15, points 1 and 9):
chunked bodies are read, not dropped; a body over its endpoint's limit is a
413 with the JSON error body and no ERROR in the log; request lines and
header fields over the limits are refused by gunicorn, in JSON too."""

import json
import logging
import socket
from urllib.parse import urlsplit

import pytest

from devices.models import Device, DeviceService, DeviceTag
from tests.factories import DeviceFactory, DeviceServiceFactory
from tests import processes
from tests.wsgi_client import call_wsgi
from webhooks.models import WebhookDelivery

STATE = "/api/v1/device/{uuid}/state"
REPORT = {"target_version": 1, "services": {"web": {"status": "running", "health": "healthy"}}}


# --- point 1: chunked bodies ----------------------------------------------------------


@pytest.mark.django_db
def test_a_chunked_report_is_stored(settings):
    device = DeviceServiceFactory().device
    status, _, content = call_wsgi(
        "PATCH",
        STATE.format(uuid=device.uuid),
        json.dumps(REPORT).encode(),
        {"Authorization": f"Bearer {device.api_key}"},
        chunked=True,
    )
    assert status == 200, content
    service = DeviceService.objects.get(device=device, name="web")
    assert (service.reported_status, service.reported_health) == ("running", "healthy")
    assert Device.objects.get(pk=device.pk).reported_target_version == 1


@pytest.mark.django_db
def test_a_chunked_registration_keeps_its_name_and_tags():
    from devices.services import fleet_create

    _, key = fleet_create(slug="chunked", name="Chunked")
    body = json.dumps({"name": "pi-7", "tags": ["edge", "lab"]}).encode()
    status, _, content = call_wsgi(
        "POST", "/api/v1/device/register", body, {"Authorization": f"Bearer {key}"}, chunked=True
    )
    assert status == 201, content
    device = Device.objects.get(uuid=json.loads(content)["uuid"])
    assert device.name == "pi-7"
    assert sorted(DeviceTag.objects.filter(device=device).values_list("name", flat=True)) == [
        "edge",
        "lab",
    ]


@pytest.mark.django_db
def test_a_chunked_webhook_is_read(settings):
    settings.DOCKER_WEBHOOK_SECRET = "s3cret"
    body = json.dumps(
        {
            "push_data": {"tag": "v2", "pushed_at": 1, "pusher": "ci"},
            "repository": {"repo_name": "acme/app", "name": "app", "namespace": "acme"},
        }
    ).encode()
    status, _, content = call_wsgi(
        "POST", "/api/v1/webhooks/docker-registry", body, chunked=True, query="token=s3cret"
    )
    assert status == 202, content
    assert WebhookDelivery.objects.count() == 1


# --- point 9: 413 for every endpoint over its limit --------------------------------------

BIG = b'{"x": "' + b"a" * (3 * 1024 * 1024) + b'"}'


@pytest.mark.django_db
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize(
    "method, path",
    [
        ("PATCH", "/api/v1/device/{uuid}/state"),
        ("POST", "/api/v1/device/register"),
        ("POST", "/api/v1/webhooks/docker-registry"),
        ("POST", "/api/v1/devices/"),
        ("POST", "/api/v1/rollouts/"),
    ],
)
def test_a_3_mib_body_is_a_413_with_the_json_body_and_no_error_logged(
    caplog, method, path, chunked
):
    device = DeviceFactory()
    with caplog.at_level(logging.WARNING):
        status, headers, content = call_wsgi(
            method,
            path.format(uuid=device.uuid),
            BIG,
            {"Authorization": f"Bearer {device.api_key}"},
            chunked=chunked,
        )
    assert status == 413
    assert headers["Content-Type"] == "application/json"
    assert json.loads(content)["error"] == "too_large"
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


@pytest.mark.django_db
def test_an_agent_body_over_the_agent_limit_is_a_413(settings):
    settings.DEVICE_MAX_BODY_BYTES = 1000
    device = DeviceFactory()
    body = json.dumps({"services": {"web": {"image": "a" * 2000}}}).encode()
    status, _, content = call_wsgi(
        "PATCH", STATE.format(uuid=device.uuid), body, {"Authorization": f"Bearer {device.api_key}"}
    )
    assert status == 413
    assert "1,000 bytes" in json.loads(content)["detail"]


@pytest.mark.django_db
def test_the_test_client_path_answers_413_too(api_client, settings):
    settings.DEVICE_MAX_BODY_BYTES = 1000
    device = DeviceFactory()
    response = api_client.patch(
        STATE.format(uuid=device.uuid),
        data="x" * 2000,
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {device.api_key}",
    )
    assert response.status_code == 413
    assert response.json()["error"] == "too_large"


@pytest.mark.django_db
def test_django_s_own_limit_answers_413_not_400(admin_api, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response = admin_api.post(
        "/api/v1/devices/", data="{" + " " * 2000 + "}", content_type="application/json"
    )
    assert response.status_code == 413
    assert response.json()["error"] == "too_large"


# --- point 9: request lines and header fields, in gunicorn --------------------------------


@pytest.fixture
def web_server(tmp_path):
    """The Procfile's web process alone (gunicorn, fleet/gunicorn.conf.py) on
    the test database, at a free loopback port, two threads per worker."""
    with processes.web_process(tmp_path, WEB_THREADS="2") as base_url:
        yield base_url


def raw_request(base_url: str, request: bytes) -> tuple[int, dict, bytes]:
    address = urlsplit(base_url)
    with socket.create_connection((address.hostname, address.port), timeout=30) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
            if b"\r\n\r\n" in data:
                head, _, body = data.partition(b"\r\n\r\n")
                lengths = [
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ]
                if lengths and len(body) >= lengths[0]:
                    break
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


@pytest.mark.django_db(transaction=True)
def test_gunicorn_refuses_long_request_lines_and_headers_in_json(web_server):
    ok = f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
    assert raw_request(web_server, ok)[0] == 200
    long_line = f"GET /healthz?{'a' * 8200} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    status, headers, body = raw_request(web_server, long_line)
    assert status == 414
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body)["error"] == "request_line_too_long"
    # A header field of 16 KiB passes; one over it does not.
    fits = f"X-Pad: {'b' * (16 * 1024 - 16)}"
    request = f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n{fits}\r\nConnection: close\r\n\r\n"
    assert raw_request(web_server, request.encode())[0] == 200
    too_long = f"X-Pad: {'b' * (16 * 1024 + 10)}"
    request = f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n{too_long}\r\n\r\n"
    status, headers, body = raw_request(web_server, request.encode())
    assert status == 431
    assert json.loads(body)["error"] == "header_fields_too_large"


@pytest.mark.django_db(transaction=True)
def test_gunicorn_hands_a_chunked_report_to_the_app(web_server):
    device = DeviceServiceFactory().device
    payload = json.dumps(REPORT).encode()
    chunks = b"".join(
        f"{len(part):x}\r\n".encode() + part + b"\r\n" for part in (payload[:10], payload[10:])
    )
    request = (
        f"PATCH {STATE.format(uuid=device.uuid)} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {device.api_key}\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    ).encode() + chunks + b"0\r\n\r\n"
    status, _, body = raw_request(web_server, request)
    assert status == 200, body
    service = DeviceService.objects.get(device=device, name="web")
    assert service.reported_health == "healthy"
