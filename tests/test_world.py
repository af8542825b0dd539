"""The world engine: deterministic in (seed, actions), the actions move the view, bad actions are refused."""

import pytest
import torch

from msc.world import ACTIONS, SPEED, World, check_action, episode


def test_the_contract():
    assert ACTIONS[0] == "none" and {"left", "right", "up", "down"} <= set(ACTIONS)
    world = World(seed=3)
    first = world.reset()
    assert first.shape == (3, 64, 64) and first.dtype == torch.float32
    assert float(first.min()) >= -1 and float(first.max()) <= 1
    assert world.step(1).shape == (3, 64, 64)


def test_same_seed_and_actions_same_frames_other_seed_other_frames():
    actions = [1, 1, 3, 0, 2, 4, 4]
    a, b = World(7).rollout(actions), World(7).rollout(actions)
    assert torch.equal(a, b)
    assert not torch.equal(a, World(8).rollout(actions))
    frames, taken = episode(11, 6)
    again, same = episode(11, 6)
    assert torch.equal(frames, again) and torch.equal(taken, same) and taken[0] == 0 and taken.shape == (6,)


def test_moving_left_shifts_the_picture_right_and_back():
    world = World(5, sprites=0)
    world.camera = (40, 40)  # away from the picture's edges
    before = world.render()
    after = world.step("left")
    # the picture under the view moved SPEED pixels to the right (away from the marker in the middle)
    assert torch.allclose(after[:, :20, SPEED:], before[:, :20, :-SPEED])
    back = world.step("right")
    assert torch.allclose(back[:, :20], before[:, :20])


def test_a_photo_becomes_the_picture():
    photo = torch.zeros(3, 90, 120, dtype=torch.uint8)
    photo[0] = 255  # red
    frame = World(0, photo=photo, sprites=0).reset()
    assert torch.allclose(frame[:, 0, 0], torch.tensor([1.0, -1.0, -1.0]))


@pytest.mark.parametrize("action", ["jump", 5, -1, 1.0, True])
def test_unknown_actions_are_refused(action):
    with pytest.raises(ValueError, match="action must be one of"):
        check_action(action)
    with pytest.raises(ValueError, match="action must be one of"):
        World(0).step(action)
