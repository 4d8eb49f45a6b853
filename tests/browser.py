"""Browser tests: Debian's chromium, driven through chromium-driver by Selenium,
against pytest-django's live server (a free loopback port).

The fixtures (`browser`, `page`, `screenshot_dir`) are in tests/conftest.py.
Screenshots go to $CONSOLE_SCREENSHOT_DIR when it is set (`.ci/run` sets it
to docs/, which the README shows), else to a temporary directory, so local
runs do not rewrite the committed images in every engineer's checkout.
"""

import os
import time
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# Wide enough for the admin's sidebar and the 1280 px the list must fit.
WINDOW = (1280, 900)
WAIT_SECONDS = 10


@pytest.fixture(scope="session")
def browser():
    """One headless chromium for the whole run (it takes ~2 s to start)."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--disable-extensions",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        "--force-device-scale-factor=1",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


# A stream notices that its page is gone when a write fails: a short
# keep-alive lets it end before the test's database goes away.
KEEPALIVE_SECONDS = 0.3


@pytest.fixture
def page(browser, live_server, settings):
    """The browser with a clean session, pointed at the live server."""
    settings.EVENT_STREAM_KEEPALIVE_SECONDS = KEEPALIVE_SECONDS
    browser.delete_all_cookies()
    browser.base_url = live_server.url
    yield browser
    browser.get("about:blank")
    browser.delete_all_cookies()
    # Two keep-alives: the first write after the browser left may still succeed.
    time.sleep(3 * KEEPALIVE_SECONDS)


@pytest.fixture(scope="session")
def screenshot_dir(tmp_path_factory) -> Path:
    configured = os.environ.get("CONSOLE_SCREENSHOT_DIR")
    directory = Path(configured) if configured else tmp_path_factory.mktemp("screenshots")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def open_path(driver, path: str) -> None:
    driver.get(driver.base_url + path)


def wait_for(driver, condition, seconds: float = WAIT_SECONDS):
    # The live region is re-rendered as events arrive: an element found a
    # moment ago may be gone, so a stale reference means "look again".
    return WebDriverWait(driver, seconds, ignored_exceptions=[StaleElementReferenceException]).until(
        condition
    )


def click(driver, selector: str) -> None:
    wait_for(driver, lambda d: d.find_element(By.CSS_SELECTOR, selector).click() or True)


def attribute_values(driver, selector: str, name: str) -> set[str]:
    return wait_for(
        driver, lambda d: {e.get_attribute(name) for e in d.find_elements(By.CSS_SELECTOR, selector)} or set()
    )


def text_of(driver, selector: str) -> str:
    return wait_for(driver, lambda d: d.find_element(By.CSS_SELECTOR, selector).text)


def wait_for_css(driver, selector: str):
    return wait_for(driver, expected_conditions.presence_of_element_located((By.CSS_SELECTOR, selector)))


def log_in(driver, username: str, password: str) -> None:
    """Through the admin's login form, as a person would."""
    open_path(driver, "/admin/login/?next=/admin/")
    driver.find_element(By.NAME, "username").send_keys(username)
    driver.find_element(By.NAME, "password").send_keys(password)
    driver.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    wait_for_css(driver, "#user-tools")


def save_screenshot(driver, directory: Path, name: str) -> Path:
    """A PNG of the whole page (the window grown to the page's height)."""
    width = driver.get_window_size()["width"]
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(width, min(max(height, WINDOW[1]), 4000))
    path = directory / f"{name}.png"
    driver.save_screenshot(str(path))
    driver.set_window_size(*WINDOW)
    return path
