"""The console in a real browser (Debian's chromium through chromium-driver).

Few and fast: each test builds a small rollout on the real engine and walks
through a page as an operator would. They also write the README's screenshots.
"""

import pytest
from django.utils import timezone
from selenium.webdriver.common.by import By

from .browser import attribute_values, click, log_in, open_path, save_screenshot, text_of, wait_for, wait_for_css
from devices.models import Device

from .console_data import (
    PASSWORD,
    member_of,
    liven_up,
    rollout_in_progress,
    user_with,
)
from .rollout_helpers import report, tick

pytestmark = pytest.mark.django_db(transaction=True)


def rollout_url(rollout) -> str:
    return f"/admin/rollouts/rollout/{rollout.pk}/change/"


def test_it_pauses_a_rollout_after_a_confirmation(page, screenshot_dir):
    user_with("ops", superuser=True)
    rollout_in_progress(40, timezone.now(), failed=2)
    log_in(page, "ops", PASSWORD)
    open_path(page, "/admin/rollouts/rollout/")
    page.find_element(By.LINK_TEXT, "iotistic/myapp:v2.0.0").click()
    wait_for_css(page, "#c-batches")
    save_screenshot(page, screenshot_dir, "console-rollout")

    click(page, '[data-action="pause"]')
    click(page, '[data-confirm="pause"]')

    wait_for_css(page, "#c-status")
    assert text_of(page, "#c-status") == "paused"
    assert attribute_values(page, "[data-action]", "data-action") == {"resume", "cancel", "rollback_all", "retry"}
    assert "Pause: done." in page.find_element(By.CSS_SELECTOR, ".messagelist").text
    open_path(page, "/admin/rollouts/rollout/")
    # The list fits 1280 px: neither the page nor the table scrolls sideways.
    assert page.execute_script("return document.documentElement.scrollWidth") <= 1280
    assert page.execute_script(
        "var r = document.querySelector('#changelist .results'); return r.scrollWidth <= r.clientWidth"
    )
    save_screenshot(page, screenshot_dir, "console-rollouts")


def test_a_device_report_moves_the_bars_and_the_timeline_without_a_reload(page):
    user_with("ops", superuser=True)
    rollout = rollout_in_progress(20, timezone.now())
    log_in(page, "ops", PASSWORD)
    open_path(page, rollout_url(rollout))
    wait_for_css(page, "#c-live-state.c-on")
    page.execute_script("window.notReloaded = true")
    assert batch_done(page, 2) == "4/8"

    in_flight = list(rollout.devices.filter(batch=2, status="scheduled").select_related("device"))
    report([row.device_id for row in in_flight], tag="v2.0.0", at=timezone.now())
    tick(timezone.now())

    wait_for(page, lambda driver: batch_done(driver, 2) == "8/8")
    wait_for(page, lambda driver: "Batch 3 of 3 started" in timeline_text(driver))
    for row in in_flight:
        assert f"{row.device.name}/web is healthy on the new image" in timeline_text(page)
    assert page.execute_script("return window.notReloaded") is True


def timeline_text(driver) -> str:
    return text_of(driver, "#c-timeline")


def batch_done(driver, batch: int) -> str:
    return text_of(driver, f'[data-batch="{batch}"] .c-num')


def test_it_shows_a_fleet_viewer_the_pages_without_action_buttons(page, screenshot_dir):
    rollout = rollout_in_progress(24, timezone.now(), failed=1)
    devices = Device.objects.order_by("id")
    liven_up(devices, timezone.now())
    member_of(devices[0].fleet, "viewer", "watcher")
    log_in(page, "watcher", PASSWORD)
    open_path(page, rollout_url(rollout))
    wait_for_css(page, "#c-batches")
    assert text_of(page, "#c-status") == "in progress"
    assert page.find_elements(By.CSS_SELECTOR, "[data-action]") == []  # read once: no re-render adds any

    open_path(page, f"/admin/devices/fleet/{devices[0].fleet_id}/change/")
    wait_for_css(page, ".c-versions")
    save_screenshot(page, screenshot_dir, "console-fleet")
    page.find_element(By.CSS_SELECTOR, '.c-image-name[href*="iotistic"]').click()
    wait_for_css(page, ".c-versions")
    save_screenshot(page, screenshot_dir, "console-image")
    healthy = rollout.devices.filter(status="healthy").last()
    open_path(page, f"/admin/devices/device/{healthy.device_id}/change/")
    wait_for_css(page, "#c-services")
    assert page.find_elements(By.CSS_SELECTOR, "[data-device-action]") == []


def test_a_fleet_operator_pins_a_service_from_the_device_page(page, screenshot_dir):
    rollout = rollout_in_progress(24, timezone.now(), failed=1)
    devices = Device.objects.order_by("id")
    liven_up(devices, timezone.now())
    member_of(devices[0].fleet, "operator", "fleet-operator")
    log_in(page, "fleet-operator", PASSWORD)
    healthy = rollout.devices.filter(status="healthy").last()
    open_path(page, f"/admin/devices/device/{healthy.device_id}/change/")
    wait_for_css(page, "#c-services")
    save_screenshot(page, screenshot_dir, "console-device")

    click(page, '[data-device-action="pin"][data-service="web"]')
    click(page, '[data-confirm="pin"]')

    wait_for_css(page, '#c-services [data-pinned="true"]')
    assert "web is pinned to its target." in page.find_element(By.CSS_SELECTOR, ".messagelist").text
    assert ("unpin", "web") in {
        (button.get_attribute("data-device-action"), button.get_attribute("data-service"))
        for button in page.find_elements(By.CSS_SELECTOR, "[data-device-action]")
    }
