"""The live dashboard in headless Chromium, against the app and the simulator.

The app runs under uvicorn with three simulator keys: `west` revoked and `north`
rate-limited for two minutes. The tests generate through the API, load
`/dashboard` in Debian's chromium through Playwright, and read the page as a user
would. Screenshots go to `test-artifacts/dashboard/` in the repository, which git
ignores and CI keeps with the test report.

Without /usr/bin/chromium or the `playwright` package these tests are skipped, with
the way to install them, except under CI=true, where they fail.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from microtopic.api.routes import PREFIX
from tests.api.support import CLIENT_BODY, GENERATE_PATH, SimulatorControl
from tests.app_server import AppServer

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page, Response

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "dashboard"
# Longer than the test, shorter than `exhausted_after_s`, so `north` stays cooling.
NORTH_RETRY_AFTER_MS = 120_000
GATEWAY_TOKEN = "gw-test-dashboard"
# Long enough for the first poll on a loaded 2-core machine.
WAIT_MS = 15_000


@pytest.fixture
def browser_installed() -> None:
    """Skip, or fail under CI=true, when chromium or Playwright is missing."""
    missing = []
    if not CHROMIUM.exists():
        missing.append(f"chromium at {CHROMIUM} (`apt-get install chromium`)")
    if importlib.util.find_spec("playwright") is None:
        missing.append("the playwright package (`pip install -e '.[dev]'`)")
    if missing:
        reason = "The dashboard's browser tests need " + " and ".join(missing)
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}. scripts/check.sh installs chromium when it can.")
        pytest.skip(reason)


@pytest.fixture
async def browser(browser_installed: None) -> AsyncIterator[Browser]:
    """Debian's headless chromium, driven by Playwright."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        # The sandbox needs user namespaces, which containers often lack.
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox"]
        )
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture
async def faulty_keys(simulator_control: SimulatorControl) -> None:
    """Revoke `west` and rate-limit `north` for longer than a test lasts."""
    await simulator_control.set_fault("west", "revoked")
    await simulator_control.set_fault("north", "rate_limit", retry_after_ms=NORTH_RETRY_AFTER_MS)


async def generate(client: httpx.AsyncClient, count: int) -> list[str]:
    """Generate `count` topics at once and return their request ids."""
    responses = await asyncio.gather(
        *(client.post(GENERATE_PATH, json=CLIENT_BODY) for _ in range(count))
    )
    assert [response.status_code for response in responses] == [200] * count
    return [response.json()["metadata"]["request_id"] for response in responses]


async def open_dashboard(page: Page, app_server: AppServer) -> None:
    await page.goto(f"{app_server.base_url}/dashboard")
    await page.wait_for_selector("#status[data-state='live']", timeout=WAIT_MS)


def screenshot_path(name: str) -> str:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return str(ARTIFACTS / name)


async def failover_pairs(page: Page) -> list[dict[str, Any]]:
    """Return the waterfall's LLM attempts, each with its parent span, key, attempt and error."""
    attempts: list[dict[str, Any]] = await page.eval_on_selector_all(
        "#waterfall .wf-row[data-kind='llm_call']",
        """rows => rows.map(row => ({
            parent: row.dataset.parent || null,
            key: row.dataset.key,
            attempt: Number(row.dataset.attempt),
            error: row.dataset.error || null,
        }))""",
    )
    return attempts


async def error_cells(page: Page, code: str | None) -> dict[str, tuple[int, str]]:
    """Return the errors table's cells of `code`, or of all attempts for None, by period.

    Each cell is a count and, under it, a share of the period's attempts.
    """
    row = "tfoot tr" if code is None else f"tbody tr[data-error='{code}']"
    cells: list[list[str]] = await page.eval_on_selector_all(
        f"#errors-table {row} td",
        "cells => cells.map(cell => [cell.dataset.period, cell.innerText])",
    )
    by_period = {}
    for period, text in cells:
        count, share = text.split("\n")
        by_period[period] = (int(count), share)
    return by_period


async def test_dashboard_shows_key_states_live(
    browser: Browser,
    app_server: AppServer,
    client: httpx.AsyncClient,
    faulty_keys: None,
) -> None:
    await generate(client, 2)
    page = await browser.new_page(viewport={"width": 1280, "height": 900}, color_scheme="light")

    await open_dashboard(page, app_server)
    await page.evaluate("window.loadedOnce = true")
    (later,) = await generate(client, 1)

    await page.wait_for_selector(f"#requests-table tr[data-request='{later}']", timeout=WAIT_MS)
    assert await page.evaluate("window.loadedOnce === true"), "the page reloaded"
    west = page.locator("#keys-table tbody tr[data-key='west']")
    north = page.locator("#keys-table tbody tr[data-key='north']")
    east = page.locator("#keys-table tbody tr[data-key='east']")
    assert await west.get_attribute("data-state") == "disabled"
    assert await north.get_attribute("data-state") == "cooling"
    assert await east.get_attribute("data-state") == "active"
    assert "upstream_auth_failed" in await west.inner_text()
    assert "upstream_rate_limited" in await north.inner_text()
    auth_failed = await error_cells(page, "upstream_auth_failed")
    attempts = await error_cells(page, None)
    assert auth_failed["1m"][0] >= 1
    assert auth_failed["15m"][0] == auth_failed["1m"][0]
    assert auth_failed["start"][0] == auth_failed["1m"][0]
    assert attempts["1m"][0] > auth_failed["1m"][0]
    share = 100 * auth_failed["1m"][0] / attempts["1m"][0]
    # The API rounds rates to 4 places and the page shows 1 decimal of a percent.
    assert float(auth_failed["1m"][1].removesuffix("%")) == pytest.approx(share, abs=0.06)
    assert attempts["1m"][1].endswith("%")
    assert (await error_cells(page, "upstream_rate_limited"))["15m"][0] >= 1
    assert "last 15 minutes" in await page.locator("#error-rates").inner_text()
    assert await page.locator("#throughput-chart rect.bar-ok").count() > 0
    assert "No running jobs" in await page.locator("#jobs-list").inner_text()
    background = await page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert luminance(background) > 0.8
    await page.screenshot(path=screenshot_path("desktop-light.png"), full_page=True)


async def test_trace_waterfall_shows_failover(
    browser: Browser,
    app_server: AppServer,
    client: httpx.AsyncClient,
    faulty_keys: None,
) -> None:
    await generate(client, 2)
    listed = await client.get(
        "/api/v1/microtopic-content/requests", params={"error": "upstream_auth_failed"}
    )
    failed_over = listed.json()["requests"][0]["id"]
    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    await open_dashboard(page, app_server)

    await page.click(f"#requests-table tr[data-request='{failed_over}'] button")
    await page.wait_for_selector("#waterfall .wf-row[data-kind='llm_call']", timeout=WAIT_MS)

    attempts = await failover_pairs(page)
    first_failures = [a for a in attempts if a["attempt"] == 1 and a["error"]]
    assert first_failures, attempts
    served_after = [
        (failed, retried)
        for failed in first_failures
        for retried in attempts
        if retried["parent"] == failed["parent"]
        and retried["attempt"] == 2
        and retried["key"] != failed["key"]
    ]
    assert served_after, attempts
    failed, retried = served_after[0]
    assert failed["key"] in ("west", "north")
    assert retried["key"] in ("east", "west", "north")
    assert failed["error"] in ("upstream_auth_failed", "upstream_rate_limited")
    selections = page.locator("#waterfall .wf-row[data-kind='key_selection']")
    assert await selections.count() >= len(attempts)
    summary = await page.locator("#trace-summary").inner_text()
    assert "Math / Algebra" in summary
    await page.locator("#trace").screenshot(path=screenshot_path("trace-failover.png"))


async def test_dashboard_fits_narrow_screen_in_dark_mode(
    browser: Browser,
    app_server: AppServer,
    client: httpx.AsyncClient,
    faulty_keys: None,
) -> None:
    (request_id,) = await generate(client, 1)
    page = await browser.new_page(viewport={"width": 375, "height": 812}, color_scheme="dark")

    await open_dashboard(page, app_server)
    await page.click(f"#requests-table tr[data-request='{request_id}'] button")
    await page.wait_for_selector("#waterfall .wf-row", timeout=WAIT_MS)

    page_width = await page.evaluate("document.documentElement.scrollWidth")
    assert page_width <= 375
    for section in ("capacity", "errors", "charts", "keys", "requests", "trace"):
        box = await page.locator(f"#{section}").bounding_box()
        assert box is not None
        assert box["x"] >= 0
        assert box["x"] + box["width"] <= 375
    background = await page.evaluate("getComputedStyle(document.body).backgroundColor")
    text = await page.evaluate("getComputedStyle(document.body).color")
    assert luminance(background) < 0.2
    assert luminance(text) > 0.7
    await page.screenshot(path=screenshot_path("narrow-dark.png"), full_page=True)


async def test_page_has_inline_favicon(browser: Browser, app_server: AppServer) -> None:
    page = await browser.new_page()
    failed_urls: list[str] = []

    def record_failure(response: Response) -> None:
        if response.status >= 400:
            failed_urls.append(response.url)

    page.on("response", record_failure)

    await open_dashboard(page, app_server)
    icon = await page.get_attribute("link[rel='icon']", "href")
    icon_width = await page.evaluate(
        """href => new Promise((resolve, reject) => {
            const image = new Image();
            image.onload = () => resolve(image.naturalWidth);
            image.onerror = () => reject(new Error("the icon did not load"));
            image.src = href;
        })""",
        icon,
    )

    assert icon is not None
    assert icon.startswith("data:image/svg+xml,")
    assert icon_width > 0
    assert failed_urls == []


def luminance(css_color: str) -> float:
    """Return the relative luminance (0 black to 1 white) of an `rgb(r, g, b)` color."""
    channels = css_color[css_color.index("(") + 1 : css_color.index(")")].split(",")
    red, green, blue = (int(channel) / 255 for channel in channels[:3])
    return 0.2126 * red + 0.7152 * green + 0.0722 * blue


async def test_page_is_served_with_strict_policy(client: httpx.AsyncClient) -> None:
    response = await client.get("/dashboard")

    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "default-src 'none'" in policy
    assert '<script src="/dashboard/dashboard.js"' in response.text


@pytest.mark.parametrize(
    ("name", "media_type"),
    [("dashboard.js", "text/javascript"), ("dashboard.css", "text/css")],
)
async def test_page_assets_are_served(
    client: httpx.AsyncClient, name: str, media_type: str
) -> None:
    response = await client.get(f"/dashboard/{name}")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith(media_type)
    assert response.content


async def test_unknown_asset_is_not_found(client: httpx.AsyncClient) -> None:
    response = await client.get("/dashboard/..%2Fdashboard.py")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


async def test_script_inserts_no_html(client: httpx.AsyncClient) -> None:
    script = (await client.get("/dashboard/dashboard.js")).text

    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write"):
        assert sink not in script


async def test_timeseries_has_every_slot(client: httpx.AsyncClient) -> None:
    await client.post(GENERATE_PATH, json=CLIENT_BODY)

    response = await client.get(f"{PREFIX}/stats/timeseries", params={"window": "1m"})

    body = response.json()
    assert response.status_code == 200
    assert body["window"] == "1m"
    assert body["slot_s"] == 5.0
    series = {entry["operation"]: entry["points"] for entry in body["series"]}
    assert set(series) == {"generation", "llm_call"}
    assert len(series["llm_call"]) == 12
    assert sum(point["count"] for point in series["llm_call"]) >= 3
    assert sum(point["count"] for point in series["generation"]) == 1
    starts = [point["start"] for point in series["llm_call"]]
    assert starts == sorted(starts)


async def test_timeseries_takes_named_operations(client: httpx.AsyncClient) -> None:
    response = await client.get(
        f"{PREFIX}/stats/timeseries", params={"operation": ["llm_call:east", "passthrough"]}
    )

    body = response.json()
    assert [entry["operation"] for entry in body["series"]] == ["llm_call:east", "passthrough"]
    assert body["slot_s"] == 60.0
    assert all(len(entry["points"]) == 15 for entry in body["series"])


async def test_timeseries_rejects_unknown_window(client: httpx.AsyncClient) -> None:
    response = await client.get(f"{PREFIX}/stats/timeseries", params={"window": "1h"})

    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_request"


async def test_running_jobs_empty_without_jobs(client: httpx.AsyncClient) -> None:
    response = await client.get(f"{PREFIX}/jobs")

    assert response.status_code == 200
    assert response.json() == {"success": True, "jobs": []}


class TestForwardedCall:
    """A call forwarded through the OpenAI-compatible endpoint, listed and traced."""

    @pytest.fixture
    def gateway_api_keys(self) -> list[str]:
        return [GATEWAY_TOKEN]

    async def test_forwarded_call_shows_kind_and_waterfall(
        self,
        browser: Browser,
        app_server: AppServer,
        client: httpx.AsyncClient,
        simulator_control: SimulatorControl,
    ) -> None:
        await simulator_control.set_fault("east", "revoked")
        forwarded = await client.post(
            "/v1/chat/completions",
            json={"model": "client-model", "messages": [{"role": "user", "content": "Hi"}]},
            headers={"Authorization": f"Bearer {GATEWAY_TOKEN}"},
        )
        request_id = forwarded.headers["X-Request-ID"]
        page = await browser.new_page(viewport={"width": 1280, "height": 900})
        await open_dashboard(page, app_server)

        row = page.locator(f"#requests-table tr[data-request='{request_id}']")
        await row.wait_for(timeout=WAIT_MS)
        cells = await row.locator("td").all_inner_texts()
        await row.locator("button").click()
        await page.wait_for_selector("#waterfall .wf-row[data-kind='llm_call']", timeout=WAIT_MS)

        assert forwarded.status_code == 200
        assert cells[1] == "forwarded"
        assert cells[3].startswith("client-model: 1 messages")
        attempts = await failover_pairs(page)
        assert attempts[0]["key"] == "east"
        assert attempts[0]["attempt"] == 1
        assert attempts[0]["error"] == "upstream_auth_failed"
        assert attempts[1]["attempt"] == 2
        assert attempts[1]["error"] is None
        summary = await page.locator("#trace-summary").inner_text()
        assert summary.startswith("Forwarded call, client-model")
