"""The web console and the offline API docs in a real headless Chromium, against the real service.

Playwright drives Debian's ``chromium`` (never a browser it downloads). Every page is watched: a
console error, an uncaught exception, an unexpected HTTP error or any request to a host other than
127.0.0.1 fails the test (requests elsewhere are also aborted by route interception). One service with
its real training worker is shared by the module; the model is trained once, from the console's form.
Screenshots go to ``test-artifacts/console/``; ``UPDATE_README_SCREENSHOTS=1`` also refreshes the two
that the README shows (docs/images/).
"""

from __future__ import annotations

import base64
import http.client
import io
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Browser, ConsoleMessage, Page, Request, Route, expect, sync_playwright
from service_helpers import REPO, ServerProcess
from sklearn.datasets import load_digits

pytestmark = pytest.mark.timeout(300)

ARTIFACTS = REPO / "test-artifacts" / "console"
README_IMAGES = REPO / "docs" / "images"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--no-first-run",
    "--metrics-recording-only",
]
# A tiny job: digits, 2 epochs of a small MLP (a few seconds of training on 2 cores).
FORM_JOB = {
    "epochs": "2",
    "batch_size": "64",
    "embedding_dim": "32",
    "hidden": "64",
    "name": "console-digits",
}
MODEL_ID = FORM_JOB["name"]
API_TRAIN = {"dataset": "digits", "epochs": 2, "batch_size": 64, "embedding_dim": 32, "hidden": [64]}
HTTP_ERROR_LOG = "Failed to load resource: the server responded with a status of"
UI_TIMEOUT_MS = 15_000
TRAIN_TIMEOUT_MS = 180_000


class PageGuard:
    """Collects what must never happen on a console page; ``check()`` fails the test with all of it."""

    def __init__(
        self, page: Page, allowed: set[tuple[str, int]] | None = None, any_401: bool = False
    ) -> None:
        self.problems: list[str] = []
        self.allowed = allowed or set()  # (path, status) answers the page may get
        self.any_401 = any_401
        self.expected_console: list[re.Pattern[str]] = []  # console errors a test expects (and asserts)
        self.seen_expected: list[str] = []
        self.requests: list[str] = []
        self.foreign: list[str] = []  # requests for another host, seen before the browser decides on them
        self.csp_blocked: set[str] = set()  # ... of which the page's CSP stopped these (never sent)
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.problems.append(f"uncaught: {exc}"))
        page.on("request", self._request)
        page.on("requestfailed", self._failed)
        page.on("response", self._response)
        page.route("**/*", self._route)

    def _console(self, message: ConsoleMessage) -> None:
        # An HTTP error status is also logged by Chromium; _response judges those by their URL.
        if message.type != "error" or message.text.startswith(HTTP_ERROR_LOG):
            return
        if any(p.search(message.text) for p in self.expected_console):
            self.seen_expected.append(message.text)
        else:
            self.problems.append(f"console error: {message.text}")

    def _request(self, request: Request) -> None:
        self.requests.append(request.url)
        if not _local(request.url):
            self.foreign.append(request.url)

    def _failed(self, request: Request) -> None:
        if request.failure == "csp":
            self.csp_blocked.add(request.url)

    def _response(self, response: Any) -> None:
        path = urlsplit(response.url).path
        status = response.status
        if status >= 400 and (path, status) not in self.allowed and not (self.any_401 and status == 401):
            self.problems.append(f"HTTP {status} for {response.request.method} {path}")

    def _route(self, route: Route) -> None:
        if _local(route.request.url):
            route.continue_()
        else:  # it got past the page's own policy: it would have left the machine
            self.problems.append(f"request left 127.0.0.1: {route.request.url}")
            route.abort("blockedbyclient")

    def check(self) -> None:
        """Fail on everything collected; a request the page's CSP stopped was never sent (its console
        error is judged like any other)."""
        not_stopped = [u for u in self.foreign if u not in self.csp_blocked]
        problems = self.problems + [f"request for another host: {u}" for u in not_stopped]
        assert not problems, "\n".join(dict.fromkeys(problems))


def _local(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("data", "blob") or parts.hostname == "127.0.0.1"


def shoot(page: Page, name: str, readme: bool = False) -> Path:
    """Save a screenshot as a test artefact (and for the README when asked to)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    if readme and os.environ.get("UPDATE_README_SCREENSHOTS") == "1":
        README_IMAGES.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, README_IMAGES / f"console-{name}.png")
    return path


def digit_png(index: int) -> bytes:
    """One scikit-learn digit (8x8, values 0..16) as an 8-bit grayscale PNG."""
    image = load_digits().images[index]
    buffer = io.BytesIO()
    Image.fromarray(np.round(image * 255 / 16).astype(np.uint8), mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def blobs_npz() -> bytes:
    """A small uploadable data set: 40 vectors of 5 values in 2 well separated classes."""
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    np.savez(
        buffer, x=rng.normal(size=(40, 5)) + np.repeat(np.eye(2, 5) * 5, 20, axis=0), y=np.repeat([0, 1], 20)
    )
    return buffer.getvalue()


def add_digit_items(client: httpx.Client, n: int = 30) -> None:
    """Digits d0..d{n-1} as 64-value vectors with their labels (upserted: any test may add them)."""
    digits = load_digits()
    items = [
        {"id": f"d{i}", "vector": digits.data[i].tolist(), "label": str(digits.target[i])} for i in range(n)
    ]
    assert client.post("/items", json={"items": items}, params={"upsert": True}).status_code == 201


# -- fixtures ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is missing: apt-get install chromium (.ci/run does)"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def service_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("console") / "data"


@pytest.fixture(scope="module")
def service(service_data: Path) -> Iterator[ServerProcess]:
    server = ServerProcess(service_data, "--worker-heartbeat-interval", "0.5", worker=True)
    try:
        server.wait_ready(path="/health")
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def client(service: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=service.url, timeout=60) as c:
        yield c


def open_page(browser: Browser, base_url: str, **guard: Any) -> tuple[Page, PageGuard]:
    context = browser.new_context(base_url=base_url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(UI_TIMEOUT_MS)
    page = context.new_page()
    return page, PageGuard(page, **guard)


@pytest.fixture
def console(browser: Browser, service: ServerProcess) -> Iterator[tuple[Page, PageGuard]]:
    # Without collections (today) the console asks GET /collections once and gets a 404.
    page, guard = open_page(browser, service.url, allowed={("/collections", 404)})
    yield page, guard
    page.context.close()


@pytest.fixture
def active_model(client: httpx.Client) -> str:
    """The model the form trained and the Models page activated; trained over HTTP when run alone."""

    def serving() -> bool:
        return (client.get("/info").json()["model"] or {}).get("model_id") == MODEL_ID

    if not serving():
        deadline = time.monotonic() + TRAIN_TIMEOUT_MS / 1000
        if client.get(f"/models/{MODEL_ID}").status_code == 404:
            job = client.post("/train", json={**API_TRAIN, "name": MODEL_ID}).json()
            while client.get(f"/jobs/{job['id']}").json()["status"] != "succeeded":
                assert time.monotonic() < deadline, "training did not finish"
                time.sleep(0.3)
        assert client.post(f"/models/{MODEL_ID}/activate").status_code in (200, 202)
        while not serving():
            assert time.monotonic() < deadline, "activation did not finish"
            time.sleep(0.1)
    return MODEL_ID


# -- tests -----------------------------------------------------------------------------------------
def test_train_from_the_form_watch_it_and_activate(
    console: tuple[Page, PageGuard], client: httpx.Client, tmp_path: Path
):
    page, guard = console
    page.goto("/#/jobs")
    expect(page.get_by_role("heading", name="Jobs")).to_be_visible()
    page.get_by_role("link", name="New training job").click()
    expect(page.get_by_role("heading", name="New training job")).to_be_visible()

    # The form comes from /openapi.json's TrainRequest: every field of the config is there.
    spec = client.get("/openapi.json").json()
    fields = set(spec["components"]["schemas"]["TrainRequest"]["properties"])
    assert (
        set(page.locator("#train-form [data-field]").evaluate_all("els => els.map(e => e.dataset.field)"))
        == fields
    )
    expect(page.locator("#f-dataset")).to_have_value("digits")
    options = page.locator("#f-dataset option").evaluate_all("els => els.map(e => e.value)")
    assert {"digits", "mnist-5k", "fashion-mnist"} <= set(options)

    # Upload a data set: it is offered at once (then train on the built-in digits after all).
    blobs = tmp_path / "blobs.npz"
    blobs.write_bytes(blobs_npz())
    page.locator("#upload-file").set_input_files(blobs)
    page.get_by_role("button", name="Upload").click()
    expect(page.locator("#upload-status")).to_contain_text("40 samples, 2 classes")
    uploaded = client.get("/datasets").json()[0]["id"]
    expect(page.locator("#f-dataset")).to_have_value(uploaded)
    page.locator("#f-dataset").select_option("digits")

    # A bad value is refused by the service and shown at its field; nothing is queued.
    guard.allowed.add(("/train", 422))
    page.locator("#f-batch_size").fill("1")
    page.get_by_role("button", name="Start training").click()
    expect(page.locator('[data-field="batch_size"] .field-error')).to_contain_text(
        "greater than or equal to 2"
    )
    assert client.get("/jobs").json()["total"] == 0

    for name, value in FORM_JOB.items():
        page.locator(f"#f-{name}").fill(value)
    shoot(page, "new-job")
    page.get_by_role("button", name="Start training").click()

    # The live page follows the job to the end.
    expect(page).to_have_url(re.compile(r"#/jobs/job-"))
    job_id = page.url.rsplit("/", 1)[1]
    expect(page.locator("#job-status")).to_have_text("succeeded", timeout=TRAIN_TIMEOUT_MS)
    job = client.get(f"/jobs/{job_id}").json()
    assert job["config"]["epochs"] == 2 and job["config"]["hidden"] == [64] and job["model_id"] == MODEL_ID
    assert job["config"]["batch_size"] == 64 and job["config"]["embedding_dim"] == 32
    expect(page.locator("#job-epochs tbody tr")).to_have_count(len(job["metrics"]))
    expect(page.locator("#job-log")).to_contain_text("epoch 2/2")
    assert page.locator(".chart polyline").count() >= 2  # the loss curve and the validation curves
    expect(page.locator("#job-progress-bar")).to_have_attribute("value", "1")
    expect(page.locator("#job-result")).to_contain_text("knn 5 accuracy")
    shoot(page, "job", readme=True)

    # The model's page: its card, its report's plots (fetched with the key, shown as images).
    page.locator("#job-model-link").click()
    expect(page.get_by_role("heading", name=f"Model {MODEL_ID}")).to_be_visible()
    plots = page.locator("#model-plots img")
    expect(plots).to_have_count(3)
    assert all(w > 100 for w in plots.evaluate_all("imgs => imgs.map(i => i.naturalWidth)"))
    page.get_by_role("button", name="Activate").click()
    expect(page.locator(".title-row .badge")).to_have_text("active")
    assert client.get("/info").json()["model"]["model_id"] == MODEL_ID
    shoot(page, "model")
    guard.check()


def test_add_an_image_item_find_it_by_example_and_verify(
    console: tuple[Page, PageGuard], client: httpx.Client, active_model: str, tmp_path: Path
):
    page, guard = console
    add_digit_items(client)
    digits = load_digits()
    seven = next(i for i in range(100, 200) if digits.target[i] == 7)
    png = tmp_path / "seven.png"
    png.write_bytes(digit_png(seven))

    # Add the image through the Items page.
    page.goto("/#/items")
    expect(page.get_by_role("heading", name="Items")).to_be_visible()
    page.get_by_label("Image (PNG or JPEG)").set_input_files(png)
    page.get_by_label("New item's id").fill("my-seven")
    page.get_by_label("New item's label").fill("7")
    page.get_by_role("button", name="Add item").click()
    expect(page.locator("#status")).to_contain_text("Added item my-seven")
    stored = client.get("/items/my-seven").json()
    assert stored["label"] == "7" and stored["model"] == active_model

    # Find it by example: the same picture dropped in the playground is its own nearest neighbour.
    page.get_by_role("link", name="Playground").click()
    dropped = page.evaluate_handle(
        """(b64) => {
            const transfer = new DataTransfer();
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            transfer.items.add(new File([bytes], "seven.png", {type: "image/png"}));
            return transfer;
        }""",
        base64.b64encode(png.read_bytes()).decode(),
    )
    page.dispatch_event("#drop-zone", "drop", {"dataTransfer": dropped})  # a real drop event, with the file
    expect(page.locator("#query-preview")).to_contain_text("seven.png")
    page.get_by_role("button", name="Embed, search and classify").click()
    first = page.locator("#search-result tbody tr").first
    expect(first).to_have_attribute("data-neighbour", "my-seven")
    query = {"image": base64.b64encode(png.read_bytes()).decode()}
    answer = client.post("/search", json={"item": query, "k": 5}).json()["neighbors"]
    shown = page.locator("#search-result tbody tr").evaluate_all("rows => rows.map(r => r.dataset.neighbour)")
    assert shown == [n["id"] for n in answer]  # the page shows what the API answers, in its order
    assert float(first.locator("td.num").first.inner_text()) < 1e-3
    expect(page.locator("#search-result img.thumb")).to_have_count(5)  # image and vector thumbnails
    expect(page.locator("#embed-result")).to_contain_text("32")  # the embedding's dimension
    votes = client.post("/classify", json={"items": [query], "k": 5}).json()["predictions"][0]
    expect(page.locator("#classify-label")).to_have_text(f"Label {votes['label']}")
    assert votes["label"] == "7"

    # Verify two items: the page shows /verify's answer.
    page.get_by_label("First item id").fill("my-seven")
    page.get_by_label("Second item id").fill("d0")
    page.get_by_role("button", name="Verify", exact=True).click()
    truth = client.post("/verify", json={"a": {"id": "my-seven"}, "b": {"id": "d0"}}).json()
    expect(page.locator("#verify-verdict")).to_have_text("Same" if truth["same"] else "Different")
    for term in ("distance", "threshold"):
        shown = page.locator(f"#verify-result dt:text-is('{term.capitalize()}') + dd").inner_text()
        assert float(shown) == pytest.approx(truth[term], rel=1e-3, abs=1e-6)
    shoot(page, "playground")
    guard.check()


def test_every_page(console: tuple[Page, PageGuard], client: httpx.Client, active_model: str):
    page, guard = console
    add_digit_items(client)
    client.post("/items?upsert=true", json={"items": [{"id": "gone", "vector": [1.0] * 64, "label": "x"}]})
    # A second model to compare with, trained by the worker while the first pages are looked at.
    uploaded = client.post("/datasets", files={"file": ("blobs.npz", blobs_npz())}).json()["id"]
    second = client.post(
        "/train", json={"dataset": uploaded, "epochs": 1, "name": f"blobs-{uploaded}"}
    ).json()

    page.goto("/")
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    expect(page.locator("#overview-health")).to_contain_text(active_model)
    expect(page.locator("#overview-index")).to_contain_text("flat")
    size = client.get("/info").json()["index"]["size"]
    expect(page.locator("#overview-index")).to_contain_text(str(size))
    expect(page.locator("#overview-requests")).to_contain_text("GET /info")
    if os.environ.get("UPDATE_README_SCREENSHOTS") == "1":  # the second scrape fills in the rates
        rate = page.locator("#overview-requests tbody tr").first.locator("td").nth(2)
        expect(rate).not_to_have_text("—", timeout=10_000)
    shoot(page, "overview", readme=True)

    page.get_by_role("link", name="Jobs").click()
    row = page.locator("#jobs-list tbody tr", has_text=active_model)
    expect(row).to_contain_text("succeeded")
    row.get_by_role("link").first.click()
    expect(page.locator("#job-status")).to_have_text("succeeded")
    # Cancel a job from its page (queued or already running: either way it ends cancelled).
    doomed = client.post("/train", json={**API_TRAIN, "epochs": 200, "patience": 0, "name": "doomed"}).json()
    page.goto(f"/#/jobs/{doomed['id']}")
    page.get_by_role("button", name="Cancel job").click()
    expect(page.locator("#job-status")).to_have_text("cancelled", timeout=60_000)
    assert client.get(f"/jobs/{doomed['id']}").json()["status"] == "cancelled"

    deadline = time.monotonic() + TRAIN_TIMEOUT_MS / 1000
    while client.get(f"/jobs/{second['id']}").json()["status"] != "succeeded":
        assert time.monotonic() < deadline, "the second model did not train"
        time.sleep(0.2)
    page.get_by_role("link", name="Models").click()
    expect(page.locator(f'tr[data-model="{active_model}"]')).to_contain_text("active")
    # Two models side by side: the page shows both cards' numbers and their difference.
    page.get_by_label("First model").select_option(active_model)
    page.get_by_label("Second model").select_option(second["model_id"])
    cards = [client.get(f"/models/{m}").json()["card"]["metrics"] for m in (active_model, second["model_id"])]
    row = page.locator("#compare-table tr").filter(
        has=page.locator("td:first-child", has_text=re.compile(r"^knn 5 accuracy$"))
    )
    cells = row.locator("td.num").all_inner_texts()
    assert float(cells[0]) == pytest.approx(cards[0]["knn_5_accuracy"], abs=1e-4)
    assert float(cells[1]) == pytest.approx(cards[1]["knn_5_accuracy"], abs=1e-4)
    assert float(cells[2]) == pytest.approx(cards[1]["knn_5_accuracy"] - cards[0]["knn_5_accuracy"], abs=1e-3)
    page.get_by_role("link", name=active_model).first.click()
    expect(page.locator("#model-plots img")).to_have_count(3)

    # Items: filter by label, page through, delete one (the browser's confirm() is accepted).
    page.get_by_role("link", name="Items").click()
    expect(page.locator("#items-range")).to_contain_text(f"of {size}")
    page.get_by_label("Label", exact=True).fill("x")
    page.get_by_role("button", name="Apply").click()
    expect(page.locator("#items-range")).to_have_text("1–1 of 1 labelled “x”")
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator('tr[data-item="gone"]').get_by_role("button", name="Delete").click()
    expect(page.locator("#status")).to_contain_text("Deleted gone")
    assert client.get("/items/gone").status_code == 404
    page.goto("/#/items?limit=10")
    expect(page.locator("table tbody tr")).to_have_count(10)
    page.get_by_role("button", name="Next →").click()
    expect(page.locator("#items-range")).to_contain_text("11–20")
    expect(page.locator("img.thumb").first).to_be_visible()
    shoot(page, "items")

    # Keyboard: Tab reaches the skip link first, which leads into the page's own controls.
    page.goto("/#/playground")
    page.reload()  # a fresh document: focus starts at the top
    expect(page.get_by_role("heading", name="Playground")).to_be_visible()
    page.keyboard.press("Tab")
    expect(page.locator("#skip-link")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("main")).to_be_focused()
    page.keyboard.press("Tab")
    expect(page.locator("#query-image")).to_be_focused()
    guard.check()


def test_docs_render_every_operation_offline(browser: Browser, service: ServerProcess, client: httpx.Client):
    spec = client.get("/openapi.json").json()
    operation_ids = {op["operationId"] for ops in spec["paths"].values() for op in ops.values()}
    assert len(operation_ids) >= 20
    page, guard = open_page(browser, service.url)
    try:
        page.goto("/docs")  # every request off 127.0.0.1 is aborted: the page must not need one
        blocks = page.locator(".opblock")
        expect(blocks).to_have_count(len(operation_ids))
        shown = blocks.evaluate_all("els => els.map(e => e.id)")  # "operations-{tag}-{operationId}"
        assert {i.split("-", 2)[2] for i in shown} == operation_ids
        shoot(page, "docs")

        # ReDoc's menu always shows a logo from its CDN; the page's CSP stops that request in the browser.
        guard.expected_console.append(
            re.compile(r"'https://cdn\.redoc\.ly/[^']*' violates the following Content Sec")
        )
        page.goto("/redoc")
        expect(page.locator("h1").first).to_contain_text("Embedding service")
        sections = page.locator("[data-section-id^='operation/']")
        expect(sections).to_have_count(len(operation_ids))
        shown = sections.evaluate_all("els => els.map(e => e.dataset.sectionId)")
        assert {i.removeprefix("operation/") for i in shown} == operation_ids
        shoot(page, "redoc")
        guard.check()
    finally:
        page.context.close()


def raw_get(url: str, path: str) -> tuple[int, bytes]:
    """GET a path exactly as written (no client-side normalisation of ``..`` or escapes)."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        connection.putrequest("GET", path, skip_accept_encoding=True)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_console_serves_only_its_own_files(service: ServerProcess, client: httpx.Client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert not re.search(r"(src|href)=\"(https?:)?//", page.text), "the page loads nothing from elsewhere"
    script = client.get("/console/js/app.js")
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    docs = client.get("/docs")
    assert "/docs-assets/swagger-ui-bundle.js" in docs.text and "cdn." not in docs.text
    assert "default-src 'self'" in docs.headers["content-security-policy"]
    assert client.get("/docs-assets/swagger-ui-bundle.js").status_code == 200
    for path in (
        "/console/../service.db",
        "/console/%2e%2e/%2e%2e/service/app.py",
        "/console/js/../../__init__.py",
        "/console//etc/passwd",
        "/console/index.html.bak",
        "/console/",
        "/docs-assets/..%2fcore.py",
        "/docs-assets/core.py",
    ):
        status, body = raw_get(service.url, path)
        assert status in (400, 404), (path, status)
        assert b"import" not in body and b"root:" not in body, path


def test_request_rates_and_latencies_read_from_metrics(console: tuple[Page, PageGuard], client: httpx.Client):
    """The console's Prometheus reading agrees with a plain reading of the same text."""
    page, guard = console
    page.goto("/")
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    text = client.get("/metrics").text
    parsed = page.evaluate(
        """async (text) => {
            const prom = await import("/console/js/prom.js");
            const stats = [...prom.routeStats(prom.parseMetrics(text)).values()];
            return stats.map((r) => ({key: r.key, count: r.count, errors: r.errors, sum: r.sum,
                p50: prom.histogramQuantile(0.5, r.buckets), p95: prom.histogramQuantile(0.95, r.buckets)}));
        }""",
        text,
    )
    expected = plain_route_stats(text)
    assert {r["key"] for r in parsed} == set(expected)
    for route in parsed:
        want = expected[route["key"]]
        assert route["count"] == want["count"] and route["errors"] == want["errors"]
        assert route["sum"] == pytest.approx(want["sum"])
        assert route["p50"] == pytest.approx(want["p50"]) and route["p95"] == pytest.approx(want["p95"])
    guard.check()


def plain_route_stats(text: str) -> dict[str, dict[str, float]]:
    """Requests, errors, latency sum and quantiles per route, read line by line (the reference)."""
    out: dict[str, dict[str, Any]] = {}
    for line in text.splitlines():
        match = re.match(r"^(embed_http_request\w*)\{(.*)\} (\S+)$", line)
        if not match:
            continue
        name, labels, value = (
            match.group(1),
            dict(re.findall(r'(\w+)="([^"]*)"', match.group(2))),
            float(match.group(3)),
        )
        route = out.setdefault(
            f"{labels['method']} {labels['route']}", {"count": 0.0, "errors": 0.0, "sum": 0.0, "buckets": {}}
        )
        if name == "embed_http_requests_total":
            route["count"] += value
            route["errors"] += value if int(labels["status"]) >= 400 else 0
        elif name == "embed_http_request_duration_seconds_sum":
            route["sum"] += value
        elif name == "embed_http_request_duration_seconds_bucket":
            route["buckets"][float(labels["le"])] = value
    for route in out.values():
        bounds = sorted(route["buckets"])
        for q in (0.5, 0.95):
            route[f"p{round(q * 100)}"] = quantile(q, [(b, route["buckets"][b]) for b in bounds])
    return out


def quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Prometheus' histogram_quantile: linear inside the bucket that holds rank q * total."""
    if not buckets or buckets[-1][1] == 0:
        return float("nan")
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return lower
            return bound if count == below else lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower


def test_api_key_prompt_then_data(browser: Browser, tmp_path: Path, service_data: Path, active_model: str):
    """With a key, the console asks once and sends it with every call (the report's plots too)."""
    key = "s3cret-key"
    model = service_data / "models" / active_model
    with ServerProcess(tmp_path / "data", "--model", str(model), "--api-key", key) as server:
        server.wait_ready(path="/health")
        assert httpx.get(server.url + "/info").status_code == 401  # the API stays guarded
        assert httpx.get(server.url + "/console/js/api.js").status_code == 200  # its files are public
        page, guard = open_page(browser, server.url, allowed={("/collections", 404)}, any_401=True)
        try:
            page.goto(f"/#/models/{active_model}")
            dialog = page.get_by_role("dialog", name="API key needed")
            expect(dialog).to_be_visible()
            page.get_by_label("API key", exact=True).fill("wrong")
            page.keyboard.press("Enter")
            expect(dialog).to_contain_text("refused that API key")
            page.get_by_label("API key", exact=True).fill(key)
            page.get_by_role("button", name="Use this key").click()
            expect(dialog).to_be_hidden()
            plots = page.locator("#model-plots img")
            expect(plots).to_have_count(3)
            assert all(w > 100 for w in plots.evaluate_all("imgs => imgs.map(i => i.naturalWidth)"))
            assert page.evaluate("sessionStorage.getItem('embedding-console.api-key')") == key
            page.goto("/")
            page.reload()  # kept for the tab: no second prompt
            expect(page.locator("#overview-health")).to_contain_text(active_model)
            expect(dialog).to_be_hidden()
            shoot(page, "api-key")
            guard.check()
        finally:
            page.context.close()
