"""The previous-frame prior (residual diffusion, EDM-preconditioned): anchors in training follow the
sampler's chunks, an untrained network predicts copy-last, and the sampler's exactness guarantees
(cache = full forward, continuation = one run) hold with anchors."""

import pytest
import torch
from conftest import random_context

from msc.diffusion import chunk_anchors, diffusion_loss, residual_scales
from msc.model import KVCache, MSCModel, config_from_name
from msc.sampling import sample_video


def test_training_anchors_are_the_frame_before_each_chunk():
    x = torch.arange(12, dtype=torch.float32)[None, :, None, None, None].expand(64, 12, 1, 2, 2) + 1
    anchor, anchored = chunk_anchors(x, torch.Generator().manual_seed(0), max_chunk=4)
    a = anchor[:, :, 0, 0, 0]  # [B, T]: the anchor's frame number + 1, or 0
    sizes = set()
    for clip in range(64):
        frames = a[clip].tolist()
        assert frames[0] == 0 and not anchored[clip, 0]
        # within a chunk the anchor is constant and is the frame just before the chunk
        starts = [i for i in range(12) if i == 0 or frames[i] != frames[i - 1]]
        for s, e in zip(starts, starts[1:] + [12]):
            assert all(f == frames[s] for f in frames[s:e])
            if frames[s]:
                assert frames[s] == s  # anchor frame s - 1, stored as s
                sizes.add(e - s)
    assert sizes <= {1, 2, 3, 4} and len(sizes) >= 3


def test_scales_interpolate_between_identity_and_output():
    t = torch.tensor([0.0, 0.5, 1.0])
    c_skip, c_out = residual_scales(t, torch.full_like(t, 0.2))
    assert torch.allclose(c_skip, torch.tensor([1.0, 0.2**2 * 0.5 / (0.25 * 0.04 + 0.25), 0.0]))
    assert c_out[0] == 0 and torch.isclose(c_out[2], torch.tensor(0.2))


def test_untrained_prior_model_in_one_step_is_copy_last():
    model = MSCModel(config_from_name("tiny", prior="previous_frame")).eval()  # zero-initialised output
    context = random_context(3)
    video = sample_video(model, context, 4, steps=1, chunk=2).video
    assert torch.allclose(video[:, 3:], context[:, -1:].expand(-1, 4, -1, -1, -1), atol=1e-6)


def test_prior_loss_is_unit_scale_for_an_untrained_model():
    model = MSCModel(config_from_name("tiny", prior="previous_frame", residual_std=0.1))
    x = torch.cumsum(0.1 * torch.randn(8, 6, 3, 16, 16), dim=1).clamp(-1, 1)  # changes of std ~0.1
    loss = diffusion_loss(model, x, torch.Generator().manual_seed(0), max_chunk=1)
    assert 0.3 < loss.item() < 3


def test_cached_forward_with_anchors_equals_full_forward(tiny_prior_model):
    m = tiny_prior_model
    x, t = torch.randn(1, 9, 3, 16, 16), torch.rand(1, 9)
    anchor, anchored = torch.randn(1, 9, 3, 16, 16), torch.rand(1, 9) > 0.3
    with torch.no_grad():
        full = m(x, t, anchor=anchor, anchored=anchored)
        cache = KVCache(m.config)
        parts = [m(x[:, a:b], t[:, a:b], cache=cache, commit=True, anchor=anchor[:, a:b], anchored=anchored[:, a:b])
                 for a, b in [(0, 2), (2, 3), (3, 9)]]
    assert (torch.cat(parts, dim=1) - full).abs().max().item() <= 1e-4


@pytest.mark.parametrize("schedule", ["autoregressive", "diffusion-forcing", "full-sequence"])
def test_sampling_with_prior_cache_equals_without(tiny_prior_model, schedule):
    kw = dict(steps=3, chunk=2, schedule=schedule, context_noise=0.1, eta=0.3, seed=1)
    a = sample_video(tiny_prior_model, random_context(), 5, **kw).video
    b = sample_video(tiny_prior_model, random_context(), 5, use_cache=False, **kw).video
    assert (a - b).abs().max().item() <= 1e-4
    from_nothing = sample_video(tiny_prior_model, None, 3, steps=2, chunk=2).video
    assert from_nothing.shape == (1, 3, 3, 16, 16) and torch.isfinite(from_nothing).all()


def test_prior_continuation_equals_one_long_run(tiny_prior_model):
    """Anchors come from finished frames only, so continuing from the last frames redraws nothing."""
    long = sample_video(tiny_prior_model, random_context(), 6, steps=2, chunk=2, seed=4).video
    first = sample_video(tiny_prior_model, random_context(), 2, steps=2, chunk=2, seed=4).video
    rest = sample_video(tiny_prior_model, first, 4, steps=2, chunk=2, seed=4).video
    assert (rest - long).abs().max().item() <= 1e-5
