"""The previous-frame prior (residual diffusion, EDM-preconditioned): anchors in training follow the
sampler's chunks, an untrained network predicts copy-last, and the sampler's exactness guarantees
(cache = full forward, continuation = one run) hold with anchors."""

import pytest
import torch
from conftest import perturbed_tiny, random_context

from msc.diffusion import (Denoiser, anchor_error_weight, chunk_anchors, corrupt_context, diffusion_loss, residual_scales,
                           sample_training_levels, sampler_query_levels)
from msc.model import KVCache, MSCModel, config_from_name
from msc.sampling import SamplerSettings, sample_video


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


def test_scales_with_a_smaller_noise_std():
    t, sigma, s = torch.tensor([0.0, 0.5, 1.0]), 0.2, 0.25
    c_skip, c_out = residual_scales(t, torch.full_like(t, sigma), s)
    norm2 = 0.25 * sigma**2 + 0.25 * s**2
    assert torch.allclose(c_skip, torch.tensor([1.0, 0.5 * sigma**2 / norm2, 0.0]))
    assert torch.isclose(c_out[1], torch.tensor(0.5 * sigma * s / norm2**0.5)) and torch.isclose(c_out[2], torch.tensor(sigma))


@pytest.mark.parametrize("noise_scale", [1.0, 0.25])
def test_untrained_prior_model_in_one_step_is_copy_last(noise_scale):
    model = MSCModel(config_from_name("tiny", prior="previous_frame", noise_scale=noise_scale)).eval()  # zero output
    context = random_context(3)
    video = sample_video(model, context, 4, steps=1, chunk=2).video
    assert torch.allclose(video[:, 3:], context[:, -1:].expand(-1, 4, -1, -1, -1), atol=1e-6)


def test_prior_loss_is_unit_scale_for_an_untrained_model():
    model = MSCModel(config_from_name("tiny", prior="previous_frame", residual_std=0.1))
    x = torch.cumsum(0.1 * torch.randn(8, 6, 3, 16, 16), dim=1).clamp(-1, 1)  # changes of std ~0.1
    loss = diffusion_loss(model, x, torch.Generator().manual_seed(0), max_chunk=1)
    assert 0.3 < loss.item() < 3


def test_context_corruption_touches_only_the_prefix():
    gen = torch.Generator().manual_seed(0)
    levels, context = sample_training_levels(64, 8, gen, clean_prefix_prob=0.5, return_prefix=True)
    assert torch.equal(levels, sample_training_levels(64, 8, torch.Generator().manual_seed(0), clean_prefix_prob=0.5))
    assert context.any() and not context.all() and (levels[context] < 0.1).all()
    x = torch.rand(64, 8, 3, 16, 16)
    seen = corrupt_context(x, context, gen, max_std=0.05)
    changed = (seen != x).flatten(2).any(-1)  # [B, T]
    assert torch.equal(changed, context)
    std = (seen - x).flatten(2).std(-1)[context]
    assert std.max() < 0.055 and std.min() < 0.01  # per clip in [0, 0.05]


def test_shared_levels_give_the_frames_after_the_context_one_level():
    """``shared_level_prob``: that fraction of clips has one level on every frame after the clean prefix (as a chunk
    is denoised together after its context); the prefix and the other clips keep what they had without it."""
    independent, context = sample_training_levels(4000, 8, torch.Generator().manual_seed(0), clean_prefix_prob=0.5,
                                                  return_prefix=True)
    shared_levels = sample_training_levels(4000, 8, torch.Generator().manual_seed(0), clean_prefix_prob=0.5,
                                           shared_level_prob=0.3)
    assert torch.equal(shared_levels[context], independent[context])
    after = torch.where(context, shared_levels[:, -1:], shared_levels)
    one_level = (after == shared_levels[:, -1:]).all(dim=1)  # [B]
    kept = (shared_levels == independent).all(dim=1)
    assert (one_level | kept).all() and 0.27 < (one_level & ~kept).float().mean() < 0.33
    all_shared = sample_training_levels(64, 8, torch.Generator().manual_seed(1), clean_prefix_prob=0.0, shared_level_prob=1.0)
    assert torch.equal(all_shared, all_shared[:, :1].expand(64, 8)) and all_shared[:, 0].unique().numel() == 64


def test_sampler_levels_train_a_fraction_of_the_frames_where_the_sampler_asks():
    """``sampler_level_prob``: that fraction of the frames after the clean prefix take one of the sampler's levels (2
    cosine steps: 1 and 0.5, the only levels the bundled model's default sampler runs it at); the prefix and the other
    frames keep their continuous draw, and at 0 nothing changes."""
    queried = sampler_query_levels("cosine", 2)
    assert torch.allclose(queried, torch.tensor([1.0, 0.5]))
    assert torch.equal(sampler_query_levels("linear", 4), torch.tensor([1.0, 0.75, 0.5, 0.25]))
    plain, context = sample_training_levels(4000, 8, torch.Generator().manual_seed(0), clean_prefix_prob=0.5,
                                            return_prefix=True)
    same = sample_training_levels(4000, 8, torch.Generator().manual_seed(0), clean_prefix_prob=0.5,
                                  sampler_levels=queried, sampler_level_prob=0.0)
    assert torch.equal(same, plain)
    aimed = sample_training_levels(4000, 8, torch.Generator().manual_seed(0), clean_prefix_prob=0.5,
                                   sampler_levels=queried, sampler_level_prob=0.75)
    assert torch.equal(aimed[context], plain[context])
    at_sampler = (aimed[~context] == 1.0) | (aimed[~context] == 0.5)
    changed = aimed[~context] != plain[~context]
    assert torch.equal(at_sampler, changed)  # a continuous draw never lands on them exactly
    assert 0.73 < at_sampler.float().mean() < 0.77
    assert 0.45 < (aimed[~context][at_sampler] == 1.0).float().mean() < 0.55
    with pytest.raises(ValueError, match="sampler's levels"):
        sample_training_levels(2, 8, torch.Generator(), sampler_level_prob=0.5)


class _Recorder(Denoiser):
    """A denoiser that records the anchors the loss gives it and, optionally, spoils its output on some frames."""

    def __init__(self, model, spoil=None):
        super().__init__(model)
        self.spoil, self.anchors = spoil, []

    def forward(self, x, t, anchor=None, anchored=None, **network_kwargs):
        self.anchors.append(anchor)
        out = super().forward(x, t, anchor, anchored, **network_kwargs)
        return out if self.spoil is None else out + 100.0 * self.spoil[:, :, None, None, None]


def test_corrupted_context_is_what_the_next_chunk_sees_and_is_not_scored():
    """Every clip's prefix corrupted, chunks of one frame: the first frame after the prefix is anchored
    on the corrupted last prefix frame, later frames on clean ones, and the prefix frames do not count."""
    model = MSCModel(config_from_name("tiny", prior="previous_frame", residual_std=0.1))
    x = torch.cumsum(0.1 * torch.randn(4, 6, 3, 16, 16), dim=1).clamp(-1, 1)
    gen = torch.Generator().manual_seed(3)  # the loss's draws, in its order: levels, noise, corruption
    _, context = sample_training_levels(4, 6, gen, clean_prefix_prob=1.0, return_prefix=True)
    torch.randn(x.shape, generator=gen)
    seen = corrupt_context(x, context, gen, max_std=0.2)
    losses = []
    for spoil in (None, context.float()):
        recorder = _Recorder(model, spoil)
        losses.append(diffusion_loss(recorder, x, torch.Generator().manual_seed(3), clean_prefix_prob=1.0, max_chunk=1,
                                     context_corruption=0.2))
        anchor = recorder.anchors[0]
        for clip in range(4):
            n = int(context[clip].sum())  # prefix length, 1..5
            assert torch.equal(anchor[clip, n], seen[clip, n - 1]) and not torch.equal(seen[clip, n - 1], x[clip, n - 1])
            assert torch.equal(anchor[clip, n + 1:], x[clip, n:-1])
    assert torch.isfinite(losses[0]) and torch.allclose(losses[0], losses[1])  # a spoiled prefix costs nothing


def test_clips_from_nothing_have_no_prefix_no_anchors_and_count_every_frame():
    """``from_nothing_prob = 1``: every clip draws every frame from nothing (zero anchors, none anchored), no frame
    is a clean prefix even at ``clean_prefix_prob = 1``, so every frame is scored; ``0`` leaves the loss as it was."""
    model = MSCModel(config_from_name("tiny", prior="previous_frame", residual_std=0.1))
    x = torch.cumsum(0.1 * torch.randn(4, 6, 3, 16, 16), dim=1).clamp(-1, 1)

    class Anchors(_Recorder):
        def forward(self, x, t, anchor=None, anchored=None, **network_kwargs):
            self.levels, self.anchored = t, anchored
            return super().forward(x, t, anchor, anchored, **network_kwargs)

    recorder = Anchors(model)
    loss = diffusion_loss(recorder, x, torch.Generator().manual_seed(3), clean_prefix_prob=1.0, context_corruption=0.2,
                          from_nothing_prob=1.0)
    assert not recorder.anchored.any() and recorder.anchors[0].abs().sum() == 0
    assert (recorder.levels >= 0.1).float().mean() > 0.5  # drawn on [0, 1], not a prefix's [0, 0.1)
    for frame in range(6):  # a spoiled frame anywhere changes the loss: all are scored
        spoil = torch.zeros(4, 6)
        spoil[:, frame] = 1.0
        spoiled = diffusion_loss(_Recorder(model, spoil), x, torch.Generator().manual_seed(3), clean_prefix_prob=1.0,
                                 context_corruption=0.2, from_nothing_prob=1.0)
        assert spoiled > loss + 1.0
    unchanged = [diffusion_loss(model, x, torch.Generator().manual_seed(5), clean_prefix_prob=0.5, **extra)
                 for extra in ({}, {"from_nothing_prob": 0.0})]
    assert torch.equal(unchanged[0], unchanged[1])


@pytest.mark.parametrize("overrides", [dict(prior="previous_frame"),
                                       dict(prior="flow", noise_scale=0.5, anchor_input=True)],  # a network reading its anchors
                         ids=["anchored", "reads-anchors"])
def test_cached_forward_with_anchors_equals_full_forward(overrides):
    m = Denoiser(perturbed_tiny(**overrides))
    x, t = torch.randn(1, 9, 3, 16, 16), torch.rand(1, 9)
    anchor, anchored = torch.randn(1, 9, 3, 16, 16), torch.rand(1, 9) > 0.3
    with torch.no_grad():
        full = m(x, t, anchor=anchor, anchored=anchored)
        cache = KVCache(m.config)
        parts = [m(x[:, a:b], t[:, a:b], anchor[:, a:b], anchored[:, a:b], cache=cache, commit=True)
                 for a, b in [(0, 2), (2, 3), (3, 9)]]
    assert (torch.cat(parts, dim=1) - full).abs().max().item() <= 1e-4


def test_stochastic_update_renews_noise_around_the_anchor_at_its_std():
    """η = 1 replaces the noise by fresh noise of std ``noise_scale`` around the anchor; an untrained
    model (x̂₀ = a at t = 1) then ends at ``a + c_skip(t₁)·t₁·s·z``: for 2 cosine steps, t₁ = 0.5."""
    sigma, s = 0.2, 0.25
    model = MSCModel(config_from_name("tiny", prior="previous_frame", residual_std=sigma, noise_scale=s)).eval()
    context = random_context(2) * 0.5  # no clamping at ±1
    new = sample_video(model, context, 4, steps=2, chunk=4, eta=1.0, seed=3).video[:, 2:]
    c_skip = 0.5 * sigma**2 / (0.25 * sigma**2 + 0.25 * s**2)
    spread = (new - context[:, -1:]).std().item()
    assert abs(spread - c_skip * 0.5 * s) < 0.1 * c_skip * 0.5 * s


@pytest.mark.parametrize("schedule", ["autoregressive", "diffusion-forcing", "full-sequence"])
@pytest.mark.parametrize("noise_scale", [1.0, 0.25])
def test_sampling_with_prior_cache_equals_without(schedule, noise_scale):
    model = perturbed_tiny(prior="previous_frame", noise_scale=noise_scale)
    kw = dict(steps=3, chunk=2, schedule=schedule, context_noise=0.1, eta=0.3, seed=1)
    a = sample_video(model, random_context(), 5, **kw).video
    b = sample_video(model, random_context(), 5, use_cache=False, **kw).video
    assert (a - b).abs().max().item() <= 1e-4
    from_nothing = sample_video(model, None, 3, steps=2, chunk=2).video
    assert from_nothing.shape == (1, 3, 3, 16, 16) and torch.isfinite(from_nothing).all()


def test_prior_continuation_equals_one_long_run(tiny_prior_model):
    """Anchors come from finished frames only, so continuing from the last frames redraws nothing."""
    long = sample_video(tiny_prior_model, random_context(), 6, steps=2, chunk=2, seed=4).video
    first = sample_video(tiny_prior_model, random_context(), 2, steps=2, chunk=2, seed=4).video
    rest = sample_video(tiny_prior_model, first, 4, steps=2, chunk=2, seed=4).video
    assert (rest - long).abs().max().item() <= 1e-5


def test_history_free_pass_sees_nothing_of_the_history():
    """With w = 0 only the history-free pass counts: at level 1 its frames are noise centred on 0, so two
    contexts that share only their last frame (the new frames' anchor) give the same video."""
    model = perturbed_tiny(prior="previous_frame", noise_scale=0.25)
    a, b = random_context(3, seed=1), random_context(3, seed=2)
    b[:, -1] = a[:, -1]
    kw = dict(steps=2, chunk=2, history_guidance=0.0, seed=5)
    va, vb = (sample_video(model, c, 4, **kw).video[:, 3:] for c in (a, b))
    assert torch.allclose(va, vb, atol=1e-6)
    unguided = sample_video(model, b, 4, steps=2, chunk=2, seed=5).video[:, 3:]
    assert not torch.allclose(unguided, vb, atol=1e-3)  # the history does matter to the guided pass


def test_log_frame_loss_is_the_mean_of_each_frames_log_error():
    """``frame_loss="log"``: the mean over the scored frames of log(frame error + floor), each frame's error being
    what the MSE loss gives when that frame alone is scored; a still frame counts as much as a moving one."""
    from msc.diffusion import LOG_FRAME_LOSS_FLOOR, velocity_loss

    model = MSCModel(config_from_name("tiny", prior="previous_frame", residual_std=0.1)).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.cumsum(0.1 * torch.randn(1, 5, 3, 16, 16, generator=g), dim=1).clamp(-1, 1)
    x[:, 3] = x[:, 2]  # a frame that does not change
    levels, noise = torch.rand(1, 5, generator=g) * 0.9 + 0.05, torch.randn(x.shape, generator=g)
    anchored = torch.tensor([[False, True, True, True, True]])
    anchor = torch.cat([torch.zeros_like(x[:, :1]), x[:, :-1]], dim=1)
    with torch.no_grad():
        per_frame = torch.stack([velocity_loss(model, x, levels, noise, anchor, anchored, scored=torch.eye(5, dtype=torch.bool)[j][None])
                                 for j in range(5)])
        logged = velocity_loss(model, x, levels, noise, anchor, anchored, frame_loss="log")
        mse = velocity_loss(model, x, levels, noise, anchor, anchored)
    assert torch.allclose(logged, torch.log(per_frame + LOG_FRAME_LOSS_FLOOR).mean(), atol=1e-5)
    assert torch.allclose(mse, per_frame.mean(), rtol=1e-5)
    with pytest.raises(ValueError, match="frame loss must be one of"):
        velocity_loss(model, x, levels, noise, anchor, anchored, frame_loss="l1")


# ---------------------------------------------------------------- the flow prior: the anchor is the classical prediction


def _panned_context(frames: int, size: int = 16) -> torch.Tensor:
    """``[1, frames, 3, S, S]``: a smooth image moving one pixel to the right per frame."""
    g = torch.Generator().manual_seed(0)
    big = torch.nn.functional.interpolate(torch.rand(1, 3, 4, 8, generator=g), size=(size, size + frames + 4),
                                          mode="bicubic", align_corners=False).clamp(0, 1) * 2 - 1
    return torch.stack([big[0, :, :, frames - i: frames - i + size] for i in range(frames)])[None]


def test_flow_training_anchors_extrapolate_the_two_frames_before_each_chunk():
    from msc.flow import extrapolate

    x = _panned_context(8)[0][None].expand(3, -1, -1, -1, -1).contiguous()
    flow_anchor, anchored = chunk_anchors(x, torch.Generator().manual_seed(0), max_chunk=4, prior="flow")
    copy_anchor, same = chunk_anchors(x, torch.Generator().manual_seed(0), max_chunk=4)
    assert torch.equal(anchored, same)  # the same chunks: the prior changes what a chunk is anchored on, not the cuts
    for clip in range(3):
        firsts = [i for i in range(8) if anchored[clip, i] and (i == 0 or not torch.equal(copy_anchor[clip, i], copy_anchor[clip, i - 1]))]
        for s in firsts:
            if s >= 2:  # two finished frames: their flow carried on; one: the frame itself
                expected = extrapolate(x[clip : clip + 1, s - 2], x[clip : clip + 1, s - 1], [1])[0, 0]
            else:
                expected = x[clip, s - 1]
            assert torch.allclose(flow_anchor[clip, s], expected, atol=1e-6)


@pytest.mark.parametrize("prior, method", [("flow", "warp"), ("flow_splat", "splat"), ("flow_splat_whole", "splat_whole"),
                                           ("flow_splat_layered", "splat_layered")])
def test_untrained_flow_model_in_one_step_is_the_flow_extrapolation(prior, method):
    from msc.flow import flow_extrapolation

    model = MSCModel(config_from_name("tiny", prior=prior)).eval()  # zero output: the anchor itself
    context = _panned_context(3)
    video = sample_video(model, context, 4, steps=1, chunk=4).video
    assert torch.allclose(video[:, 3:], flow_extrapolation(context, 4, method).clamp(-1, 1), atol=1e-5)


def test_context_anchor_takes_the_place_of_the_prior_for_the_chunk_after_the_context_only():
    """``context_anchor="flow_splat"``: the chunk anchored on the context's real frames starts from the sub-pixel splat;
    every chunk anchored on generated frames from the model's own whole-pixel anchor (an untrained model draws its
    anchor in one step). A model whose prior is not a flow prior refuses it."""
    from msc.flow import flow_extrapolation

    model = MSCModel(config_from_name("tiny", prior="flow_splat_whole")).eval()
    context = _panned_context(3)
    assert not torch.allclose(flow_extrapolation(context, 2, "splat"), flow_extrapolation(context, 2, "splat_whole"))
    video = sample_video(model, context, 4, steps=1, chunk=2, context_anchor="flow_splat").video
    assert torch.allclose(video[:, 3:5], flow_extrapolation(context, 2, "splat").clamp(-1, 1), atol=1e-5)
    assert torch.allclose(video[:, 5:], flow_extrapolation(video[:, :5], 2, "splat_whole").clamp(-1, 1), atol=1e-5)
    plain = sample_video(model, context, 4, steps=1, chunk=2).video
    assert torch.allclose(plain[:, 3:5], flow_extrapolation(context, 2, "splat_whole").clamp(-1, 1), atol=1e-5)
    with pytest.raises(ValueError, match="context_anchor"):
        sample_video(MSCModel(config_from_name("tiny", prior="previous_frame")), context, 2, context_anchor="flow_splat")
    with pytest.raises(ValueError, match="context_anchor"):
        SamplerSettings(context_anchor="splat")


def test_whole_pixel_splatting_moves_pixels_without_blending_them():
    """``splat_whole``: a sub-pixel flow becomes a whole-pixel move, so every pixel of the anchor is one of the last
    frame's pixels (no bilinear blend of neighbours, the blur a rollout would compound), and a whole-pixel flow is
    extrapolated as the bilinear splat extrapolates it."""
    from msc.flow import METHODS

    last = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    flow = torch.full((1, 2, 8, 8), -0.4)  # every pixel moving 0.4 px right and down per frame
    for h in (1, 2, 3):
        anchor = METHODS["splat_whole"][1](last, flow, h)
        values = set(last.flatten().tolist())
        assert all(v in values for v in anchor.flatten().tolist())
        assert torch.equal(anchor, METHODS["splat_whole"][1](last, (h * flow).round() / h, h))
    whole = torch.full((1, 2, 8, 8), -1.0)
    assert torch.allclose(METHODS["splat_whole"][1](last, whole, 2), METHODS["splat"][1](last, whole, 2), atol=1e-6)


def _assert_sampling_is_exact(model):
    """Sampling with the KV cache equals sampling without it, and a continuation redraws nothing."""
    kw = dict(steps=2, chunk=2, context_noise=0.1, eta=0.3, seed=1)
    a = sample_video(model, random_context(), 5, **kw).video
    b = sample_video(model, random_context(), 5, use_cache=False, **kw).video
    assert (a - b).abs().max().item() <= 1e-4
    first = sample_video(model, random_context(), 2, **kw).video
    rest = sample_video(model, first, 3, **kw).video
    assert (rest - a).abs().max().item() <= 1e-5


def test_flow_prior_sampling_cache_continuation_and_loss():
    _assert_sampling_is_exact(perturbed_tiny(prior="flow", noise_scale=0.5))
    loss = diffusion_loss(MSCModel(config_from_name("tiny", prior="flow", residual_std=0.1)), _panned_context(6).expand(2, -1, -1, -1, -1),
                          torch.Generator().manual_seed(0), max_chunk=3)
    assert torch.isfinite(loss)


def test_anchor_error_weight_goes_where_the_anchor_is_wrong():
    x0 = torch.zeros(2, 3, 3, 8, 8)
    anchor = torch.zeros_like(x0)
    anchor[:, :, :, 2:4, 2:4] = 1.0  # wrong on 4 of 64 pixels
    anchored = torch.tensor([[False, True, True], [True, True, True]])
    w = anchor_error_weight(x0, anchor, anchored, strength=1.0)  # [B, T, 1, H, W]
    assert w.shape == (2, 3, 1, 8, 8)
    assert torch.allclose(w.mean(dim=(2, 3, 4)), torch.ones(2, 3))  # a mean of 1 per frame
    assert torch.equal(w[0, 0], torch.ones(1, 8, 8))  # no anchor: uniform
    assert w[1, 1, 0, 2, 2] > 10 * w[1, 1, 0, 0, 0]  # 1 + 16 against 1, before the normalisation
    exact = anchor_error_weight(x0, torch.zeros_like(x0), anchored, strength=1.0)
    assert torch.allclose(exact, torch.ones_like(exact))  # an exact anchor: uniform


def test_anchor_error_weight_changes_the_loss_only_when_asked(tiny_prior_model):
    x = torch.randn(2, 6, 3, 16, 16)
    losses = [diffusion_loss(tiny_prior_model, x, torch.Generator().manual_seed(4), clean_prefix_prob=0.5, **extra)
              for extra in ({}, {"anchor_error_strength": 0.0}, {"anchor_error_strength": 2.0})]
    assert torch.equal(losses[0], losses[1])
    assert not torch.isclose(losses[0], losses[2])


def test_context_blur_blurs_only_the_context_and_leaves_the_noise_as_it_was():
    from msc.diffusion import blur_frames
    from msc.metrics import sharpness

    x = torch.rand(3, 4, 3, 16, 16) * 2 - 1
    assert torch.equal(blur_frames(x, torch.zeros(3)), x)
    blurred = blur_frames(x, torch.tensor([0.0, 1.0, 2.0]))
    assert torch.equal(blurred[0], x[0])
    assert torch.allclose(blurred.mean(dim=(2, 3, 4)), x.mean(dim=(2, 3, 4)), atol=0.05)  # the colour stays
    assert sharpness(blurred[2]).mean() < sharpness(blurred[1]).mean() < sharpness(x[1]).mean()
    context = torch.tensor([[True, True, False, False]] * 3)
    plain = corrupt_context(x, context, torch.Generator().manual_seed(0), 0.1)
    same = corrupt_context(x, context, torch.Generator().manual_seed(0), 0.1, max_blur=0.0)
    assert torch.equal(plain, same)
    both = corrupt_context(x, context, torch.Generator().manual_seed(0), 0.1, max_blur=2.0)
    assert torch.equal(both[:, 2:], x[:, 2:])  # frames after the context: untouched
    assert not torch.allclose(both[:, :2], plain[:, :2])


def test_a_forced_prefix_gives_every_clip_that_context_and_leaves_the_other_levels():
    free = sample_training_levels(16, 8, torch.Generator().manual_seed(0), clean_prefix_prob=0.0)  # the same draws, no prefix
    forced, context = sample_training_levels(16, 8, torch.Generator().manual_seed(0), clean_prefix_prob=0.5,
                                             return_prefix=True, prefix_length=3)
    assert context[:, :3].all() and not context[:, 3:].any()
    assert (forced[:, :3] < 0.1).all() and torch.equal(forced[:, 3:], free[:, 3:])
    with pytest.raises(ValueError, match="must leave a frame after it"):
        sample_training_levels(2, 8, torch.Generator(), prefix_length=8)


def test_own_context_is_all_the_model_sees_before_the_frames_it_learns():
    """``own_context``: the model's own first frames replace the clip's as the context of every clip, they are not
    scored, the frames after them are anchored on them and learn the truth; no clip is from nothing."""
    model = MSCModel(config_from_name("tiny", prior="previous_frame", residual_std=0.1))
    x = torch.cumsum(0.1 * torch.randn(4, 6, 3, 16, 16), dim=1).clamp(-1, 1)
    own = (x[:, :3] + 0.2 * torch.randn(4, 3, 3, 16, 16)).clamp(-1, 1)  # [B, P, C, H, W]: "generated"
    other_start = x.clone()
    other_start[:, :3] = torch.rand(4, 3, 3, 16, 16)  # the true first frames: never seen
    recorder = _Recorder(model)
    loss = diffusion_loss(recorder, x, torch.Generator().manual_seed(3), max_chunk=1, from_nothing_prob=1.0, own_context=own)
    anchor = recorder.anchors[0]
    assert torch.equal(anchor[:, 3], own[:, 2]) and torch.equal(anchor[:, 4:], x[:, 3:-1])  # chunks of one frame
    same = diffusion_loss(model, other_start, torch.Generator().manual_seed(3), max_chunk=1, from_nothing_prob=1.0,
                          own_context=own)
    assert torch.isfinite(loss) and torch.allclose(loss, same)
    spoil = torch.zeros(4, 6)
    spoil[:, :3] = 1.0  # a spoiled output on the context costs nothing
    spoiled = diffusion_loss(_Recorder(model, spoil), x, torch.Generator().manual_seed(3), max_chunk=1, own_context=own)
    assert torch.allclose(spoiled, diffusion_loss(model, x, torch.Generator().manual_seed(3), max_chunk=1, own_context=own))
    with pytest.raises(ValueError, match="needs a prior"):
        diffusion_loss(MSCModel(config_from_name("tiny")), x, torch.Generator(), own_context=own)


def test_sampling_with_a_network_that_reads_its_anchors_is_exact():
    """``anchor_input``: sampling with the cache equals sampling without it (a committed frame reads no anchor, as a
    history frame of a full forward does not), and a continuation redraws nothing (the cached forward: above)."""
    _assert_sampling_is_exact(perturbed_tiny(prior="flow", noise_scale=0.5, anchor_input=True))


def test_the_network_reads_only_the_anchors_of_frames_being_denoised():
    from msc.diffusion import MIN_TRAINING_LEVEL, network_anchor

    anchor = torch.ones(1, 4, 3, 8, 8)
    anchored = torch.tensor([[False, True, True, True]])
    t = torch.tensor([[0.5, MIN_TRAINING_LEVEL, 0.0, 0.3]])  # no anchor, clean (training's floor), committed, noisy
    read = network_anchor(anchor, anchored, t)
    assert read[0, :3].abs().sum() == 0 and torch.equal(read[0, 3], anchor[0, 3])


def test_a_new_anchor_input_starts_as_the_model_without_it():
    """Zero-initialised (and linear: no bias), the anchor's embedding changes nothing until trained: a fine-tune that adds it starts where the
    model it starts from is (``msc.train.load_initial_weights`` accepts the missing parameters)."""
    from msc.train import load_initial_weights

    base = perturbed_tiny(prior="previous_frame")
    reads = MSCModel(config_from_name("tiny", prior="previous_frame", anchor_input=True)).eval()
    load_initial_weights(reads, base.state_dict())
    x, t = torch.randn(2, 4, 3, 16, 16), torch.rand(2, 4)
    anchor, anchored = torch.randn(2, 4, 3, 16, 16), torch.ones(2, 4, dtype=torch.bool)
    with torch.no_grad():
        assert torch.equal(Denoiser(base)(x, t, anchor, anchored), Denoiser(reads)(x, t, anchor, anchored))
    with pytest.raises(ValueError, match="reads no anchors"):
        base(x, t, anchor=anchor)
    with pytest.raises(ValueError, match="the shape of x"):
        reads(x, t, anchor=anchor[:, :2])
    with pytest.raises(ValueError, match="needs a prior"):
        config_from_name("tiny", anchor_input=True)
