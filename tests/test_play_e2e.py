"""The Play tab end to end: ``python app.py --world-weights`` (a tiny world model) driven through ``gradio_client``
(/play_start, /play_step by session id) and a real Chromium (the arrow keys press the tab's buttons)."""

import os

import pytest
from conftest import perturbed_tiny, running_app

from msc.world import ACTIONS

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def play_server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("world")
    perturbed_tiny(prior="previous_frame", actions=len(ACTIONS)).save_pretrained(folder / "world")
    yield from running_app(str(folder / "server.log"), "--world-weights", str(folder / "world"))


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
    job = client.submit(session, "right, left up", api_name="/play_stream")  # a held key: frame by frame
    job.result(timeout=120)
    outputs = job.outputs()
    assert [status.split(" ·")[0] for _, status in outputs] == ["frame 7", "frame 8", "frame 9"]
    with pytest.raises(Exception, match="action must be one of"):
        client.predict(session, "right jump", api_name="/play_stream")  # checked before any frame
    _, status = client.predict(session, "none", api_name="/play_step")
    assert "frame 10" in status


@pytest.mark.browser
def test_browser_arrow_keys_play(play_server, browser):
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.goto(play_server, wait_until="load")
    page.get_by_role("tab", name="Play").click()
    page.locator("#play-start").click()
    status = page.locator("#play-status")
    status.get_by_text("frame 4 ").wait_for(timeout=60_000)
    page.locator("body").click(position={"x": 5, "y": 5})  # the focus off any text field

    def frames() -> int:
        return int(status.inner_text().split("frame ", 1)[1].split(" ", 1)[0])

    def played_after(before: int) -> None:  # the frame count grows past it (a press is one frame, more if the page
        # says the key is still down when the frame is done: a busy machine may show two)
        page.wait_for_function(f"() => parseInt(document.querySelector('#play-status').innerText.split('frame ')[1]) > {before}",
                               timeout=60_000)

    for key in ("ArrowLeft", "ArrowRight"):
        before = frames()
        page.keyboard.press(key)
        played_after(before)
    held = frames()
    page.keyboard.down("ArrowUp")  # a key held: a stream of frames (the keyboard's own repeats are ignored)
    played_after(held + 2)
    page.keyboard.up("ArrowUp")
    text = status.inner_text()
    assert "frames/s" in text and "action to frame" in text and "Low-Res share" in text
