"""Action conditioning (the world model): one action per frame, frame-causal, through the KV cache and guidance."""

import pytest
import torch
from conftest import perturbed_tiny, random_context

from msc.sampling import sample_video
from msc.train import main as train_main
from msc.world import ACTIONS


@pytest.fixture(scope="module")
def world_model():
    return perturbed_tiny(prior="previous_frame", actions=len(ACTIONS))


def _actions(length: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, len(ACTIONS), (1, length), generator=torch.Generator().manual_seed(seed))


def test_a_frame_depends_on_the_actions_up_to_its_own_only(world_model):
    x, t = random_context(6), torch.rand(1, 6)
    actions = _actions(6)
    changed = actions.clone()
    changed[0, 3] = (changed[0, 3] + 1) % len(ACTIONS)
    a, b = world_model(x, t, actions=actions), world_model(x, t, actions=changed)
    assert torch.equal(a[:, :3], b[:, :3])  # frames before the changed action: untouched
    assert not torch.allclose(a[:, 3], b[:, 3])  # the frame it led to: changed


def test_sampled_frames_follow_only_earlier_actions_and_the_cache_is_exact(world_model):
    context, actions = random_context(3), _actions(3 + 5)
    kw = dict(steps=2, chunk=1, seed=2, actions=actions)
    video = sample_video(world_model, context, 5, **kw).video
    assert (video - sample_video(world_model, context, 5, use_cache=False, **kw).video).abs().max() <= 1e-4
    changed = actions.clone()
    changed[0, 5] = (changed[0, 5] + 2) % len(ACTIONS)  # the action that leads to frame 5
    other = sample_video(world_model, context, 5, steps=2, chunk=1, seed=2, actions=changed).video
    assert torch.equal(other[:, :5], video[:, :5]) and not torch.equal(other[:, 5], video[:, 5])
    guided = dict(kw, history_guidance=2.0)
    assert (sample_video(world_model, context, 5, **guided).video
            - sample_video(world_model, context, 5, use_cache=False, **guided).video).abs().max() <= 1e-4


def test_actions_are_checked(world_model, tiny_model):
    with pytest.raises(ValueError, match="conditioned on actions"):
        sample_video(world_model, random_context(2), 2)
    with pytest.raises(ValueError, match=r"\[B, K \+ frames\]"):
        sample_video(world_model, random_context(2), 2, actions=_actions(3))
    with pytest.raises(ValueError, match="must lie in"):
        sample_video(world_model, random_context(2), 2, actions=torch.full((1, 4), 9))
    with pytest.raises(ValueError, match="takes no actions"):
        sample_video(tiny_model, random_context(2), 2, actions=_actions(4))


def test_a_world_model_trains_on_world_episodes(tmp_path):
    train_main(["--config", "tiny", "--data", "world", "--set", "prior=previous_frame", f"actions={len(ACTIONS)}",
                         "--frames", "4", "--batch-size", "2", "--steps", "2", "--no-progress", "--out", str(tmp_path / "run")])
    assert (tmp_path / "run" / "final" / "model.safetensors").exists()


def test_the_action_following_bench_scores_true_other_and_frozen(world_model, tmp_path):
    from bench.world import action_following, format_table
    from msc.sampling import SamplerSettings

    report = action_following(world_model, episodes=2, context=2, frames=3, sampler=SamplerSettings(steps=1, chunk=1))
    assert set(report["scores"]) == {"true actions", "other actions", "copy-last"}
    assert report["other_actions_differ"] > 0 and isinstance(report["met"], bool)
    assert "true actions - other actions" in format_table(report)


@pytest.mark.parametrize("guidance", [1.0, 2.0])
def test_live_play_equals_sampling_the_whole_action_sequence(world_model, guidance):
    from msc.play import Player
    from msc.sampling import SamplerSettings

    context, actions = random_context(3), _actions(3 + 4, seed=5)
    settings = SamplerSettings(steps=2, chunk=1, seed=3, history_guidance=guidance, eta=0.2)
    player = Player(world_model, context, actions[:, :3], settings)
    for a in actions[0, 3:].tolist():
        player.step(a)
    expected = sample_video(world_model, context, 4, settings, actions=actions).video
    assert (player.video() - expected).abs().max() <= 1e-5
    from_nothing = Player(world_model, None, None, SamplerSettings(steps=2, chunk=1, first_frame_steps=3))
    from_nothing.step("left")
    again = sample_video(world_model, None, 2, SamplerSettings(steps=2, chunk=1, first_frame_steps=3), actions=torch.tensor([[0, 1]])).video
    assert (from_nothing.video() - again).abs().max() <= 1e-5
    with pytest.raises(ValueError, match="action must be one of"):
        player.step("jump")
