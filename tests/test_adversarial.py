"""The adversarial term (msc.adversarial): it trains on exactly what the sampler draws, the critic judges without
training the model, and a run with it resumes exactly."""

import json
import os

import pytest
import torch

from conftest import perturbed_tiny
from msc.adversarial import FrameCritic, SampledChunk, critic_loss, generator_loss, sampled_chunk
from msc.sampling import sample_video
from msc.train import main as train_main
from msc.world import ACTIONS


@pytest.mark.parametrize("overrides, chunk, own", [
    (dict(prior="previous_frame"), 2, 0),
    (dict(prior="flow_splat_whole"), 3, 0),
    (dict(prior="action_kernel", actions=len(ACTIONS), action_keep_mask=True, action_kernel_hard=True), 1, 0),
    (dict(prior="action_kernel", actions=len(ACTIONS), action_keep_mask=True, action_kernel_hard=True), 1, 3),
    (dict(prior="flow_splat_whole"), 1, 2),
    (dict(prior="flow_splat_whole"), 2, 4),
])
def test_sampled_chunk_is_the_chunk_the_sampler_draws(overrides, chunk, own):
    """With the sampler's seed, the differentiable continuation (after `own` frames of the model's own, chunk by chunk)
    is sample_video's, to float error; the true chunk and the frames before both come with it."""
    model = perturbed_tiny(**overrides)
    g = torch.Generator().manual_seed(1)
    k, seed = 3, 5
    clips = torch.rand(2, k + own + chunk, 3, 16, 16, generator=g) * 2 - 1  # [B, T, C, H, W]
    actions = torch.randint(0, len(ACTIONS), (2, k + own + chunk), generator=g) if "actions" in overrides else None
    with torch.no_grad():
        drawn = sampled_chunk(model, clips, g, chunk=chunk, steps=2, actions=actions, own_frames=own, context_frames=k,
                              rollout_frames=own, seed=seed)
    video = sample_video(model, clips[:, :k], own + chunk, steps=2, chunk=chunk, seed=seed, batch=2,
                         actions=actions).video
    n = k + own
    assert drawn.start == n
    assert torch.allclose(drawn.fake, video[:, n:], atol=1e-4), (drawn.fake - video[:, n:]).abs().max()
    assert torch.allclose(drawn.fake_last, video[:, n - 1], atol=1e-4)
    assert torch.equal(drawn.real, clips[:, n:]) and torch.equal(drawn.real_last, clips[:, n - 1])


@pytest.mark.parametrize("overrides", [dict(prior="previous_frame"),
                                       dict(prior="action_kernel", actions=len(ACTIONS), action_keep_mask=True)])
def test_a_first_chunk_from_nothing_is_the_samplers(overrides):
    """from_nothing: the first chunk of a video from nothing, drawn from noise alone as sample_video draws it, beside a
    blank frame before it."""
    model = perturbed_tiny(**overrides)
    clips = torch.rand(2, 5, 3, 16, 16, generator=torch.Generator().manual_seed(2)) * 2 - 1
    actions = torch.zeros(2, 5, dtype=torch.long) if "actions" in overrides else None
    with torch.no_grad():
        drawn = sampled_chunk(model, clips, torch.Generator(), chunk=2, steps=4, actions=actions, own_frames=2, seed=7,
                              from_nothing=True)
    video = sample_video(model, None, 2, steps=4, chunk=2, seed=7, batch=2,
                         actions=None if actions is None else actions[:, :2]).video
    assert drawn.start == 0 and torch.allclose(drawn.fake, video, atol=1e-4), (drawn.fake - video).abs().max()
    assert torch.equal(drawn.real, clips[:, :2]) and not drawn.fake_last.any() and not drawn.real_last.any()


def test_sampled_chunk_draws_where_it_starts_and_keeps_the_gradient_of_its_chunk_only():
    model = perturbed_tiny(prior="previous_frame").train()
    clips = torch.rand(2, 8, 3, 16, 16) * 2 - 1
    starts = set()
    for i in range(12):
        drawn = sampled_chunk(model, clips, torch.Generator().manual_seed(i), chunk=2, own_frames=3)
        assert drawn.fake.shape == (2, 2, 3, 16, 16) and 2 <= drawn.start <= 6
        starts.add(drawn.start)
    assert len(starts) > 1
    assert not drawn.fake_last.requires_grad  # the own rollout is context, not trained through
    drawn.fake.sum().backward()
    assert model.final.linear.weight.grad is not None and model.final.linear.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="needs a prior"):
        sampled_chunk(perturbed_tiny(), clips, torch.Generator(), chunk=1)
    with pytest.raises(ValueError, match="at least 9 frames"):
        sampled_chunk(model, clips, torch.Generator(), chunk=5, own_frames=2)


def test_critic_judges_each_frame_beside_the_one_before_and_its_losses_pull_apart():
    critic = FrameCritic(3, width=8, depth=2)
    last = torch.rand(2, 3, 16, 16)
    real, fake = torch.rand(2, 3, 3, 16, 16), torch.rand(2, 3, 3, 16, 16, requires_grad=True)
    assert critic.judge(last, real).shape == (6, 1, 4, 4)
    # the frame before the chunk's second frame is the chunk's first: changing it changes that logit only (in eval
    # mode: in training, spectral normalisation renews its estimate of the norm at every call)
    critic.eval()
    moved = real.clone()
    moved[:, 0] += 1
    before, after = critic.judge(last, real).view(2, 3, -1), critic.judge(last, moved).view(2, 3, -1)
    assert not torch.allclose(before[:, 1], after[:, 1]) and torch.equal(before[:, 2], after[:, 2])
    critic.train()
    drawn = SampledChunk(fake, real, last, last, 2)
    critic_loss(critic, drawn).backward()
    assert fake.grad is None  # the critic's loss does not reach the generator
    generator_loss(critic, drawn).backward()
    assert fake.grad is not None


ADVERSARIAL_RUN = ["--config", "tiny", "--frames", "6", "--batch-size", "2", "--log-every", "1", "--warmup", "3",
                   "--no-progress", "--set", "prior=previous_frame", "--adversarial", "0.5", "--adversarial-rollout", "1",
                   "--adversarial-from-nothing", "0.5", "--adversarial-first-steps", "3"]


def _log(out):
    with open(os.path.join(out, "log.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_an_adversarial_run_resumes_exactly_critic_included(tmp_path):
    straight, split = str(tmp_path / "straight"), str(tmp_path / "split")
    train_main(ADVERSARIAL_RUN + ["--out", straight, "--steps", "6", "--ckpt-every", "100"])
    train_main(ADVERSARIAL_RUN + ["--out", split, "--steps", "6", "--ckpt-every", "3", "--max-minutes", "1e-9"])
    assert sorted(n for n in os.listdir(os.path.join(split, "checkpoint")) if n.startswith("critic")) == [
        "critic.safetensors", "critic_optimizer.safetensors"]
    train_main(ADVERSARIAL_RUN + ["--out", split, "--steps", "6", "--ckpt-every", "3", "--resume"])
    a, b = _log(straight), _log(split)
    assert [r["step"] for r in b] == list(range(1, 7))
    for key in ("loss", "generator_loss", "critic_loss", "adversarial_weight"):
        assert [r[key] for r in a] == pytest.approx([r[key] for r in b], rel=1e-5, abs=1e-6), key
