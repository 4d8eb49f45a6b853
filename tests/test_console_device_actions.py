"""The device page's buttons: per service roll back, pin and unpin, and roll
back every service; each asks first, posts with its CSRF token, and needs
the operator role (or `change_device`)."""

import re

import pytest
from django.test import Client

from devices.models import Device, DeviceService, ServiceHistory
from devices.services import ServiceChange, ServiceTarget, device_change_services, device_create

from .console_data import PASSWORD, VIEWER_PERMISSIONS, member_of, user_with
from .factories import FleetFactory

pytestmark = pytest.mark.django_db

IMAGE = "docker.io/iotistic/myapp"


@pytest.fixture
def device() -> Device:
    made, _ = device_create(
        fleet=FleetFactory(),
        name="edge-1",
        targets={"web": ServiceTarget(IMAGE, "1.0"), "db": ServiceTarget("docker.io/library/postgres", "15")},
    )
    device_change_services(device_id=made.pk, changes={"web": ServiceChange(tag="1.1"), "db": ServiceChange(tag="16")})
    return made


def client_for(user) -> Client:
    client = Client(enforce_csrf_checks=True)
    assert client.login(username=user.username, password=PASSWORD)
    return client


def page(device) -> str:
    return f"/admin/devices/device/{device.pk}/change/"


def act(device, name: str, service: str = "") -> str:
    return f"/admin/devices/device/{device.pk}/act/{name}/" + (f"?service={service}" if service else "")


def buttons(html: str) -> set[tuple[str, str]]:
    """(action, service) of each button; service "" for every service."""
    found = set()
    for tag in re.findall(r"<a [^>]*data-device-action=[^>]*>", html):
        action = re.search(r'data-device-action="([a-z]+)"', tag).group(1)
        service = re.search(r'data-service="([^"]+)"', tag)
        found.add((action, service.group(1) if service else ""))
    return found


def confirm(client: Client, url: str, service: str = ""):
    """Open the confirmation page, then press its button (with its token)."""
    confirmation = client.get(url)
    assert confirmation.status_code == 200
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', confirmation.content.decode()).group(1)
    body = {"csrfmiddlewaretoken": token, **({"service": service} if service else {})}
    return client.post(url.split("?")[0], body)


@pytest.fixture
def operator(device) -> Client:
    return client_for(member_of(device.fleet, "operator", "fleet-operator"))


def test_it_shows_an_operator_a_button_per_service_and_one_for_every_service(operator, device):
    assert buttons(operator.get(page(device)).content.decode()) == {
        ("rollback", ""), ("rollback", "db"), ("rollback", "web"), ("pin", "db"), ("pin", "web"),
    }


def test_it_asks_before_rolling_back_one_service_and_rolls_it_back(operator, device):
    confirmation = operator.get(act(device, "rollback", "web")).content.decode()
    assert "Yes, roll back" in confirmation and "<code>web</code>" in confirmation
    assert DeviceService.objects.get(device=device, name="web").target_tag == "1.1"
    response = confirm(operator, act(device, "rollback", "web"), "web")
    assert (response.status_code, response["Location"]) == (302, page(device))
    tags = dict(DeviceService.objects.filter(device=device).values_list("name", "target_tag"))
    assert tags == {"web": "1.0", "db": "16"}
    assert ServiceHistory.objects.filter(device=device, service="web").latest("id").source == "rollback"


def test_it_rolls_back_every_service(operator, device):
    confirm(operator, act(device, "rollback"))
    tags = dict(DeviceService.objects.filter(device=device).values_list("name", "target_tag"))
    assert tags == {"web": "1.0", "db": "15"}


def test_it_pins_and_unpins_a_service_keeping_its_target(operator, device):
    version = Device.objects.get(pk=device.pk).target_version
    confirm(operator, act(device, "pin", "web"), "web")
    web = DeviceService.objects.get(device=device, name="web")
    assert (web.pinned, web.target_tag) == (True, "1.1")
    assert ("unpin", "web") in buttons(operator.get(page(device)).content.decode())
    assert 'data-pinned="true"' in operator.get(page(device)).content.decode()
    confirm(operator, act(device, "unpin", "web"), "web")
    web.refresh_from_db()
    assert (web.pinned, web.target_tag) == (False, "1.1")
    assert Device.objects.get(pk=device.pk).target_version == version


def test_it_says_so_when_there_is_nothing_to_roll_back_to(operator, device):
    made, _ = device_create(fleet=device.fleet, targets={"web": ServiceTarget(IMAGE, "1.0")})
    response = confirm(operator, act(made, "rollback", "web"), "web")
    assert "No service has a previous version" in operator.get(response["Location"]).content.decode()


def test_it_refuses_a_post_without_its_csrf_token(operator, device):
    assert operator.post(act(device, "rollback"), {"service": "web"}).status_code == 403
    assert DeviceService.objects.get(device=device, name="web").target_tag == "1.1"


def test_a_viewer_sees_no_button_and_gets_403(device):
    for user in (member_of(device.fleet, "viewer", "fleet-viewer"), user_with("global-viewer", *VIEWER_PERMISSIONS)):
        client = client_for(user)
        html = client.get(page(device)).content.decode()
        assert buttons(html) == set()
        assert client.get(act(device, "pin", "web")).status_code == 403
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html)
        body = {"csrfmiddlewaretoken": token.group(1) if token else "", "service": "web"}
        assert client.post(act(device, "pin"), body).status_code == 403
    assert not DeviceService.objects.get(device=device, name="web").pinned


def test_global_users_with_change_device_get_the_buttons(device):
    client = client_for(user_with("global-operator", *VIEWER_PERMISSIONS, "devices.change_device"))
    assert ("rollback", "web") in buttons(client.get(page(device)).content.decode())
    confirm(client, act(device, "pin", "db"), "db")
    assert DeviceService.objects.get(device=device, name="db").pinned


def test_it_answers_404_for_an_unknown_action_service_or_device(operator, device):
    assert operator.get(act(device, "explode", "web")).status_code == 404
    assert operator.get(act(device, "pin")).status_code == 404  # a pin names its service
    assert operator.get("/admin/devices/device/999999/act/rollback/").status_code == 404
    other, _ = device_create(fleet=FleetFactory(), targets={"web": ServiceTarget(IMAGE, "1.0")})
    assert operator.get(act(other, "rollback", "web")).status_code == 404


def test_an_unknown_service_is_a_warning_not_an_error(operator, device):
    response = confirm(operator, act(device, "pin", "nope"), "nope")
    assert response.status_code == 302
    assert "no service" in operator.get(page(device)).content.decode()


def test_every_form_of_the_device_pages_posts_with_a_csrf_token(operator, device):
    for url in (page(device), act(device, "rollback", "web"), act(device, "pin", "db")):
        html = operator.get(url).content.decode()
        forms = re.findall(r"<form\b[^>]*>.*?</form>", html, flags=re.S | re.I)
        posting = [form for form in forms if re.search(r'method="post"', form, flags=re.I)]
        assert posting, url
        assert all("csrfmiddlewaretoken" in form for form in posting), url
