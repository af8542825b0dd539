"""The app's engine without its UI: settings and their checks, clip loading, a sampler run in a
worker thread that reports progress, and per-tab sessions. ``app.py`` only lays out and wires.

Everything a user can get wrong raises :class:`UserError` (a ``ValueError``) whose message says what
to change; the app shows it as a ``gr.Error`` and keeps serving.
"""

from __future__ import annotations

import bisect
import os
import threading
import time
import uuid
from collections import OrderedDict
from contextlib import closing
from dataclasses import dataclass, field, replace
from typing import Generator, Iterator, List, Optional, Union

import numpy as np
import torch

from msc.sampling import (
    WINDOW_FLAGS, FrameEvent, SamplerSettings, SamplingRecorder, SamplingResult, SamplingWork, StepEvent, chunk_starts,
    sample_frames, sampling_work, settings_fields, window_fields,
)
from msc.model import AttentionWindows
from msc.video import VideoError, decode_video, finish, mark_frames

MAX_SESSION_FRAMES = 1024  # ~50 MB of float frames per tab at 64 × 64
# The work bound of one request, in model calls, tokens and frames (msc.sampling.SamplingWork). On the reference machine
# (2 CPU cores, the bundled model's size) the sampler takes close to CALL_SECONDS per forward call, plus per token run
# TOKEN_SECONDS and KEY_SECONDS for every key its attention scores (k_t frames of the token grid, k_lo of the pooled
# grid); the app adds SHOWN_CALL_SECONDS per call (its progress) and SHOWN_FRAME_SECONDS per new frame (shown live, the
# strip, the video file). Both fitted by bench.work_bound, which also times the worst accepted requests end to end.
CALL_SECONDS = 5.2e-3
TOKEN_SECONDS = 2.24e-5  # a 64 × 64 frame is 256 tokens
KEY_SECONDS = 2.0e-8
SHOWN_CALL_SECONDS = 5e-3
SHOWN_FRAME_SECONDS = 0.055
MAX_REQUEST_SECONDS = 50  # estimated; the worst accepted request measured end to end must stay within 60 s
REQUEST_RANGES = {"frames": (1, 256, 1), "context": (1, 64, 1)}
"""The app's own settings, ``(low, high, step)``: new frames per request (Continue extends further)
and context frames; the sampler's come from the metadata of its fields."""


class UserError(ValueError):
    """Bad input, with a message that says what to change."""


CONTROLS = ("frames", "context", *(f.name for f in settings_fields()), *WINDOW_FLAGS, "mark")
"""The Generate tab's controls by name, in the order of the ``/generate`` and ``/continue`` API
parameters: the request's own, every :class:`~msc.sampling.SamplerSettings` field, the windows."""


def control_values(defaults: Optional["Settings"] = None, **changes) -> list:
    """Values for every control in :data:`CONTROLS` order, as ``/generate`` and ``/continue`` take them:
    ``defaults`` (the app's unless given: the model's windows when it has them) with ``changes`` by name."""
    values = (defaults or Settings()).controls()
    unknown = set(changes) - set(values)
    if unknown:
        raise UserError(f"unknown setting(s) {sorted(unknown)}; the controls are {', '.join(CONTROLS)}.")
    values.update(changes)
    return [values[name] for name in CONTROLS]


def control_range(name: str, grid: int) -> tuple:
    """``(low, high, step)`` the app accepts for a numeric control (``high`` of ``k_s``: the token grid)."""
    if name in REQUEST_RANGES:
        return REQUEST_RANGES[name]
    meta = {f.name: f.metadata for f in (*settings_fields(), *window_fields())}[name]
    lo, hi, step = meta["range"]
    return lo, grid if hi is None else hi, step


@dataclass(frozen=True)
class Settings:
    """One Generate / Continue request: how many frames, from how much context, and how to sample.
    Made by :meth:`from_controls`, which checks every value against the range the app offers."""

    frames: int = 16  # new frames
    context: int = 8  # last frames of the clip the model is conditioned on
    mark: bool = True  # border on generated frames
    sampler: SamplerSettings = field(default_factory=SamplerSettings)

    def controls(self) -> dict:
        """Every control's value by name (windows: the default ones when the sampler has none)."""
        windows = self.sampler.windows or AttentionWindows()
        return {"frames": self.frames, "context": self.context, "mark": self.mark,
                **{n: getattr(windows, n) for n in WINDOW_FLAGS},
                **{f.name: getattr(self.sampler, f.name) for f in settings_fields()}}

    @classmethod
    def from_controls(cls, values: dict, defaults: "Settings", grid: int) -> "Settings":
        """From controls by name (any subset; the rest keep ``defaults``), each checked against its
        :func:`control_range` or choices (:class:`UserError` naming it). Numbers may arrive as floats;
        whole numbers are required where the setting is an integer."""
        sampler_fields = {f.name: f for f in settings_fields()}
        current = defaults.controls()

        def number(name, value):
            kind = type(current[name])
            if value is None:
                raise UserError(f"{name} is empty; enter a {'whole ' if kind is int else ''}number.")
            try:
                as_float = float(value)
            except (TypeError, ValueError):
                raise UserError(f"{name} must be a number, got {value!r}.") from None
            lo, hi, _ = control_range(name, grid)
            if not lo <= as_float <= hi:  # NaN fails too
                raise UserError(f"{name} must be between {lo} and {hi}, got {value}.")
            if kind is int:
                if as_float != int(as_float):
                    raise UserError(f"{name} must be a whole number, got {value}.")
                return int(as_float)
            return as_float

        changes, mark = {}, defaults.mark
        for name, value in values.items():
            if name == "mark":
                mark = bool(value)
            elif name in sampler_fields and "choices" in sampler_fields[name].metadata:
                if value not in sampler_fields[name].metadata["choices"]:
                    raise UserError(f"{name} must be one of {', '.join(sampler_fields[name].metadata['choices'])}, got {value!r}.")
                changes[name] = value
            elif name in current:  # a number (mark and the choices are handled above)
                changes[name] = number(name, value)
            else:
                raise UserError(f"unknown setting {name!r}.")
        windows = {n: changes.pop(n) for n in WINDOW_FLAGS if n in changes}
        frames, context = changes.pop("frames", defaults.frames), changes.pop("context", defaults.context)
        try:  # the library's own checks (e.g. a fractional guidance level strictly inside (0, 1))
            sampler = replace(defaults.sampler, windows=replace(defaults.sampler.windows, **windows), **changes)
        except ValueError as err:
            raise UserError(str(err)) from None
        check_work(sampler, context, frames, grid)
        return cls(frames=frames, context=context, mark=mark, sampler=sampler)


def work_terms(work: SamplingWork, grid: int, windows: AttentionWindows) -> tuple:
    """``(calls, tokens, token-keys)`` of a :class:`~msc.sampling.SamplingWork` for a ``grid`` × ``grid`` token frame
    attending with ``windows``: what ``CALL_SECONDS``, ``TOKEN_SECONDS`` and ``KEY_SECONDS`` multiply."""
    keys = windows.k_t * grid * grid + windows.k_lo * (grid // 2) ** 2  # per query, both branches (an upper bound)
    tokens = work.frame_passes * grid * grid
    return work.calls, tokens, tokens * keys


def model_seconds(work: SamplingWork, grid: int, windows: AttentionWindows) -> float:
    """The sampler's time for a :class:`~msc.sampling.SamplingWork` on the reference machine (2 CPU cores)."""
    calls, tokens, token_keys = work_terms(work, grid, windows)
    return calls * CALL_SECONDS + tokens * TOKEN_SECONDS + token_keys * KEY_SECONDS


def request_seconds(work: SamplingWork, frames: int, grid: int, windows: AttentionWindows) -> float:
    """A request's time in the app: the sampler's, its progress per call and ``frames`` new frames shown."""
    return model_seconds(work, grid, windows) + work.calls * SHOWN_CALL_SECONDS + frames * SHOWN_FRAME_SECONDS


def check_work(sampler: SamplerSettings, context: int, frames: int, grid: int) -> None:
    """:class:`UserError` when generating ``frames`` after ``context`` frames would hold the worker longer than
    :data:`MAX_REQUEST_SECONDS` (chunking, the schedule and guidance counted: :func:`msc.sampling.sampling_work`)."""
    work = sampling_work(sampler, context, frames)
    seconds = request_seconds(work, frames, grid, sampler.windows or AttentionWindows())
    if seconds > MAX_REQUEST_SECONDS:
        raise UserError(f"this request is too much work for one go: {frames} frames at {sampler.steps} steps"
                        f"{', chunks of ' + str(sampler.chunk) if sampler.schedule == 'autoregressive' else ', ' + sampler.schedule}"
                        f"{' with history guidance (two passes)' if sampler.guided else ''} take {work.calls} model calls over "
                        f"{work.frame_passes} frame passes, about {seconds:.0f} s here; one request may take at most "
                        f"{MAX_REQUEST_SECONDS} s. Ask for fewer frames or steps, larger chunks or no guidance, then "
                        "Continue for more.")


_decoded_clips: "OrderedDict[tuple, torch.Tensor]" = OrderedDict()  # the last few decodes: the preview's is reused
_decoded_clips_lock = threading.Lock()


def decode_clip(path: Optional[str], config, context: int) -> Generator[int, None, torch.Tensor]:
    """The last ``context`` frames of a clip as the model sees them, ``[K, C, S, S]`` in [-1, 1], as
    the return value of a generator that yields after every decoded frame (stop iterating to stop
    the decode: :func:`msc.video.decode_video`). The clip's preview and its generation ask for the
    same frames: they are decoded once."""
    if not path:
        raise UserError("no clip: upload a video (mp4, webm, mov, gif) or pick an example.")
    path = str(path)
    try:
        key = (os.path.abspath(path), os.path.getmtime(path), os.path.getsize(path), config.image_size, context)
    except OSError:
        key = None
    with _decoded_clips_lock:
        if key in _decoded_clips:
            return _decoded_clips[key]
    try:
        video = (yield from decode_video(path, size=config.image_size, last=context))[-context:]
    except VideoError as err:
        raise UserError(f"{err} Upload an mp4, webm, mov or gif clip.") from None
    if key is not None:
        with _decoded_clips_lock:
            _decoded_clips[key] = video
            while len(_decoded_clips) > 4:
                _decoded_clips.popitem(last=False)
    return video


def load_clip(path: Optional[str], config, context: int) -> torch.Tensor:
    """:func:`decode_clip` run to its end."""
    return finish(decode_clip(path, config, context))


# --------------------------------------------------------------------------------------------------
# One generation as the sampler's events
# --------------------------------------------------------------------------------------------------


@dataclass
class ChunkEvent:
    """A model call finished its last frame: ``video`` ``[K + n, C, H, W]`` holds every frame so far (after the
    call's :class:`~msc.sampling.FrameEvent` s)."""

    video: torch.Tensor


@dataclass
class DoneEvent:
    """The generation finished: ``result`` (:class:`~msc.sampling.SamplingResult`, batch of one) holds every frame,
    the gates of every call and the model calls."""

    result: SamplingResult


def generation(model, context: Optional[torch.Tensor], settings: Settings,
               frame_offset: int = 0) -> Iterator[Union[StepEvent, FrameEvent, ChunkEvent, DoneEvent]]:
    """One video's generation as events: the sampler's own (:func:`msc.sampling.sample_frames`: a
    :class:`~msc.sampling.StepEvent` per model call, a :class:`~msc.sampling.FrameEvent` per finished frame, batch of
    one), a :class:`ChunkEvent` after a call's last frame, and a :class:`DoneEvent` at the end.

    ``context`` ``[K, C, H, W]`` (or ``None``). The sampler runs in the caller's thread, one model call per event:
    to cancel, stop iterating (the frames finished so far came in the events before); an error in the sampler is
    raised to the caller.
    """
    known = torch.zeros(0, *model_frame_shape(model)) if context is None else context.float().cpu()
    recorder = SamplingRecorder(known[None])
    with closing(sample_frames(model, None if context is None else context[None], settings.frames, settings.sampler,
                               frame_offset=frame_offset)) as events:
        for event in events:
            call_done = recorder.add(event)
            if isinstance(event, (StepEvent, FrameEvent)):
                yield event
            if call_done and isinstance(event, FrameEvent):
                yield ChunkEvent(recorder.video()[0])
    yield DoneEvent(recorder.finish())


def describe_step(step: StepEvent, settings: Settings, context: int) -> str:
    """What a model call did, e.g. ``"chunk 2/4 (frames 13-16) · step 5/16"``, frames counted from 1
    over context + new (from nothing, the first frame is chunk 1 of its own: ``"first frame (from nothing) ·
    step 3/16"``)."""
    lo, hi = min(step.frames) + 1, max(step.frames) + 1
    frames = f"frame {lo}" if lo == hi else f"frames {lo}-{hi}"
    s = settings.sampler
    first_alone = s.first_frame_alone(context)
    if first_alone and step.frames == [0]:
        return f"first frame (from nothing) · step {max(step.steps)}/{s.first_frame_steps}"
    if s.schedule == "diffusion-forcing":
        return f"{frames} in flight at steps {min(step.steps)}-{max(step.steps)}/{s.steps} · {step.finished}/{step.total} new frames done"
    start = int(first_alone)  # new frames before the chunks
    rest = settings.frames - start
    starts = chunk_starts(rest, rest) if s.schedule == "full-sequence" else chunk_starts(rest, s.chunk, s.first_chunk)
    index = bisect.bisect_right(starts, min(step.frames) - context - start) + start
    return f"chunk {index}/{len(starts) + start} ({frames}) · step {max(step.steps)}/{s.steps}"


def model_frame_shape(model) -> tuple:
    cfg = model.config
    return cfg.channels, cfg.image_size, cfg.image_size


# --------------------------------------------------------------------------------------------------
# Sessions (one per browser tab)
# --------------------------------------------------------------------------------------------------


@dataclass
class Session:
    """The video of one browser tab: the user's context frames, then every generated chunk.

    ``boundaries`` holds the video length after each finished chunk, so Undo can drop chunks one at
    a time; ``gates`` holds the gate records of the model calls that made the frames still in the
    video (frame indices absolute in this video)."""

    video: Optional[torch.Tensor] = None  # [T, C, H, W] in [-1, 1]
    first_generated: int = 0  # frames before this index came from the user's clip
    boundaries: List[int] = field(default_factory=list)
    gates: list = field(default_factory=list)
    touched: float = field(default_factory=time.time)

    @property
    def frames(self) -> int:
        return 0 if self.video is None else int(self.video.shape[0])

    def start(self, context: torch.Tensor) -> None:
        self.video, self.first_generated, self.boundaries, self.gates = context, int(context.shape[0]), [], []

    def context(self, count: int) -> tuple:
        """The last ``count`` frames to continue from, and the index of the first of them."""
        if self.video is None:
            raise UserError("nothing to continue yet: generate from a clip first.")
        first = max(0, self.frames - count)
        return self.video[first:], first

    def add_chunk(self, frames: torch.Tensor) -> None:
        """Append finished frames ``[n, C, H, W]`` as one undoable chunk."""
        if self.frames + frames.shape[0] > MAX_SESSION_FRAMES:
            raise UserError(f"the video would exceed {MAX_SESSION_FRAMES} frames; start a new one with Generate.")
        self.video = torch.cat([self.video, frames], dim=0)
        self.boundaries.append(self.frames)

    def add_gates(self, records: list, frame_offset: int) -> None:
        for r in records:
            self.gates.append({**r, "frames": [frame_offset + f for f in r["frames"]]})

    def undo(self) -> int:
        """Drop the last generated chunk; returns how many frames went."""
        if not self.boundaries:
            raise UserError("nothing to undo: only the clip's own frames are left.")
        self.boundaries.pop()
        keep = self.boundaries[-1] if self.boundaries else self.first_generated
        removed = self.frames - keep
        self.video = self.video[:keep]
        self.gates = [r for r in self.gates if max(r["frames"]) < keep]
        return removed


class SessionStore:
    """Sessions by id, each of a kind (``"tab"``: a browser tab; ``"api"``: a plain API client), with
    memory bounded three ways: a session is dropped ``close_grace_seconds`` after its tab closes
    (``close``; a reconnect within the grace keeps it, since clients also reconnect while alive), after
    ``idle_seconds`` without use, and, least recently used first, when its kind holds more than
    ``max_sessions``: a burst of API calls never evicts a browser tab's video. A tab's session used in the last
    ``protect_seconds`` and not closed is never evicted: when every tab session is in use, a new tab is refused
    (a :class:`UserError`) instead, so a flood of new tabs cannot take a working tab's video."""

    KINDS = ("tab", "api")

    def __init__(self, idle_seconds: float = 1800, max_sessions: int = 16, close_grace_seconds: float = 60,
                 protect_seconds: float = 300):
        self.idle_seconds, self.max_sessions, self.close_grace_seconds = idle_seconds, max_sessions, close_grace_seconds
        self.protect_seconds = protect_seconds
        self._sessions = {}  # id -> Session
        self._kinds = {}  # id -> kind
        self._closed_at = {}
        self._lock = threading.Lock()

    def _sweep_locked(self, now: float) -> None:
        for k in [k for k, s in self._sessions.items() if now - s.touched > self.idle_seconds]:
            self._drop_locked(k)
        for k in [k for k, t in self._closed_at.items() if now - t > self.close_grace_seconds]:
            self._drop_locked(k)

    def _drop_locked(self, key: str) -> None:
        self._sessions.pop(key, None)
        self._kinds.pop(key, None)
        self._closed_at.pop(key, None)

    def sweep(self) -> None:
        """Drop idle and closed sessions (the app calls this periodically)."""
        with self._lock:
            self._sweep_locked(time.time())

    def create(self, kind: str) -> str:
        """A new empty session of ``kind``; returns its id (unguessable: it is the only key to the video)."""
        if kind not in self.KINDS:
            raise ValueError(f"session kind must be one of {self.KINDS}, got {kind!r}.")
        key, now = uuid.uuid4().hex, time.time()
        with self._lock:
            self._sweep_locked(now)
            same_kind = [k for k in self._sessions if self._kinds[k] == kind]
            if len(same_kind) >= self.max_sessions:
                evictable = [k for k in same_kind if not self._protected_locked(k, now)]
                if not evictable:
                    raise UserError(f"the server holds its {self.max_sessions} videos in use by open tabs; try again in a "
                                    f"few minutes (a video idle for {self.protect_seconds / 60:.0f} minutes can make room).")
                self._drop_locked(min(evictable, key=lambda k: self._sessions[k].touched))
            self._sessions[key], self._kinds[key] = Session(touched=now), kind
        return key

    def _protected_locked(self, key: str, now: float) -> bool:
        """A browser tab's session used in the last ``protect_seconds`` whose tab has not closed."""
        return (self._kinds[key] == "tab" and key not in self._closed_at
                and now - self._sessions[key].touched <= self.protect_seconds)

    def get(self, key: Optional[str]) -> Session:
        """The session ``key`` (:class:`UserError` when it does not exist or has expired)."""
        now = time.time()
        with self._lock:
            self._sweep_locked(now)
            session = self._sessions.get(key or "")
            if session is None:
                raise UserError("no such session (it expired or never existed): start a video with /generate, "
                                "which returns its session id." if key else "no session id: pass the one /generate returned.")
            self._closed_at.pop(key, None)  # in use again
            session.touched = now
            return session

    def close(self, key: str) -> None:
        """The tab went away: drop its session after the grace period unless it comes back."""
        with self._lock:
            if key in self._sessions:
                self._closed_at[key] = time.time()

    def __len__(self) -> int:
        return len(self._sessions)

    def __contains__(self, key: str) -> bool:
        return key in self._sessions


# --------------------------------------------------------------------------------------------------
# Pictures
# --------------------------------------------------------------------------------------------------


def live_frame(frame: torch.Tensor, scale: int = 4, mark: bool = True) -> np.ndarray:
    """One generated frame ``[C, H, W]`` enlarged for the live preview, ``[H*scale, W*scale, 3]`` uint8
    (with the generated-frame border when ``mark``)."""
    x = ((frame.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)[None]
    x = x.repeat_interleave(scale, 2).repeat_interleave(scale, 3)
    if mark:
        x = mark_frames(x, 0, width=max(2, x.shape[-1] // 64))
    return x[0].permute(1, 2, 0).numpy()


def frame_strip(video: torch.Tensor, first_generated: int, count: int = 8, scale: int = 2, mark: bool = True) -> np.ndarray:
    """The last ``count`` frames side by side, ``[H*scale, count*W*scale, 3]`` uint8, generated ones
    with a border."""
    shown = video[-count:]
    first = max(0, first_generated - (video.shape[0] - shown.shape[0]))
    x = ((shown.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)  # [n, 3, H, W]
    x = x.repeat_interleave(scale, 2).repeat_interleave(scale, 3)
    if mark and first < x.shape[0]:
        x = mark_frames(x, first, width=max(2, x.shape[-1] // 32))
    return x.permute(2, 0, 3, 1).reshape(x.shape[2], -1, 3).numpy()


def prune_old_files(folder: str, max_age_s: float = 3600) -> None:
    """Delete outputs older than ``max_age_s`` (Gradio keeps its own copy of what it served)."""
    now = time.time()
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        try:
            if now - os.path.getmtime(path) > max_age_s:
                os.remove(path)
        except OSError:
            pass
