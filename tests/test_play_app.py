"""The Play tab's engine in process (a tiny world model): games from every source, one frame per action, the API's
sessions, and bad input refused with a clear message."""

import gradio as gr
import numpy as np
import pytest
from conftest import perturbed_tiny

from msc.play_app import CONTEXT_FRAMES, MAX_API_GAMES, PlayTab, photo_tensor
from msc.world import ACTIONS


def screen_pixels(html: str) -> np.ndarray:
    """The pixels of the PNG inside the tab's screen (``msc.play_app.screen_html``)."""
    import base64
    import io
    import re

    from PIL import Image

    data = re.search(r'src="data:image/png;base64,([^"]+)"', html).group(1)
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB"))


def frame_pixels(frame) -> np.ndarray:
    return ((frame.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()


@pytest.fixture(scope="module")
def tab(tmp_path_factory):
    return PlayTab(perturbed_tiny(prior="previous_frame", actions=len(ACTIONS)), out_dir=str(tmp_path_factory.mktemp("play")))


@pytest.mark.parametrize("source", ["nothing", "example", "photo"])
def test_a_game_starts_from_each_source_and_steps_one_frame_per_action(tab, source):
    photo = (np.random.default_rng(0).random((40, 60, 3)) * 255).astype(np.uint8)
    game, screen, status = tab.start(source, 3, photo)
    first = 1 if source == "nothing" else CONTEXT_FRAMES
    assert len(game.player) == first and f"frame {first}" in status
    assert np.array_equal(screen_pixels(screen), frame_pixels(game.player.frames[-1][0]))  # the frame itself, lossless
    for action in ("left", "right", "none"):
        game, screen, status = tab.press(game, action)
    assert len(game.player) == first + 3 and "frames/s" in status and "action to frame" in status and "Low-Res share" in status
    assert tab.download(game).endswith(".mp4")


def test_the_api_plays_by_session_id_and_refuses_what_it_cannot_play(tab):
    session, image, status = tab.api_start("example", 5, None)
    frame, status = tab.api_step(session, "up")
    assert "frame 5" in status and frame.shape == (64, 64, 3)
    with pytest.raises(gr.Error, match="action must be one of"):
        tab.api_step(session, "jump")
    with pytest.raises(gr.Error, match="no such game"):
        tab.api_step("not-a-session", "left")
    with pytest.raises(gr.Error, match="start must be one of"):
        tab.api_start("somewhere", 0, None)
    with pytest.raises(gr.Error, match="needs a photo"):
        tab.api_start("photo", 0, None)
    with pytest.raises(gr.Error, match="seed must be"):
        tab.api_start("example", -1, None)
    for _ in range(MAX_API_GAMES):  # the oldest API game goes first; the newest stay playable
        newest = tab.api_start("nothing", 0, None)[0]
    with pytest.raises(gr.Error, match="no such game"):
        tab.api_step(session, "left")
    assert "frame 2" in tab.api_step(newest, "left")[1]


def test_a_photo_that_is_not_an_image_is_refused():
    with pytest.raises(ValueError, match="must be an image"):
        photo_tensor(np.zeros((4, 4, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="must be an image"):
        photo_tensor(np.zeros((40, 40, 3), dtype=np.float32))
    assert photo_tensor(np.zeros((20, 30), dtype=np.uint8)).shape == (3, 20, 30)


def test_only_a_world_model_can_play(tiny_model):
    with pytest.raises(ValueError, match="needs a world model"):
        PlayTab(tiny_model)


def test_keys_a_press_is_one_frame_a_held_key_plays_until_released_or_unheard():
    from msc.play_app import HELD_KEY_SECONDS, Keys

    now = [0.0]
    keys = Keys(clock=lambda: now[0])
    assert keys.start_playing() and not keys.start_playing()  # one generator plays a tab's keys
    keys.down(1)
    keys.up()  # a press: down and up before any frame
    assert keys.next_action() == 1 and keys.next_action() is None and not keys.playing
    keys.down(2)  # held
    assert [keys.next_action() for _ in range(3)] == [2, 2, 2]
    now[0] += HELD_KEY_SECONDS / 2
    keys.down(2)  # the page says it is still down: no extra frame, only renewed
    assert keys.next_action() == 2
    keys.down(3)  # another key while the first is held: its frame, then it is the one held
    assert [keys.next_action() for _ in range(2)] == [3, 3]
    now[0] += 2 * HELD_KEY_SECONDS  # nothing heard of the key since: released (a lost keyup)
    assert keys.next_action() is None
    keys.up()
    keys.down(4)  # an up that overtook its down: the key counts as held for HELD_KEY_SECONDS at most
    assert keys.next_action() == 4
    now[0] += 2 * HELD_KEY_SECONDS
    assert keys.next_action() is None


def test_a_held_key_streams_frames_of_the_game(tab):
    from msc.play_app import Keys

    class Request:
        session_hash = "tab-keys"

    game, _, _ = tab.start("example", 2, None)
    keys = tab.keyboards.of(Request())
    assert isinstance(keys, Keys) and tab.keyboards.of(Request()) is keys
    tab.keyboards.down("left", Request())
    played = tab.play_keys(game, Request())
    for _ in range(3):  # the key is held (the page says so again before each frame): frames keep coming
        tab.keyboards.down("left", Request())
        game, screen, status = next(played)
    tab.keyboards.up(Request())
    assert list(played) == [] and len(game.player) == CONTEXT_FRAMES + 3
    assert np.array_equal(screen_pixels(screen), frame_pixels(game.player.frames[-1][0]))
    tab.keyboards.handler("right")(Request())
    tab.keyboards.up(Request())
    assert len(list(tab.play_keys(game, Request()))) == 1  # a press: one frame
    assert all(out is gr.skip() or out == gr.skip() for out in next(tab.play_keys(game, Request())))  # nothing to play
    with pytest.raises(gr.Error, match="action must be one of"):
        tab.keyboards.down("jump", Request())
    tab.keyboards.down("up", Request())
    with pytest.raises(gr.Error, match="press Start first"):
        list(tab.play_keys(None, Request()))
    assert tab.keyboards.of(Request()).next_action() is None  # the keys of a failed play are forgotten
