"""The operator's status page, in a real browser: Debian's Chromium, headless, driven by
selenium through Debian's chromedriver (make test installs both)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from tests.helpers import WAIT, CLIProcess, start_server, wait_until


@pytest.fixture
def admin(tmp_path: Path, processes: list[CLIProcess]) -> Iterator[tuple[str, Path]]:
    """A server with a drain check and the admin port: its address, and the drain file."""
    drain = tmp_path / "drain"
    process = start_server(
        "--admin-port", "0",
        "--check", f"name=drain,kind=file,target={drain},interval=0.1,failure_threshold=1",
    )  # fmt: skip
    processes.append(process)
    port = process.wait_for_line(r"admin HTTP port on \S+:(\d+)").group(1)
    address = f"http://127.0.0.1:{port}"
    wait_until(lambda: get_json(f"{address}/readyz")["status"] == "SERVING", what="readiness")
    yield address, drain


def get_json(url: str, accept: str = "") -> Any:
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    try:
        with urllib.request.urlopen(request, timeout=WAIT) as answer:
            return json.loads(answer.read())
    except urllib.error.HTTPError as error:  # 503 carries its JSON too
        return json.loads(error.read())


def browser(tmp_path: Path, javascript: bool = True) -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--window-size=900,1000", f"--user-data-dir={tmp_path / 'chromium'}",
    ):  # fmt: skip
        options.add_argument(flag)
    if not javascript:
        options.add_experimental_option(
            "prefs", {"profile.managed_default_content_settings.javascript": 2}
        )
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))
    driver.set_page_load_timeout(WAIT)
    return driver


@pytest.fixture
def chrome(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    driver = browser(tmp_path)
    yield driver
    driver.quit()


def text(driver: webdriver.Chrome, element_id: str) -> str:
    """An element's text, read in one step (the page re-renders its parts every second)."""
    script = "return document.getElementById(arguments[0]).textContent.trim()"
    return str(driver.execute_script(script, element_id))


def service_status(driver: webdriver.Chrome, service: str) -> str:
    rows = driver.execute_script(
        "return [...document.querySelectorAll('#services tr')]"
        ".map(row => [...row.cells].map(cell => cell.textContent))"
    )
    for name, status in rows:
        if name == service:
            return str(status)
    raise AssertionError(f"no row for {service}")


def test_page_shows_the_server_serving(chrome, admin, tmp_path):
    address, _ = admin
    chrome.get(address + "/")
    assert text(chrome, "status") == "OK"
    assert service_status(chrome, "readiness") == "SERVING"
    chrome.save_screenshot(str(tmp_path / "serving.png"))


def test_page_loads_without_console_errors_or_other_origins(chrome, admin):
    address, _ = admin
    chrome.get(address + "/")
    wait_until(lambda: "every second" in text(chrome, "refresh"), what="a refresh")
    errors = [entry for entry in chrome.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == []
    fetched = chrome.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
    )
    assert fetched and all(url.startswith(address + "/") for url in fetched)


def test_drain_file_turns_the_page_not_serving_without_a_reload(chrome, admin, tmp_path):
    address, drain = admin
    chrome.get(address + "/")
    chrome.execute_script("window.samePage = true")
    drain.touch()
    wait_until(lambda: service_status(chrome, "readiness") == "NOT_SERVING", what="the page")
    wait_until(lambda: "the file exists" in text(chrome, "history"), what="the timeline entry")
    assert text(chrome, "status") == "FAILING"
    assert chrome.execute_script("return window.samePage") is True
    chrome.save_screenshot(str(tmp_path / "not-serving.png"))


def test_removing_the_drain_file_brings_the_page_back_to_serving(chrome, admin, tmp_path):
    address, drain = admin
    drain.touch()
    wait_until(lambda: get_json(f"{address}/readyz")["status"] == "NOT_SERVING", what="drain")
    chrome.get(address + "/")
    assert text(chrome, "status") == "FAILING"
    drain.unlink()
    wait_until(lambda: service_status(chrome, "readiness") == "SERVING", what="the page")
    assert text(chrome, "status") == "OK"
    chrome.save_screenshot(str(tmp_path / "serving-again.png"))


def test_page_refreshes_at_most_once_a_second(chrome, admin):
    address, _ = admin
    chrome.get(address + "/")
    wait_until(lambda: "every second" in text(chrome, "refresh"), what="a refresh")
    started = chrome.execute_script("return performance.now()")
    wait_until(lambda: chrome.execute_script("return performance.now()") - started > 3000,
               what="three seconds")  # fmt: skip
    fetches = chrome.execute_script(
        "return performance.getEntriesByType('resource')"
        ".filter(e => e.name.endsWith('/api/v1/health') && e.startTime >= arguments[0]).length",
        started,
    )
    assert 1 <= fetches <= 4


def test_page_shows_the_state_with_javascript_off(admin, tmp_path):
    address, drain = admin
    drain.touch()
    wait_until(lambda: get_json(f"{address}/readyz")["status"] == "NOT_SERVING", what="drain")
    driver = browser(tmp_path, javascript=False)
    try:
        driver.get(address + "/")
        assert service_status(driver, "readiness") == "NOT_SERVING"
        assert "the file exists" in text(driver, "history")
        assert text(driver, "refresh") == "updated when loaded"  # no script ran
        driver.save_screenshot(str(tmp_path / "no-javascript.png"))
    finally:
        driver.quit()


def test_root_without_html_is_the_original_welcome(admin):
    address, _ = admin
    assert list(get_json(address + "/")) == ["message"]


def test_original_api_shapes_are_unchanged(admin):
    address, _ = admin
    assert sorted(get_json(address + "/api/v1/status")) == ["message", "status", "version"]
    assert sorted(get_json(address + "/api/v1/smoke-test")) == ["status"]
    assert sorted(get_json(address + "/readyz")) == ["status"]


def test_history_endpoint_lists_the_transitions(admin):
    address, drain = admin
    drain.touch()
    wait_until(lambda: get_json(f"{address}/readyz")["status"] == "NOT_SERVING", what="drain")
    transitions = get_json(address + "/api/v1/history")["transitions"]
    readiness = [t for t in transitions if t["name"] == "readiness"][-1]
    assert (readiness["old"], readiness["new"]) == ("SERVING", "NOT_SERVING")
    assert readiness["reason"] == "required check 'drain' fails: the file exists"


def test_page_is_served_with_a_strict_content_security_policy(admin):
    address, _ = admin
    request = urllib.request.Request(address + "/", headers={"Accept": "text/html"})
    with urllib.request.urlopen(request, timeout=WAIT) as answer:
        policy = answer.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy
