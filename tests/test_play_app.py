"""The Play tab's engine in process (a tiny world model): games from every source, one frame per action, the API's
sessions, and bad input refused with a clear message."""

import gradio as gr
import numpy as np
import pytest
from conftest import perturbed_tiny

from msc.play_app import CONTEXT_FRAMES, MAX_API_GAMES, PlayTab, photo_tensor
from msc.world import ACTIONS


@pytest.fixture(scope="module")
def tab(tmp_path_factory):
    return PlayTab(perturbed_tiny(prior="previous_frame", actions=len(ACTIONS)), out_dir=str(tmp_path_factory.mktemp("play")))


@pytest.mark.parametrize("source", ["nothing", "example", "photo"])
def test_a_game_starts_from_each_source_and_steps_one_frame_per_action(tab, source):
    photo = (np.random.default_rng(0).random((40, 60, 3)) * 255).astype(np.uint8)
    game, image, status = tab.start(source, 3, photo)
    first = 1 if source == "nothing" else CONTEXT_FRAMES
    assert len(game.player) == first and image.shape == (64, 64, 3) and f"frame {first}" in status
    for action in ("left", "right", "none"):
        game, image, status = tab.press(game, action)
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
