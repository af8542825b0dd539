"""The app's engine without its UI: settings and their checks, clip loading, a sampler run in a
worker thread that reports progress, and per-tab sessions. ``app.py`` only lays out and wires.

Everything a user can get wrong raises :class:`UserError` (a ``ValueError``) whose message says what
to change; the app shows it as a ``gr.Error`` and keeps serving.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from typing import Iterator, List, Optional

import numpy as np
import torch

from msc.diffusion import SCHEDULES
from msc.model import AttentionWindows
from msc.sampling import (
    FRAME_SCHEDULES, GatesEvent, SamplerSettings, SamplingResult, StepEvent, check_guidance_args, check_sampling_args, sample_frames,
)
from msc.video import VideoError, mark_frames, read_video

MAX_NEW_FRAMES = 256  # per request; Continue extends further
MAX_CONTEXT = 64
MAX_STEPS = 100
MAX_SESSION_FRAMES = 1024  # ~50 MB of float frames per tab at 64 × 64


class UserError(ValueError):
    """Bad input, with a message that says what to change."""


@dataclass
class Settings:
    """Every control of the Generate tab. Defaults give a good result in a few seconds on 2 cores."""

    frames: int = 16  # new frames
    context: int = 8  # last frames of the clip the model is conditioned on
    chunk: int = 4
    steps: int = 16
    schedule: str = "autoregressive"
    ar_step: int = 2
    noise_schedule: str = "cosine"
    shift: float = 3.0
    context_noise: float = 0.0
    k_s: int = 7
    k_t: int = 3
    d: int = 2
    k_lo: int = 4
    seed: int = 0
    history_guidance: float = 1.0  # w: 1 = off
    guidance_mode: str = "vanilla"
    mark: bool = True  # border on generated frames

    @classmethod
    def from_values(cls, *values) -> "Settings":
        """From the UI's component values, in field order; numbers arrive as floats."""
        names = [f.name for f in cls.__dataclass_fields__.values()]
        kwargs = dict(zip(names, values))
        for name in ("frames", "context", "chunk", "steps", "ar_step", "k_s", "k_t", "d", "k_lo", "seed"):
            value = kwargs.get(name)
            if value is None:
                raise UserError(f"{name} is empty; enter a whole number.")
            if float(value) != int(float(value)):
                raise UserError(f"{name} must be a whole number, got {value}.")
            kwargs[name] = int(float(value))
        for name in ("shift", "context_noise", "history_guidance"):
            if kwargs.get(name) is None:
                raise UserError(f"{name} is empty; enter a number.")
            kwargs[name] = float(kwargs[name])
        return cls(**kwargs)

    def windows(self) -> AttentionWindows:
        return AttentionWindows(self.k_s, self.k_t, self.d, self.k_lo)

    def sampler(self) -> SamplerSettings:
        """The sampler's share of these settings."""
        return SamplerSettings(steps=self.steps, chunk=self.chunk, schedule=self.schedule, ar_step=self.ar_step,
                               noise_schedule=self.noise_schedule, shift=self.shift, context_noise=self.context_noise,
                               seed=self.seed, history_guidance=self.history_guidance, guidance_mode=self.guidance_mode,
                               windows=self.windows())

    def check(self, config) -> None:
        """Raise :class:`UserError` for any setting the model or the sampler cannot use."""
        if not 1 <= self.frames <= MAX_NEW_FRAMES:
            raise UserError(f"frames to generate must be between 1 and {MAX_NEW_FRAMES}, got {self.frames}.")
        if not 1 <= self.context <= MAX_CONTEXT:
            raise UserError(f"context frames must be between 1 and {MAX_CONTEXT}, got {self.context}.")
        if not 1 <= self.steps <= MAX_STEPS:
            raise UserError(f"denoising steps must be between 1 and {MAX_STEPS}, got {self.steps}.")
        if self.schedule not in FRAME_SCHEDULES:
            raise UserError(f"frame schedule must be one of {', '.join(FRAME_SCHEDULES)}.")
        if self.noise_schedule not in SCHEDULES:
            raise UserError(f"noise schedule must be one of {', '.join(SCHEDULES)}.")
        if self.noise_schedule == "shifted" and not 0 < self.shift <= 100:
            raise UserError(f"the shift of the shifted schedule must be in (0, 100], got {self.shift}.")
        if self.seed < 0:
            raise UserError(f"seed must be >= 0, got {self.seed}.")
        try:
            self.windows().validate(config.grid)
            check_sampling_args(self.frames, self.steps, self.chunk, self.ar_step, self.context_noise, 0.0, self.schedule)
            check_guidance_args(self.history_guidance, self.guidance_mode, 0.5, "constant")
        except UserError:
            raise
        except ValueError as err:
            raise UserError(str(err)) from None


def load_clip(path: Optional[str], config, context: int) -> torch.Tensor:
    """The last ``context`` frames of a clip as the model sees them: ``[K, C, S, S]`` in [-1, 1]."""
    if not path:
        raise UserError("no clip: upload a video (mp4, webm, mov, gif) or pick an example.")
    try:
        video = read_video(str(path), size=config.image_size)
    except VideoError as err:
        raise UserError(f"{err} Upload an mp4, webm, mov or gif clip.") from None
    return video[-context:]


# --------------------------------------------------------------------------------------------------
# A sampler run in a worker thread
# --------------------------------------------------------------------------------------------------


@dataclass
class Update:
    """One report of a running generation.

    ``kind``: ``"step"`` (a model call finished), ``"frames"`` (new frames finished; ``video`` holds
    all frames so far), ``"done"`` (``result``), ``"cancelled"`` (``video`` holds the finished frames)
    or ``"error"`` (``error``).
    """

    kind: str
    call: int = 0
    calls: int = 0
    finished: int = 0
    total: int = 0
    frames: List[int] = field(default_factory=list)
    steps: List[int] = field(default_factory=list)
    video: Optional[torch.Tensor] = None
    result: object = None
    error: Optional[BaseException] = None

    def describe(self, settings: "Settings", context: int) -> str:
        """What this call did, e.g. ``"chunk 2/4 (frames 13-16) · step 5/16"``, frames counted from 1
        over context + new."""
        lo, hi = min(self.frames) + 1, max(self.frames) + 1
        frames = f"frame {lo}" if lo == hi else f"frames {lo}-{hi}"
        if settings.schedule == "diffusion-forcing":
            return f"{frames} in flight at steps {min(self.steps)}-{max(self.steps)}/{settings.steps} · {self.finished}/{self.total} new frames done"
        chunk = settings.frames if settings.schedule == "full-sequence" else settings.chunk
        index, count = (min(self.frames) - context) // chunk + 1, -(-settings.frames // chunk)
        return f"chunk {index}/{count} ({frames}) · step {max(self.steps)}/{settings.steps}"


def run_generation(model, context: Optional[torch.Tensor], settings: Settings, cancel: threading.Event,
                   frame_offset: int = 0) -> Iterator[Update]:
    """Run the sampler (:func:`msc.sampling.sample_frames`) and yield its progress as :class:`Update` s.

    ``context`` ``[K, C, H, W]`` (or ``None``). The sampler runs in the caller's thread, one model call
    per step of the iteration: setting ``cancel`` (or closing this generator) stops it before the next
    model call; the frames finished by then arrive in a ``"cancelled"`` update.
    """
    video = torch.zeros(0, *model_frame_shape(model)) if context is None else context.float().cpu()
    batch_context = None if context is None else context[None]
    result = SamplingResult(video=video)
    events = sample_frames(model, batch_context, settings.frames, settings.sampler(), frame_offset=frame_offset)
    step = None
    try:
        for event in events:
            if isinstance(event, GatesEvent):
                result.gates.append({"call": event.call, "frames": event.frames, "t": event.t, "gates": event.gates})
                continue
            if isinstance(event, StepEvent):
                step = event
                result.model_calls += event.forwards
                yield Update("step", event.call, event.calls, event.finished, event.total, list(event.frames), list(event.steps))
            else:
                video = torch.cat([video, event.frame], dim=0)
                if event.finished == step.finished:  # the last frame this call finished
                    yield Update("frames", step.call, step.calls, step.finished, step.total, list(step.frames), list(step.steps),
                                 video=video)
            if cancel.is_set():
                yield Update("cancelled", video=video)
                return
    except Exception as err:  # reported to the caller, who shows it
        yield Update("error", error=err)
        return
    finally:
        events.close()
    result.video = video
    yield Update("done", result=result, video=video)


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
    """Sessions by key (Gradio's per-tab session hash), with memory bounded three ways: a session
    is dropped ``close_grace_seconds`` after its tab closes (``close``; a reconnect within the grace
    keeps it, since clients also reconnect while alive), after ``idle_seconds`` without use, and,
    least recently used first, when more than ``max_sessions`` exist."""

    def __init__(self, idle_seconds: float = 1800, max_sessions: int = 16, close_grace_seconds: float = 60):
        self.idle_seconds, self.max_sessions, self.close_grace_seconds = idle_seconds, max_sessions, close_grace_seconds
        self._sessions = {}
        self._closed_at = {}
        self._lock = threading.Lock()

    def _sweep_locked(self, now: float) -> None:
        for k in [k for k, s in self._sessions.items() if now - s.touched > self.idle_seconds]:
            self._drop_locked(k)
        for k in [k for k, t in self._closed_at.items() if now - t > self.close_grace_seconds]:
            self._drop_locked(k)

    def _drop_locked(self, key: str) -> None:
        self._sessions.pop(key, None)
        self._closed_at.pop(key, None)

    def sweep(self) -> None:
        """Drop idle and closed sessions (the app calls this periodically)."""
        with self._lock:
            self._sweep_locked(time.time())

    def get(self, key: str) -> Session:
        now = time.time()
        with self._lock:
            self._closed_at.pop(key, None)  # in use again
            self._sweep_locked(now)
            session = self._sessions.get(key)
            if session is None:
                session = self._sessions[key] = Session()
                while len(self._sessions) > self.max_sessions:
                    oldest = min(self._sessions, key=lambda k: self._sessions[k].touched)
                    self._drop_locked(oldest)
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
