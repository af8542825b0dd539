"""The app's engine without a browser: settings checks, clip loading, the threaded sampler run, sessions."""


import numpy as np
import pytest
import torch

from msc.data import procedural_clip
from msc.model import AttentionWindows, MSCModel, config_from_name
from msc.sampling import SamplerSettings, sample_video
from msc.sampling import FrameEvent, StepEvent
from msc.studio import (
    CONTROLS, ChunkEvent, DoneEvent, Session, SessionStore, Settings, UserError, describe_step, frame_strip, generation,
    load_clip,
)
from msc.video import write_video

TINY = config_from_name("tiny")  # 16 px, 8 × 8 tokens, k_s 3, k_t 2, d 2, k_lo 2
TINY_WINDOWS = dict(k_s=3, k_t=2, d=2, k_lo=2)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return MSCModel(TINY).eval()


def test_settings_from_controls_by_name_and_their_checks():
    defaults = Settings(sampler=SamplerSettings(windows=AttentionWindows(**TINY_WINDOWS)))
    values = dict(frames=8, context=4, chunk=2, first_chunk=0, steps=3.0, first_frame_steps=16, schedule="autoregressive", ar_step=2, noise_schedule="cosine",
                  shift=3.0, context_noise=0.0, eta=0.0, seed=7, history_guidance=1.0, guidance_mode="vanilla",
                  guidance_level=0.5, guidance_schedule="constant", context_anchor="prior", precision="float32", k_s=3, k_t=2, d=2,
                  k_lo=2, mark=True)
    assert set(values) == set(CONTROLS)  # every control has a name, every setting a control
    s = Settings.from_controls(values, defaults, TINY.grid)
    assert s.frames == 8 and s.sampler.seed == 7 and isinstance(s.sampler.steps, int) and s.sampler.windows.k_s == 3
    # by name: any subset, in any order, the rest from the defaults
    assert Settings.from_controls({"seed": 5, "frames": 2}, defaults, TINY.grid).sampler.steps == defaults.sampler.steps
    with pytest.raises(UserError, match="whole number"):
        Settings.from_controls({**values, "frames": 8.5}, defaults, TINY.grid)
    with pytest.raises(UserError, match="steps is empty"):
        Settings.from_controls({**values, "steps": None}, defaults, TINY.grid)
    bad = {
        "k_s must be between 1 and 8": dict(k_s=9),  # the token grid
        "frames must be between 1 and 256": dict(frames=0),
        "steps must be between 1 and 100": dict(steps=1000),
        "context_noise must be between": dict(context_noise=1.0),
        "schedule must be one of": dict(schedule="sideways"),
        "shift must be between 0.1 and 10": dict(noise_schedule="shifted", shift=0.0),
        "shift must be between": dict(noise_schedule="shifted", shift=1000.0),
        "shift must be between ": dict(shift=float("nan")),  # NaN never reaches the sampler, whatever the schedule
        "frames must be between": dict(frames=float("nan")),
        "seed must be between 0 and": dict(seed=2**63),
        "k_lo must be between": dict(k_lo=0),
        "history_guidance must be between": dict(history_guidance=-1.0),
        "guidance_mode must be one of": dict(guidance_mode="loud"),
        "context_anchor must be one of": dict(context_anchor="splat"),
        "precision must be one of": dict(precision="float16"),
        "steps must be a number": dict(steps="many"),
        "unknown setting": dict(colour="red"),
        "too much work for one go: 256 frames at 100 steps, chunks of 2 take 12929 model calls": dict(frames=256, steps=100),
        "with history guidance \\(two passes\\) take 4354 model calls": dict(frames=256, steps=16, history_guidance=2.0),
        "256 frames at 24 steps, chunks of 1 take 6401 model calls over 6404 frame passes, about 90 s": dict(frames=256, steps=24, chunk=1),
        "first_frame_steps must be between 0 and 100": dict(first_frame_steps=101),
    }
    for message, change in bad.items():
        with pytest.raises(UserError, match=message):
            Settings.from_controls({**values, **change}, defaults, TINY.grid)
    # the bound counts what a request costs: the same frames and steps pass without guidance, or in larger chunks
    for fits in (dict(frames=256, steps=16), dict(frames=256, steps=24, chunk=8)):
        Settings.from_controls({**values, **fits}, defaults, TINY.grid)


def test_a_window_is_checked_against_the_model_once_per_request(model, monkeypatch):
    """From the app's control to the kernel: made once (AttentionWindows checks itself), fitted to the
    model's grid once (by the sampler), then passed as the same object."""
    checks = []
    original = AttentionWindows.check_fits
    monkeypatch.setattr(AttentionWindows, "check_fits", lambda self, grid: (checks.append(self), original(self, grid)))
    defaults = Settings(sampler=SamplerSettings(windows=AttentionWindows(**TINY_WINDOWS)))
    settings = Settings.from_controls({"frames": 4, "steps": 2, "k_t": 3}, defaults, TINY.grid)
    events = list(generation(model, procedural_clip(1, 4, 16), settings))
    assert isinstance(events[-1], DoneEvent) and checks == [settings.sampler.windows]


def test_load_clip_takes_the_last_frames_and_explains_bad_files(tmp_path):
    clip = procedural_clip(0, 10, 16)
    path = write_video(str(tmp_path / "c.mp4"), clip, fps=8, scale=4)
    frames = load_clip(path, TINY, 4)
    assert frames.shape == (4, 3, 16, 16)
    assert (frames - clip[-4:]).abs().mean() < 0.05
    (tmp_path / "junk.mp4").write_bytes(b"\x00not a video" * 100)
    with pytest.raises(UserError, match="could not be decoded.*Upload an mp4"):
        load_clip(str(tmp_path / "junk.mp4"), TINY, 4)
    with pytest.raises(UserError, match="no clip"):
        load_clip(None, TINY, 4)


def test_a_generation_reports_every_call_and_matches_the_sampler(model):
    context = procedural_clip(1, 4, 16)
    settings = Settings(frames=4, context=4, sampler=SamplerSettings(chunk=2, steps=3, windows=AttentionWindows(**TINY_WINDOWS)))
    events = list(generation(model, context, settings))
    kinds = [type(e) for e in events]
    assert kinds.count(StepEvent) == 6 and kinds.count(ChunkEvent) == 2 and kinds[-1] is DoneEvent
    frames = [e for e in events if isinstance(e, FrameEvent)]  # one per frame, as soon as it is finished
    assert [e.index for e in frames] == [4, 5, 6, 7] and frames[0].frame.shape == (1, 3, 16, 16)
    assert kinds.index(FrameEvent) < kinds.index(ChunkEvent)
    assert describe_step(events[0], settings, 4) == "chunk 1/2 (frames 5-6) · step 1/3"
    direct = sample_video(model, context[None], 4, settings.sampler).video[0]
    assert torch.equal(events[-1].result.video[0], direct)


@pytest.mark.parametrize("schedule", ["autoregressive", "full-sequence"])
def test_from_nothing_the_first_frame_is_its_own_chunk_in_the_progress(model, schedule):
    settings = Settings(frames=5, sampler=SamplerSettings(chunk=2, steps=2, first_frame_steps=3, schedule=schedule,
                                                          windows=AttentionWindows(**TINY_WINDOWS)))
    steps = [describe_step(e, settings, 0) for e in generation(model, None, settings) if isinstance(e, StepEvent)]
    first = [f"first frame (from nothing) · step {i}/3" for i in (1, 2, 3)]
    if schedule == "autoregressive":
        assert steps == first + [f"chunk {c}/3 (frames {f}) · step {i}/2" for c, f in ((2, "2-3"), (3, "4-5")) for i in (1, 2)]
    else:
        assert steps == first + ["chunk 2/2 (frames 2-5) · step 1/2", "chunk 2/2 (frames 2-5) · step 2/2"]


def test_a_smaller_first_chunk_is_counted_as_a_chunk_in_the_progress(model):
    settings = Settings(frames=5, context=4, sampler=SamplerSettings(chunk=3, first_chunk=1, steps=1,
                                                                     windows=AttentionWindows(**TINY_WINDOWS)))
    context = procedural_clip(2, 4, 16)
    steps = [describe_step(e, settings, 4) for e in generation(model, context, settings) if isinstance(e, StepEvent)]
    assert steps == ["chunk 1/3 (frame 5) · step 1/1", "chunk 2/3 (frames 6-8) · step 1/1", "chunk 3/3 (frame 9) · step 1/1"]


def test_stopping_a_generation_keeps_the_finished_frames(model):
    context = procedural_clip(2, 4, 16)
    settings = Settings(frames=8, context=4, sampler=SamplerSettings(chunk=2, steps=2, windows=AttentionWindows(**TINY_WINDOWS)))
    seen = []
    for event in generation(model, context, settings):
        seen.append(event)
        if isinstance(event, ChunkEvent) and event.video.shape[0] == 4 + 4:
            break  # Stop: the frames so far are the last chunk event's
    assert not any(isinstance(e, DoneEvent) for e in seen) and sum(isinstance(e, FrameEvent) for e in seen) == 4


def test_session_chunks_undo_and_context():
    session = Session()
    with pytest.raises(UserError, match="nothing to continue"):
        session.context(4)
    session.start(torch.zeros(4, 3, 16, 16))
    with pytest.raises(UserError, match="nothing to undo"):
        session.undo()
    session.add_chunk(torch.ones(2, 3, 16, 16))
    session.add_chunk(2 * torch.ones(3, 3, 16, 16))
    session.add_gates([{"frames": [4, 5], "t": [1.0, 1.0]}, {"frames": [6], "t": [0.5]}], frame_offset=2)
    assert session.boundaries == [6, 9] and session.frames == 9
    assert [r["frames"] for r in session.gates] == [[6, 7], [8]]
    context, first = session.context(4)
    assert first == 5 and context.shape[0] == 4 and context[-1].max() == 2
    assert session.undo() == 3 and session.frames == 6
    assert [r["frames"] for r in session.gates] == []  # their frames are gone
    assert session.undo() == 2 and session.frames == 4
    with pytest.raises(UserError, match="nothing to undo"):
        session.undo()


def test_session_store_keeps_sessions_apart_and_memory_bounded(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr("msc.studio.time.time", lambda: now[0])
    store = SessionStore(idle_seconds=100, max_sessions=2, close_grace_seconds=10, protect_seconds=30)
    a, b = store.create("tab"), store.create("tab")
    assert a != b and store.get(a) is not store.get(b) and store.get(a) is store.get(a)
    now[0] += 50
    store.get(a)
    c = store.create("tab")  # a third tab: the least recently used one (b) goes
    assert b not in store and a in store and len(store) == 2
    with pytest.raises(UserError, match="no such session"):
        store.get(b)
    with pytest.raises(UserError, match="no session id"):
        store.get("")
    now[0] += 101  # idle timeout
    d = store.create("tab")
    assert a not in store and c not in store and len(store) == 1
    store.close(d)  # the tab closed...
    now[0] += 5
    store.get(d)  # ...and reconnected within the grace period: kept
    store.close(d)
    now[0] += 11
    store.sweep()  # closed for longer than the grace period: dropped
    assert len(store) == 0


def test_a_flood_of_new_tabs_never_evicts_a_tab_in_use(monkeypatch):
    """16 fake tabs, then 16 more: the victim tab, in use, keeps its video; the flood is refused while every tab
    session is in use, and takes the place of those idle for longer than the protection."""
    now = [1000.0]
    monkeypatch.setattr("msc.studio.time.time", lambda: now[0])
    store = SessionStore(max_sessions=16, protect_seconds=300)
    victim = store.create("tab")
    fakes = [store.create("tab") for _ in range(15)]
    now[0] += 200
    store.get(victim)  # the victim keeps working
    for _ in range(16):
        with pytest.raises(UserError, match="in use by open tabs"):
            store.create("tab")
    now[0] += 150  # the fakes are idle for 350 s, the victim for 150 s: fakes make room, the victim stays
    late = [store.create("tab") for _ in range(15)]
    assert victim in store and store.get(victim) is not None and all(f not in store for f in fakes)
    assert all(k in store for k in late)


def test_a_burst_of_api_sessions_never_evicts_a_browser_tab():
    store = SessionStore(max_sessions=2)
    tab = store.create("tab")
    api = [store.create("api") for _ in range(20)]
    assert tab in store and api[-1] in store and api[0] not in store and len(store) == 3


def test_frame_strip_marks_generated_frames():
    strip = frame_strip(torch.zeros(6, 3, 16, 16), first_generated=4, count=4, scale=2)
    assert strip.shape == (32, 4 * 32, 3) and strip.dtype == np.uint8
    assert tuple(strip[0, 2 * 32 + 5]) == (255, 64, 160)  # generated frames have the border
    assert tuple(strip[0, 5]) == (128, 128, 128)  # context frames do not


def test_control_values_fill_every_control_in_order():
    from msc.studio import control_values

    values = dict(zip(CONTROLS, control_values(frames=3, k_s=5)))
    assert values["frames"] == 3 and values["k_s"] == 5 and values["steps"] == SamplerSettings().steps
    assert Settings.from_controls(values, Settings(sampler=SamplerSettings(windows=AttentionWindows())), 16).frames == 3
    with pytest.raises(UserError, match="unknown setting"):
        control_values(colour="red")


def test_seeds_do_not_repeat_modulo_two_to_the_32(model):
    """0, 2³² and 2⁵³ − 1 (the app's largest) are three different videos; the same seed is the same video."""
    def video(seed):
        settings = SamplerSettings(steps=2, chunk=2, seed=seed, windows=AttentionWindows(**TINY_WINDOWS))
        return sample_video(model, None, 2, settings).video

    a, b, c = video(0), video(2**32), video(2**53 - 1)
    assert not torch.equal(a, b) and not torch.equal(a, c) and not torch.equal(b, c)
    assert torch.equal(a, video(0))
