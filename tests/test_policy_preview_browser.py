"""The policy page's Preview button in a real browser (Debian's chromium)."""

import pytest
from selenium.webdriver.common.by import By

from .browser import log_in, open_path, save_screenshot, text_of, wait_for_css
from .console_data import PASSWORD, user_with
from .rollout_helpers import IMAGE, build_fleet, policy

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_preview_button_shows_what_a_push_would_do(page, screenshot_dir, settings):
    settings.REGISTRY_RESOLVE_DIGESTS = False
    fleet = build_fleet(30, tag="1.5.0")
    build_fleet(20, fleet=fleet, tag="2.1.0")
    build_fleet(5, fleet=fleet, tag="3.0.0")
    pol = policy(required_versions=["2.0.0"], auto_approve_max_risk="medium")
    user_with("ops", superuser=True)
    log_in(page, "ops", PASSWORD)
    open_path(page, f"/admin/rollouts/imagepolicy/{pol.pk}/change/")
    page.find_element(By.CSS_SELECTOR, "a.c-preview-link").click()
    wait_for_css(page, "form.c-preview-form")
    # The pattern names no single repository: the image is the operator's to give.
    assert page.find_element(By.NAME, "image").get_attribute("value") == ""
    page.find_element(By.NAME, "image").send_keys(IMAGE)
    page.find_element(By.NAME, "tag").send_keys("2.2.0")
    page.find_element(By.CSS_SELECTOR, "form.c-preview-form button").click()
    wait_for_css(page, "#preview-result")
    result = text_of(page, "#preview-result")
    assert "risk high, needs approval" in result
    assert "55 devices" in result
    assert "downgrade: 5" in result
    assert "30 from 1.5.0 via 2.0.0" in result
    save_screenshot(page, screenshot_dir, "console-policy-preview")
