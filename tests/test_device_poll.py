"""GET /api/v1/device/{uuid}/state: the agent's poll (CONTRACT.md section 2)."""

from datetime import timedelta

import pytest
from django.utils import timezone

from devices.keys import hash_key
from devices.models import Device
from tests.factories import DeviceFactory, DeviceServiceFactory
from tests.rollout_helpers import IMAGE, build_fleet, policy, push

pytestmark = pytest.mark.django_db


def poll(client, device, path_uuid=None, **headers):
    return client.get(
        f"/api/v1/device/{path_uuid or device.uuid}/state",
        HTTP_AUTHORIZATION=f"Bearer {device.api_key}",
        **headers,
    )


def age_last_seen(device, seconds):
    then = timezone.now() - timedelta(seconds=seconds)
    Device.objects.filter(pk=device.pk).update(last_seen_at=then)
    return then


def last_seen(device):
    return Device.objects.values_list("last_seen_at", flat=True).get(pk=device.pk)


def deploy(admin_api, device, tag):
    response = admin_api.patch(
        f"/api/v1/devices/{device.uuid}/",
        {"services": {"web": {"image": "iotistic/myapp", "tag": tag}}},
        format="json",
    )
    assert response.status_code == 200, response.content
    return response


def test_it_answers_200_then_304_with_the_etag(api_client):
    service = DeviceServiceFactory()
    first = poll(api_client, service.device)
    assert first.status_code == 200
    assert first.json()["services"]["web"]["image"] == "docker.io/iotistic/myapp"
    second = poll(api_client, service.device, HTTP_IF_NONE_MATCH=first["ETag"])
    assert second.status_code == 304
    assert second.content == b""


def test_it_sends_an_etag_and_no_cache(api_client):
    response = poll(api_client, DeviceFactory())
    assert response["ETag"].startswith('"') and response["ETag"].endswith('"')
    assert response["Cache-Control"] == "no-cache"


def test_it_answers_the_body_of_the_contract(api_client):
    service = DeviceServiceFactory(target_image="docker.io/library/postgres", target_tag="16")
    device = service.device
    assert poll(api_client, device).json() == {
        "uuid": str(device.uuid),
        "target_version": 1,
        "services": {
            "web": {
                "image": "docker.io/library/postgres",
                "tag": "16",
                "digest": None,
                "rollout_id": None,
                "update_strategy": "download-then-kill",
                "stop_timeout_seconds": 10,
            }
        },
        "poll_interval_seconds": 60,
    }


def test_it_tells_the_device_how_the_rollout_swaps_containers_with_a_new_etag(api_client):
    fleet = build_fleet(1)
    policy(device_update_strategy="kill-then-download", stop_timeout_seconds=45)
    device = Device.objects.get(fleet=fleet)
    device.api_key = "k" * 43
    Device.objects.filter(pk=device.pk).update(api_key_hash=hash_key(device.api_key))
    before = poll(api_client, device)

    rollout = push(now=timezone.now())
    after = poll(api_client, device, HTTP_IF_NONE_MATCH=before["ETag"])

    assert after.status_code == 200
    assert after["ETag"] != before["ETag"]
    assert after.json()["services"]["web"] == {
        "image": IMAGE,
        "tag": "v2.0.0",
        "digest": None,
        "rollout_id": str(rollout.pk),
        "update_strategy": "kill-then-download",
        "stop_timeout_seconds": 45,
    }


def test_it_leaves_out_services_without_a_target(api_client):
    service = DeviceServiceFactory(target_image=None, target_tag=None, reported_image="x")
    assert poll(api_client, service.device).json()["services"] == {}


@pytest.mark.parametrize(
    "if_none_match",
    ["{etag}", "W/{etag}", '"other", {etag}', '"a", "b",{etag}', 'W/"a", W/{etag}', "*"],
)
def test_it_answers_304_to_every_form_of_if_none_match(api_client, if_none_match):
    device = DeviceFactory()
    etag = poll(api_client, device)["ETag"]
    response = poll(api_client, device, HTTP_IF_NONE_MATCH=if_none_match.format(etag=etag))
    assert response.status_code == 304
    assert response.content == b""
    assert response["ETag"] == etag


@pytest.mark.parametrize("if_none_match", ['"a", "b"', '"1"', "W/", ""])
def test_it_answers_200_when_no_etag_matches(api_client, if_none_match):
    response = poll(api_client, DeviceFactory(), HTTP_IF_NONE_MATCH=if_none_match)
    assert response.status_code == 200
    assert response.json()["target_version"] == 1


def test_it_answers_200_with_a_new_etag_after_a_manual_deployment(api_client, admin_api):
    device = DeviceServiceFactory().device
    first = poll(api_client, device)
    deploy(admin_api, device, "v2.0.0")
    second = poll(api_client, device, HTTP_IF_NONE_MATCH=first["ETag"])
    assert second.status_code == 200
    assert second["ETag"] != first["ETag"]
    assert second.json()["target_version"] > first.json()["target_version"]
    assert second.json()["services"]["web"]["tag"] == "v2.0.0"
    assert poll(api_client, device, HTTP_IF_NONE_MATCH=second["ETag"]).status_code == 304


@pytest.mark.parametrize(
    "spelling", [str.upper, lambda text: text.replace("-", ""), "{%s}".__mod__]
)
def test_it_accepts_other_spellings_of_the_uuid(api_client, spelling):
    device = DeviceFactory()
    response = poll(api_client, device, path_uuid=spelling(str(device.uuid)))
    assert response.status_code == 200
    assert response.json()["uuid"] == str(device.uuid)


def test_it_writes_last_seen_at_on_the_first_poll(api_client):
    device = DeviceFactory()
    before = timezone.now()
    poll(api_client, device)
    assert last_seen(device) >= before


def test_it_does_not_rewrite_a_fresh_last_seen_at(api_client):
    device = DeviceFactory()
    then = age_last_seen(device, 10)
    poll(api_client, device)
    assert last_seen(device) == then


def test_it_rewrites_last_seen_at_after_a_poll_interval(api_client):
    device = DeviceFactory()
    then = age_last_seen(device, 61)
    poll(api_client, device)
    assert last_seen(device) > then + timedelta(seconds=60)


def test_it_updates_last_seen_at_on_a_304_too(api_client):
    device = DeviceFactory()
    etag = poll(api_client, device)["ETag"]
    then = age_last_seen(device, 3600)
    assert poll(api_client, device, HTTP_IF_NONE_MATCH=etag).status_code == 304
    assert last_seen(device) > then


# --- Authentication (CONTRACT.md section 1) ---


def assert_json_error(response, status, error):
    assert response.status_code == status
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert body["error"] == error
    assert isinstance(body["detail"], str) and body["detail"]


@pytest.mark.parametrize(
    "authorization", [None, "", "Bearer", "Bearer   ", "Token abc", "Basic eDp5"]
)
def test_it_answers_401_without_a_bearer_key(api_client, authorization):
    device = DeviceFactory()
    headers = {} if authorization is None else {"HTTP_AUTHORIZATION": authorization}
    response = api_client.get(f"/api/v1/device/{device.uuid}/state", **headers)
    assert_json_error(response, 401, "not_authenticated")
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_it_answers_401_to_an_unknown_key(api_client):
    device = DeviceFactory()
    response = api_client.get(
        f"/api/v1/device/{device.uuid}/state", HTTP_AUTHORIZATION="Bearer not-a-key"
    )
    assert_json_error(response, 401, "not_authenticated")


def test_it_answers_404_to_another_devices_key(api_client):
    device, other = DeviceFactory(), DeviceFactory()
    response = poll(api_client, other, path_uuid=device.uuid)
    assert_json_error(response, 404, "not_found")
    assert str(device.uuid) not in response.content.decode()


@pytest.mark.parametrize("bad_uuid", ["not-a-uuid", "1234", "zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz"])
def test_it_answers_404_to_an_invalid_uuid_with_a_valid_key(api_client, bad_uuid):
    response = poll(api_client, DeviceFactory(), path_uuid=bad_uuid)
    assert_json_error(response, 404, "not_found")


def test_it_answers_405_json_to_other_methods(api_client):
    device = DeviceFactory()
    response = api_client.post(
        f"/api/v1/device/{device.uuid}/state", HTTP_AUTHORIZATION=f"Bearer {device.api_key}"
    )
    assert_json_error(response, 405, "method_not_allowed")
    assert "GET" in response["Allow"]


# --- Query counts: the poll is the hottest request in the product ---


def test_it_answers_a_304_with_one_query(api_client, django_assert_num_queries):
    device = DeviceServiceFactory().device
    etag = poll(api_client, device)["ETag"]
    with django_assert_num_queries(1):
        assert poll(api_client, device, HTTP_IF_NONE_MATCH=etag).status_code == 304


def test_it_answers_a_200_with_one_query(api_client, django_assert_num_queries):
    device = DeviceServiceFactory().device
    DeviceServiceFactory(device=device, name="db")
    age_last_seen(device, 1)
    with django_assert_num_queries(1):
        assert poll(api_client, device).status_code == 200


def test_it_adds_one_write_when_last_seen_at_is_stale(api_client, django_assert_num_queries):
    device = DeviceServiceFactory().device
    etag = poll(api_client, device)["ETag"]
    age_last_seen(device, 120)
    with django_assert_num_queries(2) as captured:
        assert poll(api_client, device, HTTP_IF_NONE_MATCH=etag).status_code == 304
    assert captured.captured_queries[1]["sql"].startswith('UPDATE "devices_device"')
    age_last_seen(device, 120)
    with django_assert_num_queries(2):
        assert poll(api_client, device).status_code == 200
