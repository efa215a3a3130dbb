"""The docs page in a real browser (headless Chromium): an integrator authorizes with a
client id and secret, the page fetches its own token, and "Try it out" on the care-plan
list shows the stored plan. Everything the page loads comes from the service itself."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import Client, Server
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from service import clients
from service.db import Database

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")

if CHROMIUM is None or CHROMEDRIVER is None:
    pytest.skip(
        "chromium and chromedriver are not installed (apt-get install chromium chromium-driver)",
        allow_module_level=True,
    )

WAIT_SECONDS = 15


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,2000",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=webdriver.ChromeService(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(WAIT_SECONDS)
    yield driver
    driver.quit()


def _wait(browser: Any) -> Any:
    return WebDriverWait(browser, WAIT_SECONDS)


def _click(browser: Any, by: str, selector: str) -> Any:
    element = _wait(browser).until(ec.element_to_be_clickable((by, selector)))
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'});", element)
    element.click()
    return element


def test_authorize_with_client_credentials_then_try_the_care_plan_list(
    browser: Any, live: Server, database: Database, client: Client
) -> None:
    plan = client.create_plan(patient="Patient/docs-1")
    registered, secret = clients.register(
        database, f"docs-browser-{uuid.uuid4().hex[:8]}", ["system/*.cruds"]
    )
    assert secret is not None

    # A browser at the root lands on the docs page.
    browser.get(live.url + "/")
    _wait(browser).until(ec.url_to_be(live.url + "/docs"))

    # Authorize: the OAuth2 scheme with the client's id and secret and a scope.
    _click(browser, By.CSS_SELECTOR, "button.btn.authorize")
    smart = _wait(browser).until(
        ec.presence_of_element_located(
            (By.XPATH, "//div[contains(@class,'auth-container')][.//h4[contains(., 'smart')]]")
        )
    )
    smart.find_element(By.CSS_SELECTOR, "input[data-name='clientId']").send_keys(registered.id)
    smart.find_element(By.CSS_SELECTOR, "input[data-name='clientSecret']").send_keys(secret)
    checkbox = smart.find_element(By.CSS_SELECTOR, "input[data-value='system/*.cruds']")
    browser.execute_script("arguments[0].click();", checkbox)
    smart.find_element(By.CSS_SELECTOR, "button.authorize").click()
    _wait(browser).until(
        lambda _: (
            smart.find_elements(By.XPATH, ".//button[contains(., 'Logout')]")
            or smart.find_elements(By.CSS_SELECTOR, ".errors")
        )
    )
    errors = smart.find_elements(By.CSS_SELECTOR, ".errors")
    assert not errors, errors[0].text
    _click(browser, By.CSS_SELECTOR, "button.btn-done")

    # Try it out on the care-plan list, with nothing filled in by the page.
    _click(
        browser,
        By.XPATH,
        "//div[contains(@class,'opblock-get')]"
        "[.//span[@data-path='/api/v1/care-plans' or .='/api/v1/care-plans']]"
        "//button[contains(@class,'opblock-summary-control')]",
    )
    _click(browser, By.CSS_SELECTOR, ".opblock.is-open button.try-out__btn")
    filled = [
        field.get_attribute("value")
        for field in browser.find_elements(By.CSS_SELECTOR, ".opblock.is-open .parameters input")
    ]
    assert not any(filled), filled
    _click(browser, By.CSS_SELECTOR, ".opblock.is-open button.execute")
    response = _wait(browser).until(
        ec.presence_of_element_located(
            (By.CSS_SELECTOR, ".opblock.is-open .live-responses-table tbody .response-col_status")
        )
    )
    body = browser.find_element(
        By.CSS_SELECTOR, ".opblock.is-open .live-responses-table tbody .response-col_description"
    ).text
    assert response.text.strip().startswith("200"), body
    assert plan["id"] in body
    curl = browser.find_element(By.CSS_SELECTOR, ".opblock.is-open .curl-command").text
    assert "Authorization: Bearer " in curl
    assert "identifier=" not in curl
    loaded = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
    )
    assert loaded, "the page loaded nothing"
    assert [url for url in loaded if not url.startswith(live.url + "/")] == []
