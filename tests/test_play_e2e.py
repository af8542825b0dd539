"""The Play tab end to end: ``python app.py --world-weights`` (a tiny world model) driven through ``gradio_client``
(/play_start, /play_step by session id) and a real Chromium (the arrow keys press the tab's buttons)."""

import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from conftest import perturbed_tiny

from msc.world import ACTIONS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "GRADIO_ANALYTICS_ENABLED": "False"}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def play_server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("world")
    perturbed_tiny(prior="previous_frame", actions=len(ACTIONS)).save_pretrained(folder / "world")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(folder / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port), "--world-weights", str(folder / "world")], cwd=ROOT,
                            env={**os.environ, **OFFLINE}, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                pytest.fail(f"app.py --world-weights did not come up (exit code {proc.poll()}): {open(folder / 'server.log').read()[-2000:]}")
            time.sleep(0.5)
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


def test_play_api_by_session_id(play_server):
    from gradio_client import Client

    client = Client(play_server, verbose=False)
    named = client.view_api(return_format="dict")["named_endpoints"]
    assert {p["parameter_name"] for p in named["/play_step"]["parameters"]} == {"session_id", "action"}
    session, frame, status = client.predict("example", 2, None, api_name="/play_start")
    frame, status = client.predict(session, "left", api_name="/play_step")
    assert os.path.getsize(frame) > 0 and "frame 5" in status and "frames/s" in status
    with pytest.raises(Exception, match="action must be one of"):
        client.predict(session, "jump", api_name="/play_step")
    with pytest.raises(Exception, match="no such game"):
        client.predict("expired", "left", api_name="/play_step")
    frame, status = client.predict(session, "right", api_name="/play_step")  # still serving after the refusals
    assert "frame 6" in status


@pytest.mark.browser
def test_browser_arrow_keys_play(play_server):
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"Chromium is not installed at {CHROMIUM} (apt-get install -y chromium; .ci/run does)")
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.goto(play_server, wait_until="load")
        page.get_by_role("tab", name="Play").click()
        page.locator("#play-start").click()
        status = page.locator("#play-status")
        status.get_by_text("frame 4 ").wait_for(timeout=60_000)
        page.locator("body").click(position={"x": 5, "y": 5})  # the focus off any text field
        page.keyboard.press("ArrowLeft")
        status.get_by_text("frame 5 ").wait_for(timeout=60_000)
        page.keyboard.press("ArrowRight")
        status.get_by_text("frame 6 ").wait_for(timeout=60_000)
        text = status.inner_text()
        assert "frames/s" in text and "action to frame" in text and "Low-Res share" in text
        browser.close()
