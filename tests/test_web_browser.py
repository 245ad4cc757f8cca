"""The web workspace in a real headless Chromium (Debian's, driven by Playwright) while a real daemon renders
with the tiny model: select frames, see the cost, Generate, watch the track, read its Render Info, play it."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from daemon.web.app import create_app
from daemon.web.guard import allowed_hosts
from tests.harness import RunningDaemon, settings_for

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
playwright_api = pytest.importorskip("playwright.sync_api", reason="Playwright is installed by `make setup`")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is installed by `make setup` (as root)")
# Set to a PNG path to keep a screenshot of the workspace (docs/images/web-workspace.png is made this way).
SCREENSHOT = os.environ.get("HOTSHOT_WEB_SCREENSHOT")


class Server:
    """uvicorn serving the workspace on a free loopback port, in a background thread."""

    def __init__(self, settings) -> None:
        import uvicorn

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        app = create_app(settings, allowed_hosts("127.0.0.1", []), None)
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, name="test-web", daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        assert self.server.started, "the web server did not start"
        return f"http://127.0.0.1:{self.port}/"

    def __exit__(self, *exc_info) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, models_dir, tiny_spec):
    """The demo shot (the bundled Chaplin clip) under a running daemon and the web server; a browser page on it."""
    tmp = tmp_path_factory.mktemp("web")
    settings = settings_for(tmp, models_dir)
    shot = settings.roots[0] / "demo"
    shot.mkdir()
    shutil.copy(Path(__file__).parent / "data" / "chaplin.mp4", shot / "plate.mp4")
    with RunningDaemon(settings), Server(settings) as url, playwright_api.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM,
                                         args=["--no-sandbox", "--autoplay-policy=no-user-gesture-required"])
        page = browser.new_page(viewport={"width": 1680, "height": 1000})
        page.set_default_timeout(30_000)
        page.goto(url)
        page.wait_for_selector('.track[data-state="source"]')
        yield page, shot
        browser.close()


def drag_frames(page, first: int, last: int, total: int) -> None:
    """Drag across the source track from frame `first` to frame `last` (of `total`)."""
    box = page.locator('.track[data-state="source"] .lane').bounding_box()
    y = box["y"] + box["height"] / 2
    x = lambda frame: box["x"] + box["width"] * (frame + 0.5) / total  # noqa: E731 - the middle of a frame
    page.mouse.move(x(first), y)
    page.mouse.down()
    page.mouse.move(x((first + last) / 2), y, steps=3)
    page.mouse.move(x(last), y, steps=3)
    page.mouse.up()


def wait_text(page, selector: str, text: str, timeout: float = 30.0) -> str:
    """Wait until `selector` shows `text`; on timeout say what it showed instead."""
    deadline = time.monotonic() + timeout
    shown = None
    while time.monotonic() < deadline:
        shown = page.text_content(selector)
        if shown and text in shown:
            return shown
        time.sleep(0.1)
    raise AssertionError(f"{selector} shows {shown!r}, not {text!r} (errors: {page.text_content('.err.general')!r})")


def states_of(page, selector: str, until: str, timeout: float = 150.0) -> list[str]:
    """The states a track shows, in order, until it shows `until`."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = page.locator(selector)
        state = found.first.get_attribute("data-state") if found.count() else None
        if state and (not seen or seen[-1] != state):
            seen.append(state)
        if state == until:
            return seen
        time.sleep(0.1)
    raise AssertionError(f"{selector} showed {seen}, never {until}")


def test_generate_a_range_watch_it_render_read_its_info_and_play_it(workspace):
    """Dragging frames 8-15 on the source track shows those frame numbers and their cost; Generate (with the daemon
    paused) makes a track that goes queued → running → done once resumed; its Render Info opens, and the render
    plays in the viewport (the video's time and the frame number advance)."""
    page, shot = workspace
    drag_frames(page, 8, 15, 241)
    assert (page.input_value("#range-first"), page.input_value("#range-last")) == ("8", "15")
    wait_text(page, "#cost", "frames 8–15 (8 frames)")
    assert "credits" in page.text_content("#cost")
    page.click('.subtab[data-group="advanced"]')
    page.fill("#f-output_size", "64")
    page.fill("#f-steps", "1")
    page.fill("#f-seed", "7")
    page.click("#pause")
    wait_text(page, "#daemon-state", "paused")
    page.click("#generate")
    page.wait_for_selector('.track[data-depth="1"][data-state="queued"]')
    page.click("#resume")
    seen = states_of(page, '.track[data-depth="1"]', "done")
    assert seen[0] == "queued" and "running" in seen and seen[-1] == "done", seen
    assert page.text_content('.track[data-depth="1"] .span') == "8–15"
    assert (shot / "plate_r001.mp4").exists()

    page.click('.track[data-depth="1"] .head .name')
    page.click("#tab-info")
    page.wait_for_selector("#render-info h3")
    assert page.text_content("#render-info h3") == "plate_r001"
    assert "plate.mp4 → plate_r001" in page.text_content("#render-info .chain")
    assert page.locator("#render-info tr", has_text="steps").first.text_content().endswith("request")

    page.click("#play")
    page.wait_for_function("document.querySelector('#player').currentTime > 0.1", timeout=15_000)
    page.wait_for_function("Number(document.querySelector('#frame-readout').dataset.frame) > 0")
    assert "source" in page.text_content("#frame-readout")


def test_further_pass_cancel_and_a_refused_setting(workspace):
    """A render chosen as the source renders a further pass that sits under its parent at the parent's source
    frames; a job waiting for its start time is cancelled from its track; steps 0 is refused next to its field."""
    page, shot = workspace
    page.click("#tab-settings")
    page.select_option("#source", "plate_r001.mp4")
    page.fill("#range-first", "0")
    page.fill("#range-last", "3")
    page.dispatch_event("#range-last", "change")
    wait_text(page, "#cost", "frames 0–3 (4 frames)")
    page.click("#generate")
    states_of(page, '.track[data-depth="2"]', "done")
    assert page.text_content('.track[data-depth="2"] .span') == "8–11"
    assert (shot / "plate_r002.mp4").exists()

    page.select_option("#source", "plate.mp4")
    page.fill("#range-first", "0")
    page.fill("#range-last", "7")
    page.dispatch_event("#range-last", "change")
    page.fill("#f-when", "2099-01-01T00:00")
    page.click("#generate")
    waiting = '.track[data-depth="1"][data-state="waiting"]'
    page.wait_for_selector(waiting)
    assert "starts 2099-01-01" in page.text_content(f"{waiting} .detail")
    page.click(f'{waiting} button[data-action="cancel"]')
    page.wait_for_selector('.track[data-depth="1"][data-state="cancelled"]')
    page.fill("#f-when", "")

    if SCREENSHOT:
        page.click('.track[data-state="source"] .head .name')
        page.click("#tab-settings")
        page.click('.subtab[data-group="basic"]')
        page.fill("#f-prompt", "a hand-tinted vintage film still, warm sepia light")
        drag_frames(page, 24, 71, 241)
        wait_text(page, "#cost", "frames 24–71")
        page.evaluate("document.querySelector('#player').currentTime = 1.5")
        time.sleep(1.0)
        Path(SCREENSHOT).write_bytes(page.screenshot())  # (with path=, Playwright leaves a writer thread behind)

    page.click('.subtab[data-group="advanced"]')
    page.fill("#f-steps", "0")
    page.click("#generate")
    error = page.locator('.err[data-for="steps"]')
    error.wait_for()
    assert error.text_content() == "steps: Input should be greater than or equal to 1 (got 0)"
    assert "invalid" in page.get_attribute("#f-steps", "class")
