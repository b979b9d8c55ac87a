"""Browser tests: the app served by gunicorn's gevent worker with a real RQ worker, a real
clamd and the student-records simulator, driven by Debian's Chromium through Playwright.

Fixtures for any browser test: `live_server` (the base URL, web and worker running),
`browser_page` (a fresh page in headless Chromium) and `login(page, base_url, name)`; for finer
control `web_server` (gunicorn only) and `start_worker` (starts a worker when called).
Modules here mark themselves `pytestmark = [pytest.mark.slow, pytest.mark.browser]`."""

import pytest
from playwright.sync_api import sync_playwright

from simulators.admin_records import AdminRecordsSimulator
from tests.clamd import ClamdServer
from tests.conftest import PASSWORD, process_env
from tests.e2e.servers import PipelineWorker, WebServer
from tests.services import free_port

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]
RECORDS_SECRET = "e2e-records-secret"


@pytest.fixture(scope="session")
def clamd(tmp_path_factory):
    server = ClamdServer(tmp_path_factory.mktemp("e2e-clamd")).start()
    yield server
    server.stop()


@pytest.fixture
def records():
    simulator = AdminRecordsSimulator(secret=RECORDS_SECRET).start()
    yield simulator
    simulator.stop()


@pytest.fixture
def stack_env(app, clamd, records):
    return process_env(app, CLAMD_SOCKET=clamd.socket, ADMIN_SYNC_URL=records.records_url,
                       ADMIN_SYNC_SECRET=RECORDS_SECRET)


@pytest.fixture
def web_server(stack_env, tmp_path):
    port = free_port()
    server = WebServer({**stack_env, "PUBLIC_URL": f"http://127.0.0.1:{port}"},
                       tmp_path / "web.log", port=port).start()
    yield server
    server.stop()


@pytest.fixture
def start_worker(stack_env, tmp_path):
    workers = []

    def start():
        worker = PipelineWorker(stack_env, tmp_path / f"worker-{len(workers)}.log").start()
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()


@pytest.fixture
def live_server(web_server, start_worker):
    start_worker()
    return web_server.url


@pytest.fixture(scope="package")
def chromium():
    """One Chromium for the browser tests; each test gets contexts (cookies, storage) of its own."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                             args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def browser_page(chromium):
    context = chromium.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(20_000)
    yield page
    # With any other context the test opened on the same browser.
    for context in chromium.contexts:
        context.close()


def login(page, base_url, name):
    page.goto(f"{base_url}/login")
    page.fill("#email", f"{name}@uni.test")
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base_url}/")
