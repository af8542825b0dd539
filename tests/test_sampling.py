"""The sampler: KV cache against full forwards, determinism, schedules, causality, cancel, errors."""

import pytest
import torch
from conftest import random_context

from msc.diffusion import SCHEDULES, noise_levels
from msc.model import AttentionWindows, KVCache, MSCModel, config_from_name
from msc.sampling import SamplerSettings, frame_schedule_plan, sample_video


@pytest.fixture(scope="module")
def model(tiny_model):
    return tiny_model


def _context(frames=3, seed=0):
    return random_context(frames, seed)


@pytest.mark.parametrize("attention", ["msc", "dense"])
def test_cached_forward_equals_full_forward(attention):
    torch.manual_seed(0)
    m = MSCModel(config_from_name("tiny", attention=attention)).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x, t = torch.randn(2, 13, 3, 16, 16), torch.rand(2, 13)
    with torch.no_grad():
        full = m(x, t)
        cache = KVCache(m.config)
        parts = [m(x[:, a:b], t[:, a:b], cache=cache, commit=True) for a, b in [(0, 1), (1, 5), (5, 6), (6, 13)]]
    assert (torch.cat(parts, dim=1) - full).abs().max().item() <= 1e-4
    if attention == "msc":  # bounded: k_t - 1 and (k_lo - 1)·d frames
        hi, lo = cache.layers[0]
        assert (hi.frames, lo.frames) == m.config.windows.history()


@pytest.mark.parametrize("attention", ["msc", "dense"])
def test_a_keys_only_commit_keeps_what_a_full_commit_keeps(attention):
    """The sampler's commit computes the cache's keys and values alone (the last block stops at them): the same
    cache, so the same next frames, as a full forward that commits."""
    torch.manual_seed(1)
    m = MSCModel(config_from_name("tiny", attention=attention)).eval()
    x, t, nxt = torch.randn(1, 6, 3, 16, 16), torch.zeros(1, 6), torch.randn(1, 2, 3, 16, 16)
    full, lean = KVCache(m.config), KVCache(m.config)
    with torch.no_grad():
        for a, b in [(0, 4), (4, 6)]:
            m(x[:, a:b], t[:, a:b], cache=full, commit=True)
            assert m(x[:, a:b], t[:, a:b], cache=lean, commit=True, keys_only=True) is None
        assert lean.frames == full.frames == 6
        for (hi_f, lo_f), (hi_l, lo_l) in zip(full.layers, lean.layers):
            for f, l in ((hi_f, hi_l), (lo_f, lo_l)):
                assert (f.k is None) == (l.k is None) and (f.k is None or (torch.equal(f.k, l.k) and torch.equal(f.v, l.v)))
        assert torch.equal(m(nxt, torch.ones(1, 2), cache=full), m(nxt, torch.ones(1, 2), cache=lean))
    with pytest.raises(ValueError, match="keys_only"):
        m(x, t, keys_only=True)


@pytest.mark.parametrize("schedule", ["autoregressive", "diffusion-forcing", "full-sequence"])
@pytest.mark.parametrize("context_noise, eta", [(0.0, 0.0), (0.1, 0.5)])
def test_sampling_with_cache_equals_without(model, schedule, context_noise, eta):
    kw = dict(steps=4, chunk=3, schedule=schedule, context_noise=context_noise, eta=eta, seed=3)
    a = sample_video(model, _context(), 7, **kw)
    b = sample_video(model, _context(), 7, use_cache=False, **kw)
    assert a.video.shape == (1, 10, 3, 16, 16)
    assert torch.equal(a.video[:, :3], _context())  # the context comes back unchanged
    assert (a.video - b.video).abs().max().item() <= 1e-4


def test_bfloat16_precision_runs_the_network_in_bf16_and_stays_near_float32(tiny_prior_model):
    """``precision="bfloat16"``: the network's linear layers compute in bf16 (autocast), for the denoising calls and
    the cache's commits alike; the sampler's update stays float32, and the video stays within bf16's rounding of the
    float32 one (the cache still agreeing with the uncached path). A processor without bf16 units runs float32."""
    from msc.environment import bf16_native

    native = bf16_native("cpu")
    seen = []
    hook = tiny_prior_model.blocks[0].mlp[0].register_forward_hook(lambda mod, args, out: seen.append(out.dtype))
    try:
        kw = dict(steps=3, chunk=2, seed=2)
        exact = sample_video(tiny_prior_model, _context(), 5, **kw).video
        assert set(seen) == {torch.float32}
        seen.clear()
        fast = sample_video(tiny_prior_model, _context(), 5, precision="bfloat16", **kw).video
        assert set(seen) == {torch.bfloat16 if native else torch.float32} and len(seen) >= 5  # 5 frames' calls, commits
        uncached = sample_video(tiny_prior_model, _context(), 5, precision="bfloat16", use_cache=False, **kw).video
    finally:
        hook.remove()
    assert fast.dtype == torch.float32 and torch.equal(fast[:, :3], _context())
    assert (0 < (fast - exact).abs().max().item() <= 0.05) if native else torch.equal(fast, exact)
    assert (fast - uncached).abs().max().item() <= 0.05
    with pytest.raises(ValueError, match="precision"):
        SamplerSettings(precision="float16")


def test_same_seed_same_video_other_seed_other_video(model):
    a = sample_video(model, _context(), 4, steps=3, seed=5).video
    assert torch.equal(a, sample_video(model, _context(), 4, steps=3, seed=5).video)
    assert not torch.equal(a, sample_video(model, _context(), 4, steps=3, seed=6).video)


def test_sampling_records_no_gradients(model):
    """The sampler runs without autograd (a generator under ``torch.no_grad``), even where the caller records."""
    with torch.enable_grad():
        assert not sample_video(model, _context(), 2, steps=2).video.requires_grad


@pytest.mark.parametrize("schedule", ["autoregressive", "diffusion-forcing"])
def test_generated_frames_never_change_when_later_frames_are_generated(model, schedule):
    short = sample_video(model, _context(), 4, steps=3, chunk=2, schedule=schedule, seed=2).video
    long = sample_video(model, _context(), 10, steps=3, chunk=2, schedule=schedule, seed=2).video
    assert (long[:, : short.shape[1]] - short).abs().max().item() <= 1e-5


def test_frame_schedule_plans():
    ar = frame_schedule_plan("autoregressive", 5, 3, 2, 1)
    assert ar[:3] == [[(0, 0), (1, 0)], [(0, 1), (1, 1)], [(0, 2), (1, 2)]] and ar[-1] == [(4, 2)]
    assert len(frame_schedule_plan("full-sequence", 5, 3, 2, 1)) == 3
    df = frame_schedule_plan("diffusion-forcing", 3, 4, 1, 2)
    assert df[0] == [(0, 0)] and df[2] == [(0, 2), (1, 0)] and df[-1] == [(2, 3)]
    # every frame takes every step once, in order
    for plan in (ar, df):
        seen = {}
        for call in plan:
            for j, s in call:
                assert seen.get(j, -1) == s - 1
                seen[j] = s


def test_a_smaller_first_chunk_is_a_short_first_call_then_the_chunks(tiny_prior_model):
    """``first_chunk``: the first chunk's frames alone, then chunks of ``chunk``; the same frames as generating the first
    chunk and continuing from it (the anchors, noise and cache follow the video, not the call)."""
    assert frame_schedule_plan("autoregressive", 6, 2, 3, 1, first_chunk=1) == [
        [(0, 0)], [(0, 1)], [(1, 0), (2, 0), (3, 0)], [(1, 1), (2, 1), (3, 1)], [(4, 0), (5, 0)], [(4, 1), (5, 1)]]
    assert frame_schedule_plan("autoregressive", 5, 2, 2, 1, first_chunk=2) == frame_schedule_plan("autoregressive", 5, 2, 2, 1)
    kw = dict(steps=2, chunk=3, seed=5, eta=0.5)
    infos = []
    res = sample_video(tiny_prior_model, _context(), 6, first_chunk=1, callback=infos.append, **kw)
    assert [i["frames"] for i in infos][:3] == [[3], [3], [4, 5, 6]]  # video frame indices: the context is 0-2
    first = sample_video(tiny_prior_model, _context(), 1, **kw).video
    rest = sample_video(tiny_prior_model, first, 5, **kw).video
    assert (res.video - rest).abs().max().item() <= 1e-5
    with pytest.raises(ValueError, match="first_chunk must be an integer >= 0"):
        sample_video(tiny_prior_model, _context(), 2, first_chunk=-1)


def test_from_nothing_callback_gates_and_windows(model):
    infos = []
    windows = AttentionWindows(k_s=5, k_t=2, d=1, k_lo=3)
    res = sample_video(model, None, 3, steps=2, chunk=2, first_frame_steps=0, windows=windows, callback=infos.append)
    assert res.video.shape == (1, 3, 3, 16, 16) and torch.isfinite(res.video).all()
    assert [i["call"] for i in infos] == [1, 2, 3, 4] and infos[-1]["finished"] == 3
    assert len(res.gates) == 4 and res.gates[0]["gates"].shape == (2, model.config.depth, 2)
    assert res.gates[0]["t"] == [1.0, 1.0]


@pytest.mark.parametrize("prior", [False, True])
@pytest.mark.parametrize("schedule", ["autoregressive", "diffusion-forcing"])
def test_from_nothing_the_first_frame_is_sampled_alone_with_its_own_steps(model, tiny_prior_model, prior, schedule):
    m = tiny_prior_model if prior else model
    kw = dict(steps=2, chunk=3, schedule=schedule, eta=0.5, seed=4)
    infos = []
    res = sample_video(m, None, 7, first_frame_steps=5, callback=infos.append, **kw)
    assert [i["frames"] for i in infos[:5]] == [[0]] * 5 and infos[4]["finished"] == 1  # frame 0 alone, 5 calls
    # the same as sampling one frame with 5 steps and extending it with the settings
    first = sample_video(m, None, 1, steps=5, first_frame_steps=0, seed=4, eta=0.5).video
    rest = sample_video(m, first, 6, **kw).video
    assert (res.video - rest).abs().max().item() <= 1e-5
    # a context (even of one frame) leaves the steps of every frame as they were
    assert torch.equal(sample_video(m, first, 6, first_frame_steps=9, **kw).video, rest)
    with pytest.raises(ValueError, match="first_frame_steps must be an integer >= 0"):
        sample_video(m, None, 2, first_frame_steps=-1)


def test_stopping_the_iteration_stops_the_model_calls(model, monkeypatch):
    """Cancelling is not asking for the next event: no model call runs after the last event taken."""
    from msc.sampling import FrameEvent, sample_frames

    calls = []
    original = type(model).forward
    monkeypatch.setattr(type(model), "forward", lambda self, *a, **k: (calls.append(1), original(self, *a, **k))[1])
    events = sample_frames(model, _context(), 6, SamplerSettings(steps=2, chunk=2))
    frames = []
    for event in events:
        if isinstance(event, FrameEvent):
            frames.append(event.frame)
            if len(frames) == 2:  # the first chunk is finished
                break
    made = len(calls)
    events.close()
    assert len(frames) == 2 and len(calls) == made


@pytest.mark.parametrize("context", [0, 3])
@pytest.mark.parametrize("settings", [
    dict(steps=2, chunk=1), dict(steps=3, chunk=2), dict(steps=4, schedule="diffusion-forcing", ar_step=1),
    dict(steps=2, schedule="full-sequence"), dict(steps=2, chunk=2, history_guidance=2.0), dict(steps=2, first_frame_steps=5),
])
def test_sampling_work_counts_the_calls_and_frames_the_sampler_runs(tiny_prior_model, monkeypatch, context, settings):
    """The app bounds a request by :func:`sampling_work` before running it: the count is what the sampler does (an upper
    bound with guidance: the history-free pass is skipped while there is no history yet)."""
    from msc.sampling import sample_frames, sampling_work

    model, runs = tiny_prior_model, []
    original = type(model).forward
    monkeypatch.setattr(type(model), "forward", lambda self, x, *a, **k: (runs.append(x.shape[1]), original(self, x, *a, **k))[1])
    s = SamplerSettings(**settings)
    for _ in sample_frames(model, _context(context) if context else None, 7, s):
        pass
    work = sampling_work(s, context, 7)
    if s.guided and not context:
        assert len(runs) <= work.calls and sum(runs) <= work.frame_passes
    else:
        assert (work.calls, work.frame_passes) == (len(runs), sum(runs))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(frames=0), "frames must be an integer >= 1"),
        (dict(steps=0), "steps"),
        (dict(chunk=0), "chunk"),
        (dict(context_noise=1.5), "context_noise"),
        (dict(schedule="random"), "frame schedule"),
        (dict(noise_schedule="sigmoid"), "noise schedule"),
        (dict(windows=AttentionWindows(k_s=99)), "larger than the 8 × 8 token grid"),
        (dict(frames=10**6), "at most"),
    ],
)
def test_bad_sampling_arguments(model, kwargs, message):
    args = dict(frames=2, steps=2)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        sample_video(model, _context(), **args)


def test_context_of_wrong_size_is_refused(model):
    with pytest.raises(ValueError, match="context must be"):
        sample_video(model, torch.zeros(1, 2, 3, 32, 32), 2)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_every_noise_schedule_falls_from_one_to_zero(schedule):
    for steps in (1, 2, 16):
        t = noise_levels(schedule, steps)
        assert t.shape == (steps + 1,) and t[0] == 1 and t[-1] == 0
        assert (t[1:] < t[:-1]).all()


def test_from_nothing_bench_samples_and_draws_its_sheet(tiny_prior_model, tmp_path):
    """bench.from_nothing's sampling (one batch, its model calls counted) and its contact sheet (release.assets')."""
    from PIL import Image

    from bench.from_nothing import FRAMES, from_nothing
    from release.assets import write_contact_sheet
    from msc.sampling import SamplerSettings

    made = from_nothing(tiny_prior_model, SamplerSettings(steps=2, chunk=8, first_frame_steps=3), count=2)
    assert made["videos"].shape == (2, FRAMES, 3, 16, 16) and made["calls"] == 3 + 2 * 2  # frame 0, then 15 in chunks of 8
    write_contact_sheet(str(tmp_path / "sheet.png"), [made["videos"][0], made["videos"][1]], every=2)
    assert Image.open(tmp_path / "sheet.png").size == (2 * 16 * FRAMES // 2, 2 * 2 * 16)
