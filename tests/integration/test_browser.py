"""A real browser: headless Chromium (Debian's /usr/bin/chromium and /usr/bin/chromedriver,
installed by `make browser-deps`) driven by Selenium through the whole login.

Skipped, with the reason, only outside CI when Chromium, chromedriver or selenium is missing;
in CI (CI=true) a missing browser is a failure.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

import harness

CHROMIUM = os.environ.get("CHROMIUM_BIN", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER_BIN", "/usr/bin/chromedriver")
IN_CI = os.environ.get("CI", "").lower() == "true"


def _missing() -> str | None:
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} not installed (make browser-deps: apt-get install chromium chromium-driver)"
    if not Path(CHROMEDRIVER).exists():
        return f"{CHROMEDRIVER} not installed (make browser-deps: apt-get install chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed in .venv (make browser-deps)"
    return None


@pytest.fixture
def chrome(tmp_path):
    why = _missing()
    if why:
        if IN_CI:
            pytest.fail(f"CI=true but the browser is missing: {why}", pytrace=False)
        pytest.skip(why)
    os.environ.setdefault("SE_OFFLINE", "true")  # selenium-manager must not try to download anything
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--ignore-certificate-errors",  # the IdP's cert is from the test CA
                f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        opts.add_argument(arg)
    service = Service(executable_path=CHROMEDRIVER, log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(options=opts, service=service)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def wait_until(driver, predicate, what: str, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate(driver)
            if value:
                return value
        except Exception:  # noqa: BLE001 - element not there yet, page loading, ...
            pass
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; at {driver.current_url}:\n{driver.page_source[:2000]}")


def page_json(driver) -> dict:
    """The echo upstream's JSON as Chromium shows it (a <pre> with the raw text)."""
    from selenium.webdriver.common.by import By
    return json.loads(driver.find_element(By.TAG_NAME, "pre").text)


def sign_in(driver, user: str, password: str) -> None:
    from selenium.webdriver.common.by import By
    driver.find_element(By.ID, "login").send_keys(user)
    driver.find_element(By.ID, "password").send_keys(password)
    driver.find_element(By.ID, "submit").click()


def test_chromium_reaches_the_idp_login_page(chrome, idp):
    """Self-check of the browser set-up (no filter involved): Chromium opens the IdP over TLS,
    signs in, and is sent back to the loopback redirect URI with a code."""
    port = harness.free_port()
    flow, sent = harness.idp_login_flow(idp, "client-tls-auth", f"http://127.0.0.1:{port}/callback")
    chrome.get(flow.authorize_url)
    wait_until(chrome, lambda d: d.find_element("id", "login"), "the IdP login form")
    assert chrome.current_url.startswith(idp.base_url + "/interaction/")
    sign_in(chrome, "john", "doe")
    wait_until(chrome, lambda d: d.current_url.startswith(f"http://127.0.0.1:{port}/callback?"), "the redirect back")
    assert f"state={sent['state']}" in chrome.current_url and "code=" in chrome.current_url


def test_browser_login_through_envoy(chrome, browser_envoy, idp):
    proxy = browser_envoy()
    target = proxy.url("/hello/browser?from=chromium")
    chrome.get(target)
    wait_until(chrome, lambda d: d.find_element("id", "login"), "the IdP login page")
    assert chrome.current_url.startswith(idp.base_url + "/interaction/"), chrome.current_url
    sign_in(chrome, "john", "doe")
    wait_until(chrome, lambda d: d.current_url == target and d.find_element("tag name", "pre"),
               "the upstream page at the original URL")
    seen = page_json(chrome)
    assert seen["path"] == "/hello/browser?from=chromium"
    auth = seen["headers"]["authorization"]
    assert auth.startswith("Bearer ")
    token = auth[len("Bearer "):]
    info = idp.introspect(token)
    assert info["active"] is True and info["sub"] == "john" and info["client_id"] == "client-tls-auth"
    assert "session" not in seen["headers"].get("cookie", "")
    cookies = {c["name"]: c for c in chrome.get_cookies()}
    assert "session" in cookies and cookies["session"]["httpOnly"] is True, cookies
    assert "authorization" not in cookies  # cleared at the callback

    # reload: the session carries it, no new login at the IdP
    logins = idp.log().count("IDP GET /auth ")
    chrome.refresh()
    wait_until(chrome, lambda d: d.find_element("tag name", "pre"), "the upstream page after reload")
    assert chrome.current_url == target
    again = page_json(chrome)
    assert again["headers"]["authorization"] == auth
    chrome.get(proxy.url("/other"))
    assert page_json(chrome)["path"] == "/other"
    assert idp.log().count("IDP GET /auth ") == logins
