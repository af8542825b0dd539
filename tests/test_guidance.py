"""History guidance (Diffusion Forcing Transformer's observation, docs/design.md §4) and continuing
a video from its last frames."""

import pytest
import torch
from conftest import random_context

from msc.sampling import guidance_scale, sample_video


@pytest.fixture(scope="module")
def model(tiny_model):
    return tiny_model


def _context(frames=3, seed=0):
    return random_context(frames, seed)


KW = dict(steps=3, chunk=2, seed=5)


def test_w_one_is_the_unguided_sampler_bit_for_bit_and_costs_nothing(model):
    plain = sample_video(model, _context(), 6, **KW)
    for mode in ("vanilla", "fractional"):
        same = sample_video(model, _context(), 6, history_guidance=1.0, guidance_mode=mode, **KW)
        assert torch.equal(plain.video, same.video)
        assert same.model_calls == plain.model_calls


@pytest.mark.parametrize("mode, schedule", [("vanilla", "constant"), ("fractional", "linear")])
def test_guidance_with_the_cache_equals_guidance_without_it(model, mode, schedule):
    kw = dict(history_guidance=2.0, guidance_mode=mode, guidance_level=0.4, guidance_schedule=schedule, **KW)
    cached = sample_video(model, _context(), 6, **kw)
    full = sample_video(model, _context(), 6, use_cache=False, **kw)
    assert (cached.video - full.video).abs().max().item() <= 1e-4
    plain = sample_video(model, _context(), 6, **KW)
    assert cached.model_calls == 2 * plain.model_calls  # one more forward per step
    assert (cached.video - plain.video).abs().max().item() > 1e-3  # and it does change the result


def test_guidance_is_the_stated_combination_of_two_predictions(model):
    """One step, one frame: v = v_free + w (v_ctx - v_free), v_free from the context at level 1."""
    ctx = _context(3)
    w = 2.5
    guided = sample_video(model, ctx, 1, steps=1, chunk=1, seed=2, history_guidance=w).video[:, -1]
    # the same step by hand, with the model's full forward
    noise = sample_video(model, ctx, 1, steps=1, chunk=1, seed=2, context_noise=0.0)  # for the shapes only
    from msc.sampling import _frame_noise, frame_noises

    x = _frame_noise(2, 3, 0, 0, (1, 3, 16, 16), "cpu")[:, None]  # [1, 1, 3, 16, 16] the new frame's noise
    hidden = frame_noises(2, [0, 1, 2], 3, 0, (1, 3, 16, 16), "cpu")  # the history at level 1 is pure noise
    with torch.no_grad():
        v_ctx = model(torch.cat([ctx, x], 1), torch.tensor([[0.0, 0.0, 0.0, 1.0]]))[:, -1:]
        v_free = model(torch.cat([hidden, x], 1), torch.tensor([[1.0, 1.0, 1.0, 1.0]]))[:, -1:]
    v = v_free + w * (v_ctx - v_free)
    expected = (x - v).clamp(-1, 1)[:, 0]  # one Euler step from t = 1 to 0: x0 = x - v
    assert noise.video.shape[1] == 4
    assert (guided - expected).abs().max().item() <= 1e-4


def test_guidance_scale_schedules():
    t = torch.tensor([0.0, 0.5, 1.0])
    assert torch.equal(guidance_scale(3.0, "constant", t), torch.tensor([3.0, 3.0, 3.0]))
    assert torch.allclose(guidance_scale(3.0, "linear", t), torch.tensor([1.0, 2.0, 3.0]))


@pytest.mark.parametrize("kw, message", [
    (dict(history_guidance=-1), "history guidance must be in"),
    (dict(history_guidance=2, guidance_mode="sideways"), "guidance mode"),
    (dict(history_guidance=2, guidance_mode="fractional", guidance_level=1.0), "fractional guidance level"),
    (dict(history_guidance=2, guidance_schedule="cubic"), "guidance schedule"),
])
def test_bad_guidance_settings(model, kw, message):
    with pytest.raises(ValueError, match=message):
        sample_video(model, _context(), 2, **kw)


@pytest.mark.parametrize("guidance", [1.0, 2.0])
def test_continuing_from_the_last_frames_reproduces_one_long_run(model, guidance):
    """Frames 4..9 in one run == frames 4..5 then a continuation from the last 4 frames with
    ``frame_offset`` (the windows reach back at most 2 frames in the tiny config)."""
    kw = dict(steps=3, chunk=2, seed=9, history_guidance=guidance)
    one_run = sample_video(model, _context(4), 6, **kw).video
    first = sample_video(model, _context(4), 2, **kw).video  # [1, 6, ...]
    more = sample_video(model, first[:, -4:], 4, frame_offset=2, **kw).video
    joined = torch.cat([first, more[:, 4:]], dim=1)
    assert (joined - one_run).abs().max().item() <= 1e-4
