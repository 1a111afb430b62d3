"""The interactive docs in a real browser: headless Chromium (Debian's package) driven by Playwright
opens both services' docs pages from a `make run` launcher on 127.0.0.1, authorises with the API
key (HTTP Basic, blank password), runs "try it" and reads the answer, and loads nothing from any
other host. Screenshots are kept under build/test-artifacts/."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from apinode.loader import load_definition
from tests.apinode_proc import REPO, free_port, server_env

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = REPO / "build" / "test-artifacts"
KEY = "browser-key"
# As the machine's notes advise: without the background-networking switches Chromium calls out to
# Google's hosts at start, which this closed network refuses (and which we want to see nothing of).
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
]

if CHROMIUM is None:
    pytest.skip("chromium is not installed (scripts/system-deps installs it)", allow_module_level=True)
playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is in tests/requirements.txt")


@pytest.fixture(scope="module")
def launched():
    """``python -m apinode.local`` on free ports, as `make run` starts it; the docs URLs it prints."""
    scoring, features = free_port(), free_port()
    env = server_env(APINODE_API_KEYS=KEY)
    launcher = subprocess.Popen(
        [sys.executable, "-m", "apinode.local", "--scoring-port", str(scoring), "--features-port", str(features)],
        env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    output: list[str] = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = launcher.stdout.readline()
            if not line:
                break
            output.append(line)
            if "Ctrl-C stops both" in line:
                break
        text = "".join(output)
        urls = re.findall(r"http://127\.0\.0\.1:\d+/public/api/v1/[a-z-]+/docs", text)
        assert len(urls) == 2, f"make run should print both docs URLs; it printed:\n{text}"
        yield {url.split("/")[-2]: url for url in urls}
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGINT)
            try:
                launcher.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(launcher.pid, signal.SIGKILL)
                launcher.wait()


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@pytest.fixture()
def page(browser):
    """A page that records every request and refuses any that leaves the page's own server."""
    context = browser.new_context(viewport={"width": 1280, "height": 1600})
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.requests = []
    page.foreign = []

    def gate(route):
        url = route.request.url
        page.requests.append(url)
        origin = urlsplit(url)
        if origin.scheme in ("data", "blob") or origin.hostname == "127.0.0.1":
            route.continue_()
        else:
            page.foreign.append(url)
            route.abort()

    page.route("**/*", gate)
    yield page
    context.close()


def _authorize(page) -> None:
    page.click("button.authorize")
    basic = page.locator(".auth-container").filter(has_text="apiKeyBasic")
    basic.locator("input[type=text]").fill(KEY)
    basic.locator("input[type=password]").fill("")
    basic.locator("button.authorize").click()
    page.click("button.btn-done")


def _try(page, path: str) -> tuple[str, str]:
    """Open the operation, "Try it out" with the example the document provides, execute; status and body."""
    block = page.locator(f".opblock:has([data-path='{path}'])")
    block.locator(".opblock-summary").first.click()
    block.locator("button.try-out__btn").click()
    block.locator("button.execute").click()
    status = block.locator(".live-responses-table .response .response-col_status").first
    status.wait_for()
    body = block.locator(".live-responses-table .response-col_description pre").first.inner_text()
    return status.inner_text().strip(), body


def _shot(page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path.relative_to(REPO)}")
    return path


def test_features_docs_list_every_endpoint_and_try_it_looks_up_a_customer(launched, page):
    url = launched["customer-features"]
    page.goto(url)
    page.wait_for_selector(".opblock")
    paths = [p.replace("\u200b", "").strip() for p in page.locator(".opblock-summary-path").all_inner_texts()]
    definition = load_definition(REPO / "services" / "customer-features", {})
    assert definition.lookups, "customer-features declares no lookup endpoint"
    for endpoint in definition.lookups:
        for action in ("lookup", "lookup-multi"):
            wanted = f"/public/api/v1/customer-features/{endpoint}/{action}"
            assert wanted in paths, (wanted, paths)
    _authorize(page)
    status, body = _try(page, "/public/api/v1/customer-features/demographics/lookup")
    _shot(page, "docs-customer-features")
    assert status == "200", body
    assert '"customer_id": "C0000001"' in body and '"notFound": false' in body, body
    assert page.foreign == [], f"the docs page reached other hosts: {page.foreign}"
    assert any(r.endswith("/docs/assets/swagger-ui-bundle.js") for r in page.requests), page.requests


def test_scoring_docs_score_a_customer_from_the_id_alone(launched, page):
    page.goto(launched["customer-scoring"])
    page.wait_for_selector(".opblock")
    paths = [p.replace("\u200b", "").strip() for p in page.locator(".opblock-summary-path").all_inner_texts()]
    assert "/public/api/v1/customer-scoring/high-spender/predict" in paths, paths
    assert "/public/api/v1/customer-scoring/high-spender/predict-multi" in paths, paths
    _authorize(page)
    status, body = _try(page, "/public/api/v1/customer-scoring/high-spender/predict")
    _shot(page, "docs-customer-scoring")
    assert status == "200", body
    assert '"prediction"' in body and '"ignored": false' in body, body
    assert page.foreign == [], f"the docs page reached other hosts: {page.foreign}"


def test_try_it_without_the_key_shows_the_401_the_api_answers(launched, page):
    page.goto(launched["customer-features"])
    page.wait_for_selector(".opblock")
    status, body = _try(page, "/public/api/v1/customer-features/behavior/lookup")
    assert status == "401", body
    assert "errorType" in body, body


def test_product_page_shows_tables_sources_freshness_and_links_to_the_docs(launched, page):
    docs = launched["customer-features"]
    page.goto(docs.removesuffix("/docs") + "/product")
    text = page.inner_text("main")
    for column in ("birthdate", "household_size", "orders_12m", "return_rate"):
        assert column in text, text
    assert "bundled with the image" in text and "data age" in text and "last load" in text, text
    _shot(page, "product-customer-features")
    page.click("header >> text=API docs")
    page.wait_for_selector(".opblock")
    assert page.url == docs
    assert page.foreign == [], page.foreign
