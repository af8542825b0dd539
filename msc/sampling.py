"""Samplers: extend a video chunk by chunk without breaking frame order (paper Sec. 3.3; docs/design.md §4).

In the style of k-diffusion's ``sampling.py``: the noise schedule is built outside the loop
(:func:`msc.diffusion.noise_levels`), every setting lives in one :class:`SamplerSettings`, and there
is one calling convention, as an iterator of events or collected::

    settings = SamplerSettings(steps=8, chunk=4)
    for event in sample_frames(model, context, frames, settings):   # stop iterating to cancel
        ...  # GatesEvent, StepEvent (a model call finished), FrameEvent (a frame is finished)

    result = sample_video(model, context, frames, steps=8, chunk=4)  # or settings=settings
    result.video   # [B, K + frames, C, H, W]: the context followed by the new frames
    result.gates   # one record per model call: frames, their noise levels, [n, depth, 2] gates

``sample_video`` also takes a ``callback(info: dict)`` called after every model call with ``call`` /
``calls``, ``frames`` (absolute indices being denoised), ``steps`` (their steps done, 1-based), ``t``
(their levels now), ``finished`` / ``total`` (new frames done) and ``video`` (all finished frames,
when this call finished some, else ``None``), and a ``cancel()`` asked before every model call.

**Frame schedules** (how noise levels are arranged across frames):

* ``autoregressive``: chunks of ``chunk`` frames are denoised from level 1 to 0 together,
  conditioned on the finished past (the first chunk of ``first_chunk`` frames when that is set: a live stream's first
  frame as soon as a small chunk's, its frames/s those of large chunks);
* ``diffusion-forcing``: the pyramid of Diffusion Forcing: a sliding window in which each frame is
  ``ar_step`` denoising steps behind the previous one; a frame is emitted when it reaches 0;
* ``full-sequence``: all new frames share one level (the non-causal baseline).

**From nothing** the first frame has no finished frame before it: it is a whole picture drawn from
noise, where with the previous-frame prior every later frame draws only its change from the frame
before. So it is sampled alone with its own ``first_frame_steps`` (0: in the first chunk, with
``steps``), and the frame schedule runs over the frames after it.

**Updates** follow the rectified-flow ODE ``dx/dt = v`` (:meth:`msc.diffusion.Denoiser.step`, the one home of the
update, as of the velocity's preconditioning and of where a frame's noise is centred): ``η = 0`` is the
deterministic (DDIM-like, here exactly Euler) update, ``η > 0`` renews part of the noise around the anchor.

**Context and the KV cache.** Finished frames (uploaded context or generated) are *committed*: they
are given ``context_noise`` once and run through the model once, and their keys and values go into a
:class:`~msc.model.KVCache` that keeps only the last window's worth. Later model calls process only
the frames being denoised. ``use_cache=False`` instead re-runs every committed frame at every call
(same numbers, cost growing with the video): the reference the tests compare against.

**Randomness** is drawn per frame from ``(seed, frame index)``, so a seed gives the same video, and a
frame never changes when later frames are generated.
"""

from __future__ import annotations

import json
import os
from contextlib import closing
from dataclasses import dataclass, field, fields, replace
from typing import Callable, Dict, Iterator, List, Optional, Union

import numpy as np
import torch

from msc.diffusion import FLOW_PRIORS, SCHEDULES, Denoiser, noise_levels
from msc.environment import bf16_native
from msc.model import AttentionWindows, KVCache

FRAME_SCHEDULES = ("autoregressive", "diffusion-forcing", "full-sequence")
# the network's arithmetic while sampling: bfloat16 runs its matrix multiplies under bf16 autocast (the attention, the
# action kernels and the sampler's own update stay float32) where the processor has bf16 units, float32 elsewhere
PRECISIONS = ("float32", "bfloat16")
# the anchor of the frames that follow the caller's context (real frames): the model's own prior, or a flow anchor in
# its place (for a model with a flow prior) -- a sub-pixel splat is the better guess of the next frames, and its blur
# compounds only where chunk after chunk is anchored on generated frames, which keep the model's own
CONTEXT_ANCHORS = ("prior",) + tuple(FLOW_PRIORS)
MAX_FRAMES = 4096  # a single call never generates more frames than this


@dataclass
class SamplingResult:
    video: torch.Tensor  # [B, K + N, C, H, W]
    gates: List[dict] = field(default_factory=list)  # per model call: step, frames, t, gates [n, depth, 2]
    model_calls: int = 0


# The kinds of noise a frame owns (part of its seed, so each kind is an independent stream)
INITIAL_NOISE = 0  # the pure noise a new frame starts from
CONTEXT_NOISE = 1  # given to a finished frame at ``context_noise``
UPDATE_NOISE = 2  # the fresh noise of a stochastic update (eta > 0), one per step
HIDING_NOISE = 3  # hides the history from the history-free pass of history guidance


def _frame_noise(seed: int, frame: int, kind: int, step: int, shape, device) -> torch.Tensor:
    """Noise owned by one frame: of ``kind`` (``INITIAL_NOISE`` … ``HIDING_NOISE``), at ``step`` for updates.

    Drawn from NumPy's PCG64 seeded with the whole tuple ``(seed, frame, kind, step)`` (any size of
    integer): torch's CPU generator keeps only 32 bits of its seed, so seeds 0 and 2³² would repeat."""
    rng = np.random.default_rng([int(seed), int(frame), int(kind), int(step)])
    return torch.from_numpy(rng.standard_normal(tuple(shape), dtype=np.float32)).to(device)


def frame_noises(seed: int, frames: List[int], kind: int, step: int, shape, device) -> torch.Tensor:
    """``[B, n, C, H, W]`` per-frame noise for absolute ``frames``; ``shape`` is ``(B, C, H, W)``."""
    return torch.stack([_frame_noise(seed, f, kind, step, shape, device) for f in frames], dim=1)


def chunk_starts(frames: int, chunk: int, first_chunk: int = 0) -> List[int]:
    """The first new frame of every chunk of the autoregressive schedule: a first chunk of ``first_chunk`` frames (0: of
    ``chunk``), then chunks of ``chunk``."""
    first = min(first_chunk or chunk, frames)
    return [0] + list(range(first, frames, chunk)) if frames else []


def frame_schedule_plan(schedule: str, frames: int, steps: int, chunk: int, ar_step: int,
                        first_chunk: int = 0) -> List[List[tuple]]:
    """The denoising plan: a list of model calls, each a list of ``(new frame index, step index)``
    moving that frame from ``levels[step]`` to ``levels[step + 1]``. Frames finish in order."""
    if schedule not in FRAME_SCHEDULES:
        raise ValueError(f"frame schedule must be one of {FRAME_SCHEDULES}, got {schedule!r}.")
    if schedule in ("autoregressive", "full-sequence"):
        starts = chunk_starts(frames, chunk, first_chunk) if schedule == "autoregressive" else chunk_starts(frames, frames)
        plan = []
        for start, end in zip(starts, starts[1:] + [frames]):
            plan.extend([[(j, i) for j in range(start, end)] for i in range(steps)])
        return plan
    # diffusion forcing: frame j starts at tick j * ar_step and takes one step per tick
    plan = []
    for tick in range((frames - 1) * ar_step + steps):
        call = [(j, tick - j * ar_step) for j in range(frames) if 0 <= tick - j * ar_step < steps]
        if call:
            plan.append(call)
    return plan


def _check_count(name: str, value, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")


def check_frames(frames) -> None:
    """Raise ``ValueError`` unless ``frames`` is a number of new frames one call may generate."""
    _check_count("frames", frames)
    if frames > MAX_FRAMES:
        raise ValueError(f"frames must be at most {MAX_FRAMES}, got {frames}.")


def check_sampling_args(steps, chunk, ar_step, context_noise, eta, schedule) -> None:
    """Raise ``ValueError`` naming the setting to change."""
    for name, value in (("steps", steps), ("chunk", chunk), ("ar_step", ar_step)):
        _check_count(name, value)
    if not 0 <= context_noise < 1:
        raise ValueError(f"context_noise must be in [0, 1), got {context_noise}.")
    if not 0 <= eta <= 1:
        raise ValueError(f"eta must be in [0, 1], got {eta}.")
    if schedule not in FRAME_SCHEDULES:
        raise ValueError(f"frame schedule must be one of {FRAME_SCHEDULES}, got {schedule!r}.")


GUIDANCE_MODES = ("vanilla", "fractional")
GUIDANCE_SCHEDULES = ("constant", "linear")


def guidance_scale(w: float, schedule: str, t: torch.Tensor) -> torch.Tensor:
    """History-guidance scale per frame at noise levels ``t`` ``[n]``: ``constant`` is ``w``
    everywhere; ``linear`` fades from ``w`` at pure noise to 1 (no guidance) at a clean frame,
    ``1 + (w - 1)·t``, so guidance shapes the coarse content and leaves the details alone."""
    if schedule == "constant":
        return torch.full_like(t, float(w))
    if schedule == "linear":
        return 1 + (float(w) - 1) * t
    raise ValueError(f"guidance schedule must be one of {GUIDANCE_SCHEDULES}, got {schedule!r}.")


def check_guidance_args(w, mode, level, schedule) -> None:
    """Raise ``ValueError`` naming the setting to change."""
    if not 0 <= float(w) <= 20:
        raise ValueError(f"history guidance must be in [0, 20] (1 = off), got {w}.")
    if mode not in GUIDANCE_MODES:
        raise ValueError(f"guidance mode must be one of {GUIDANCE_MODES}, got {mode!r}.")
    if mode == "fractional" and not 0 < float(level) < 1:
        raise ValueError(f"the fractional guidance level must be in (0, 1), got {level}.")
    if schedule not in GUIDANCE_SCHEDULES:
        raise ValueError(f"guidance schedule must be one of {GUIDANCE_SCHEDULES}, got {schedule!r}.")


def network_precision(precision: str, device: torch.device):
    """The context the network's calls run in at ``precision`` (one of :data:`PRECISIONS`): for ``"bfloat16"``, bf16
    autocast on ``device`` where its processor computes bf16 in hardware (:func:`msc.environment.bf16_native`; what
    autocast leaves in float32: :func:`msc.model.attention_in_float32`, :class:`msc.diffusion.ActionKernels`), else
    nothing: emulated bf16 is slower than float32, and the setting is for speed."""
    kind = torch.device(device).type
    return torch.autocast(kind, dtype=torch.bfloat16, enabled=precision == "bfloat16" and bf16_native(kind))


class _History:
    """The finished frames as one pass of the model sees them: each at noise level ``level`` (with
    noise of kind ``noise_kind`` drawn per frame), kept as keys and values in a bounded
    :class:`~msc.model.KVCache`, or as a tensor re-run at every call without the cache.

    ``hide``: the noise is centred on 0 with unit std even with the previous-frame prior (a frame
    without an anchor), so that at level 1 nothing of the history shows — the history-free pass of
    history guidance. Otherwise each frame's noise is centred on the frame before it, as in training."""

    def __init__(self, model, windows, level: float, noise_kind: int, use_cache: bool, seed: int, frame_offset: int,
                 noise_shape, device, hide: bool = False, actions: Optional[torch.Tensor] = None,
                 precision: str = "float32", context_anchor: str = "prior"):
        self.model, self.windows, self.level, self.kind = model, windows, float(level), noise_kind
        self.precision = precision  # one of PRECISIONS: how the network computes (see network_precision)
        self.context_anchor = context_anchor  # one of CONTEXT_ANCHORS
        self.context_frames: Optional[int] = None  # how many of the committed frames are the caller's context
        self.denoiser = Denoiser(model)
        self.actions = actions  # [B, K + N] long: the action that led to each frame of the video, or None
        self.hide = hide
        self.seed, self.offset, self.noise_shape, self.device = seed, frame_offset, noise_shape, device
        self.count = 0  # frames committed so far
        self.prior = model.config.prior
        self.last: Optional[torch.Tensor] = None  # the last committed clean frame [B, C, H, W]
        self.previous: Optional[torch.Tensor] = None  # the one before it
        self._next_anchors = {}  # horizon -> anchor [B, C, H, W] of the frame that far after the last one
        self.cache = KVCache(model.config, windows) if use_cache else None
        # without the cache, every committed frame as the model sees it: [B, n, C, H, W]
        self.frames = None if use_cache else torch.zeros(noise_shape[0], 0, *noise_shape[1:], device=device)

    def actions_of(self, first: int, count: int) -> Optional[torch.Tensor]:
        """``[B, count]`` actions of the video's frames ``first ..`` (``None`` without actions)."""
        return None if self.actions is None else self.actions[:, first : first + count]

    def __len__(self) -> int:
        return self.count

    def commit(self, new_frames: torch.Tensor, context: bool = False) -> None:
        """Add finished frames (clean, ``[B, n, C, H, W]``): noise them to ``level`` and, with the
        cache, run them through the model once. ``context``: they are the caller's context (real frames)."""
        b, first = new_frames.shape[0], len(self)
        idx = [self.offset + i for i in range(first, first + new_frames.shape[1])]
        x = new_frames
        if self.level > 0:
            noise = frame_noises(self.seed, idx, self.kind, 0, self.noise_shape, self.device)
            anchor = anchored = None
            if self.prior != "none" and not self.hide:  # each frame's noise is centred on its anchor, as in training
                known = [f for f in (self.previous, self.last) if f is not None] + list(new_frames.unbind(1))
                past = len(known) - new_frames.shape[1]  # finished frames before the first new one
                anchor = torch.stack([torch.zeros_like(new_frames[:, 0]) if past + i == 0 else
                                      self.denoiser.anchors(known[past + i - 2] if past + i >= 2 else None,
                                                            known[past + i - 1], [1], self.actions_of(first + i, 1))[:, 0]
                                      for i in range(new_frames.shape[1])], dim=1)
                anchored = torch.ones(b, len(idx), dtype=torch.bool, device=self.device)
                anchored[:, 0] = self.last is not None
            x = self.denoiser.add_noise(x, noise, torch.full((b, len(idx)), self.level, device=self.device), anchor, anchored)
        self.previous = new_frames[:, -2] if new_frames.shape[1] >= 2 else self.last
        self.last = new_frames[:, -1]
        self._next_anchors = {}
        self.count += x.shape[1]
        if context:
            self.context_frames = self.count
        if self.cache is None:
            self.frames = torch.cat([self.frames, x], dim=1)
        else:
            for s in range(0, x.shape[1], 16):  # long contexts go in pieces; the cache makes it exact
                part = x[:, s : s + 16]
                conditions = {} if self.actions is None else {"actions": self.actions_of(first + s, part.shape[1])}
                with network_precision(self.precision, self.device):
                    self.model(part, torch.full(part.shape[:2], self.level, device=self.device), cache=self.cache,
                               commit=True, keys_only=True, **conditions)  # keys and values only: the raw network

    def anchor(self, frame: int) -> Optional[torch.Tensor]:
        """``[B, C, H, W]`` anchor of the video's frame ``frame`` (counted as :meth:`__len__` counts) from the
        finished frames (:meth:`~msc.diffusion.Denoiser.anchors`); ``None`` when no frame is finished."""
        if self.last is None:
            return None
        horizon = frame - (len(self) - 1)
        on_context = self.context_anchor != "prior" and len(self) == self.context_frames  # anchored on real frames
        if horizon not in self._next_anchors:
            self._next_anchors[horizon] = self.denoiser.anchors(self.previous, self.last, [horizon],
                                                                self.actions_of(len(self), horizon),
                                                                prior=self.context_anchor if on_context else None)[:, 0]
        return self._next_anchors[horizon]

    def predict(self, x: torch.Tensor, t: torch.Tensor, anchor=None, anchored=None, frames: Optional[List[int]] = None) -> torch.Tensor:
        """Velocity of the frames ``x`` ``[B, n, C, H, W]`` at levels ``t`` ``[B, n]`` after this history
        (``anchor`` / ``anchored``: see :class:`~msc.diffusion.Denoiser`; ``frames``: their indices in the video,
        for their actions)."""
        with network_precision(self.precision, self.device):
            return self._predict(x, t, anchor, anchored, frames).float()

    def _predict(self, x, t, anchor, anchored, frames):
        actions = None if self.actions is None else self.actions[:, frames]
        conditions = {} if actions is None else {"actions": actions}
        if self.cache is not None:
            return self.denoiser(x, t, anchor, anchored, cache=self.cache, **conditions)
        b, n_past = x.shape[0], len(self)
        if actions is not None:
            conditions["actions"] = torch.cat([self.actions_of(0, n_past), actions], dim=1)
        full_t = torch.cat([torch.full((b, n_past), self.level, device=x.device), t], dim=1)
        if anchor is not None:  # the history's outputs are dropped: give it no anchor
            anchor = torch.cat([torch.zeros_like(self.frames), anchor], dim=1)
            anchored = torch.cat([torch.zeros(b, n_past, dtype=torch.bool, device=x.device), anchored], dim=1)
        return self.denoiser(torch.cat([self.frames, x], dim=1), full_t, anchor, anchored, windows=self.windows,
                             **conditions)[:, n_past:]


@dataclass(frozen=True)
class SamplerSettings:
    """How to sample: the one home of every sampling-time setting, checked once on construction
    (``ValueError`` naming the setting). The CLI flags, the settings table of docs/app.md and the app's
    controls are all made from these fields (:func:`settings_fields`): adding a setting is adding a field.

    Field metadata: ``help`` (flag help, table, control label), ``choices``, and ``range``
    ``(low, high, step)``: what the app offers (the library itself accepts what the checks allow).
    ``windows``: the attention windows (sampling-time settings, docs/design.md §4); ``None`` uses the model's."""

    # the library's own defaults are neutral starting points (a conventional number of steps, a few frames at a time),
    # tuned to no checkpoint; a model's measured defaults live beside its weights, in its SAMPLER_FILE (load_presets)
    steps: int = field(default=16, metadata={"help": "denoising steps per frame", "range": (1, 100, 1)})
    chunk: int = field(default=4, metadata={"help": "frames denoised together (autoregressive schedule)", "range": (1, 16, 1)})
    # the first chunk waits for all its frames: a smaller one shows the first frame sooner, the chunks after it keep
    # their size (live streaming: the first frame of a small chunk, the frames/s of a large one)
    first_chunk: int = field(default=0, metadata={"help": "frames in a video's first chunk (0: as chunk); fewer show the "
                                                          "first frame sooner", "range": (0, 16, 1)})
    # a frame with an anchor only draws its change from the frame before, one without draws a whole picture: a model
    # sampled with few steps may want more for its first frame from nothing
    first_frame_steps: int = field(default=0, metadata={"help": "from nothing: denoising steps of the first frame, "
                                                                "sampled alone (0: part of the first chunk)",
                                                        "range": (0, 100, 1)})
    schedule: str = field(default="autoregressive", metadata={"help": "frame schedule", "choices": FRAME_SCHEDULES})
    ar_step: int = field(default=2, metadata={"help": "diffusion forcing: steps between neighbouring frames", "range": (1, 16, 1)})
    noise_schedule: str = field(default="cosine", metadata={"help": "noise schedule", "choices": SCHEDULES})
    shift: float = field(default=3.0, metadata={"help": "time shift of the shifted noise schedule", "range": (0.1, 10.0, 0.1)})
    context_noise: float = field(default=0.0, metadata={"help": "noise level given to finished frames", "range": (0.0, 0.5, 0.01)})
    eta: float = field(default=0.0, metadata={"help": "stochasticity of the update (0: deterministic)", "range": (0.0, 1.0, 0.05)})
    seed: int = field(default=0, metadata={"help": "random seed (noise is drawn per frame from it)",
                                                  "range": (0, 2**53 - 1, 1)})  # the app's bound: exact in a browser
    history_guidance: float = field(default=1.0, metadata={"help": "history guidance w (1 = off; > 1 follows the context more, "
                                                                   "one more forward per step)", "range": (0.0, 5.0, 0.1)})
    guidance_mode: str = field(default="vanilla", metadata={"help": "history hidden at noise 1 (vanilla) or at the level (fractional)",
                                                            "choices": GUIDANCE_MODES})
    guidance_level: float = field(default=0.5, metadata={"help": "noise level of the history in fractional guidance",
                                                         "range": (0.05, 0.95, 0.05)})
    guidance_schedule: str = field(default="constant", metadata={"help": "guidance scale over the noise level",
                                                                 "choices": GUIDANCE_SCHEDULES})
    context_anchor: str = field(default="prior", metadata={"help": "anchor of the frames after the context: the model's own "
                                                                    "(prior) or a flow anchor in its place (flow_splat: "
                                                                    "sub-pixel; flow_splat_layered: sub-pixel, what moves "
                                                                    "drawn over what it lands on)", "choices": CONTEXT_ANCHORS})
    precision: str = field(default="float32", metadata={"help": "the network's matrix multiplies in float32 or bfloat16 "
                                                                "(bf16 autocast; float32 on a processor without bf16 units)",
                                                        "choices": PRECISIONS})
    windows: Optional[AttentionWindows] = field(default=None, metadata={"help": "attention windows (None: the model's)"})

    def __post_init__(self):
        check_sampling_args(self.steps, self.chunk, self.ar_step, self.context_noise, self.eta, self.schedule)
        _check_count("first_frame_steps", self.first_frame_steps, minimum=0)
        _check_count("first_chunk", self.first_chunk, minimum=0)
        check_guidance_args(self.history_guidance, self.guidance_mode, self.guidance_level, self.guidance_schedule)
        noise_levels(self.noise_schedule, 1, self.shift)  # checks the schedule's name and shift
        _check_count("seed", self.seed, minimum=0)
        if self.context_anchor not in CONTEXT_ANCHORS:
            raise ValueError(f"context_anchor must be one of {CONTEXT_ANCHORS}, got {self.context_anchor!r}.")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}.")

    def first_frame_alone(self, context_frames: int) -> bool:
        """Whether the first new frame is sampled alone, with ``first_frame_steps``: from nothing, unless 0."""
        return context_frames == 0 and self.first_frame_steps > 0

    @property
    def guided(self) -> bool:
        return float(self.history_guidance) != 1.0


def settings_fields():
    """The scalar fields of :class:`SamplerSettings` (name, type, default, help, choices, range), for CLIs and UIs."""
    return [f for f in fields(SamplerSettings) if f.name != "windows"]


def window_fields():
    """The fields of :class:`~msc.model.AttentionWindows` (help and app range in their metadata)."""
    return list(fields(AttentionWindows))


WINDOW_FLAGS = tuple(f.name for f in window_fields())

PRESETS = {
    "default": SamplerSettings(),
    # few steps in small chunks: a fast starting point (a model's own real-time preset, chosen by measuring its
    # frames/s and quality with bench/stream.py, is in its SAMPLER_FILE)
    "real-time": SamplerSettings(steps=2, chunk=2),
}
"""The library's named starting points for :class:`SamplerSettings` (``--preset`` on the CLIs, a control in the app),
used for weights without their own :data:`SAMPLER_FILE`."""
SAMPLER_FILE = "sampler.json"  # a model's own presets, beside its config.json (as diffusers ships a scheduler config)


def load_presets(folder: Optional[str]) -> Dict[str, SamplerSettings]:
    """The presets of the weights in ``folder``: its :data:`SAMPLER_FILE`, ``{"default": {field: value, ...},
    "real-time": {...}}`` (fields left out keep :class:`SamplerSettings`' own; every name of :data:`PRESETS` present),
    else :data:`PRESETS`. ``ValueError`` naming the file for an unknown preset, field or value."""
    path = os.path.join(folder, SAMPLER_FILE) if folder else None
    if path is None or not os.path.isfile(path):
        return dict(PRESETS)
    with open(path) as f:
        given = json.load(f)
    if not isinstance(given, dict) or set(given) != set(PRESETS):
        raise ValueError(f"{path} must hold the presets {sorted(PRESETS)}, got {sorted(given) if isinstance(given, dict) else given!r}.")
    fields = {f.name for f in settings_fields()}
    presets = {}
    for name, values in given.items():
        unknown = set(values) - fields
        if unknown:
            raise ValueError(f"{path}: preset {name!r} has unknown settings {sorted(unknown)}.")
        try:
            presets[name] = SamplerSettings(**values)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{path}: preset {name!r}: {err}") from None
    return presets


def write_presets(folder: str, presets: Dict[str, SamplerSettings]) -> str:
    """``presets`` as ``folder``'s :data:`SAMPLER_FILE`, every setting written out (the windows stay the model's), so the
    file says how these weights are sampled whatever the library's defaults become."""
    out = {name: {f.name: getattr(p, f.name) for f in settings_fields()} for name, p in presets.items()}
    path = os.path.join(folder, SAMPLER_FILE)
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    return path


def settings_table() -> str:
    """The table of sampling settings in docs/app.md, made from the fields (``python -m msc.generate --settings-table``)."""
    rows = ["| setting | flag | default | real-time | app offers | what it does |", "|---|---|---|---|---|---|"]

    def offers(meta):
        if "choices" in meta:
            return " / ".join(meta["choices"])
        lo, hi, _ = meta["range"]
        return f"{lo} … {'token grid' if hi is None else '2⁵³ − 1' if hi == 2**53 - 1 else hi}"

    fast = PRESETS["real-time"]
    for f in settings_fields():
        default, quick = getattr(SamplerSettings(), f.name), getattr(fast, f.name)
        rows.append(f"| `{f.name}` | `--{f.name.replace('_', '-')}` | {default} | {quick if quick != default else ''} | "
                    f"{offers(f.metadata)} | {f.metadata['help']} |")
    for f in window_fields():
        rows.append(f"| `{f.name}` | `--{f.name.replace('_', '-')}` | the model's | | {offers(f.metadata)} | {f.metadata['help']} |")
    return "\n".join(rows)


class SamplingRecorder:
    """Collects the events of :func:`sample_frames` into a :class:`SamplingResult`: the one
    bookkeeping of :func:`sample_video` and of the app's progress reports."""

    def __init__(self, context: torch.Tensor):  # [B, K, C, H, W], float, on the CPU
        self.context = context
        self.new_frames: List[torch.Tensor] = []  # [B, C, H, W] each
        self.step: Optional["StepEvent"] = None  # the latest model call
        self.result = SamplingResult(video=context)

    def add(self, event) -> bool:
        """Record ``event``; True when it completes a model call's report: a :class:`StepEvent` that
        finished no frame, or the last :class:`FrameEvent` of a call."""
        if isinstance(event, GatesEvent):
            self.result.gates.append({"call": event.call, "frames": event.frames, "t": event.t, "gates": event.gates})
            return False
        if isinstance(event, StepEvent):
            self.result.model_calls += event.forwards
            self.step = event
            return event.finished == len(self.new_frames)
        self.new_frames.append(event.frame)
        return event.finished == self.step.finished

    def video(self) -> torch.Tensor:
        """The context and every frame finished so far: ``[B, K + n, C, H, W]``."""
        if not self.new_frames:
            return self.context
        return torch.cat([self.context, torch.stack(self.new_frames, dim=1)], dim=1)

    def finish(self) -> SamplingResult:
        self.result.video = self.video()
        return self.result


@dataclass
class StepEvent:
    """A model call finished: ``frames`` (absolute indices) moved to levels ``t`` after ``steps`` (1-based)."""

    call: int
    calls: int
    frames: List[int]
    steps: List[int]
    t: List[float]
    finished: int  # new frames finished so far
    total: int
    forwards: int = 1  # forward passes of the model this call took (2 with history guidance)


@dataclass
class GatesEvent:
    """The branch weights of a model call: ``gates`` ``[n, depth, 2]`` for ``frames`` at levels ``t``."""

    call: int
    frames: List[int]
    t: List[float]
    gates: torch.Tensor


@dataclass
class FrameEvent:
    """A frame is finished: ``frame`` ``[B, C, H, W]`` in [-1, 1] is frame ``index`` of the video
    (context frames counted), the ``finished``-th of ``total`` new frames."""

    index: int
    frame: torch.Tensor
    finished: int
    total: int


def _histories(model, windows, s: "SamplerSettings", use_cache: bool, frame_offset: int, noise_shape, device,
               actions: Optional[torch.Tensor] = None):
    """``(history, free_history)``: the finished frames as the model sees them at ``context_noise``, and with history
    guidance the same frames hidden under noise (``None`` without guidance)."""
    if s.context_anchor != "prior" and model.config.prior not in FLOW_PRIORS:
        raise ValueError(f"context_anchor {s.context_anchor!r} takes the place of a flow prior's anchor; this model's prior "
                         f"is {model.config.prior!r}: use 'prior'.")
    history = _History(model, windows, s.context_noise, CONTEXT_NOISE, use_cache, s.seed, frame_offset, noise_shape, device,
                       actions=actions, precision=s.precision, context_anchor=s.context_anchor)
    if not s.guided:
        return history, None
    free_level = 1.0 if s.guidance_mode == "vanilla" else s.guidance_level
    return history, _History(model, windows, free_level, HIDING_NOISE, use_cache, s.seed, frame_offset, noise_shape, device,
                             hide=True, actions=actions, precision=s.precision, context_anchor=s.context_anchor)


def _start_frame(history: "_History", frame: int, seed: int, frame_offset: int, noise_shape, device):
    """A new frame at level 1: ``(x [B, C, H, W], anchor [B, C, H, W] or None)`` — its own initial noise, centred on
    its anchor from the finished frames when the prior has one."""
    x = _frame_noise(seed, frame_offset + frame, INITIAL_NOISE, 0, noise_shape, device)
    anchor = history.anchor(frame) if history.prior != "none" else None
    if anchor is None:
        return x, None
    has_one = torch.ones(x.shape[0], 1, dtype=torch.bool, device=device)
    return history.denoiser.start(x[:, None], anchor[:, None], has_one)[:, 0], anchor


def _denoising_step(history: "_History", free_history: Optional["_History"], x: torch.Tensor, anchors: list,
                    frame_ids: List[int], steps: List[int], t_now: torch.Tensor, t_next: torch.Tensor, s: "SamplerSettings",
                    frame_offset: int):
    """One model call: frames ``x`` ``[B, n, C, H, W]`` (video indices ``frame_ids``, at step ``steps`` of their
    schedules, anchors ``anchors`` — ``None`` for a frame without one) from levels ``t_now`` to ``t_next``, with history
    guidance when ``free_history`` is given: ``(x', forward passes)``."""
    b, device = x.shape[0], x.device
    anchor = anchored = None
    if history.prior != "none":
        anchor = torch.stack([torch.zeros_like(x[:, 0]) if a is None else a for a in anchors], dim=1)  # [B, n, C, H, W]
        anchored = torch.tensor([a is not None for a in anchors], device=device)[None].expand(b, -1)
    t = t_now[None].expand(b, -1)
    v = history.predict(x, t, anchor, anchored, frame_ids)
    forwards = 1
    if free_history is not None and len(free_history):  # with no history yet, both passes would agree
        v_free = free_history.predict(x, t, anchor, anchored, frame_ids)
        forwards = 2
        w = guidance_scale(s.history_guidance, s.guidance_schedule, t_now)[None, :, None, None, None]
        v = v_free + w * (v - v_free)
    fresh = None
    if s.eta > 0:  # the fresh noise of a stochastic update
        shape = (b, *x.shape[2:])
        fresh = torch.stack([_frame_noise(s.seed, frame_offset + f, UPDATE_NOISE, st, shape, device)
                             for f, st in zip(frame_ids, steps)], dim=1)
    return history.denoiser.step(x, v, t_now, t_next, anchor, anchored, s.eta, fresh), forwards


def _checked_inputs(model, context: Optional[torch.Tensor], frames: int, s: SamplerSettings, batch: int,
                    actions: Optional[torch.Tensor]):
    """``(context [B, K, C, H, W], actions [B, K + frames] or None, windows)`` checked against the model (``ValueError``
    before any work): ``None`` context is ``K = 0`` frames of ``batch`` videos."""
    check_frames(frames)
    cfg = model.config
    device = next(model.parameters()).device
    frame_shape = (cfg.channels, cfg.image_size, cfg.image_size)
    if context is None:
        context = torch.zeros(batch, 0, *frame_shape)
    if context.dim() != 5 or tuple(context.shape[2:]) != frame_shape:
        raise ValueError(f"context must be [B, K, {', '.join(map(str, frame_shape))}], got {tuple(context.shape)}.")
    windows = s.windows or cfg.windows
    windows.check_fits(cfg.grid)  # the one check of the windows against this model
    b, k0 = context.shape[:2]
    if actions is not None:
        actions = torch.as_tensor(actions)
        if actions.dim() != 2 or actions.shape[1] != k0 + frames:
            raise ValueError(f"actions must be [B, K + frames] = [{b}, {k0 + frames}] (the action that led to every frame, "
                             f"context frames included), got {tuple(actions.shape)}.")
        actions = actions.to(device=device, dtype=torch.long).expand(b, -1)
        model.check_actions(actions, actions.shape)
    elif cfg.actions:
        raise ValueError(f"this model is conditioned on actions: pass actions [B, K + frames] of {cfg.actions} choices.")
    return context, actions, windows


def _plan(s: SamplerSettings, context: int, frames: int):
    """``(plan, levels_of)``: the model calls, each a list of ``(new frame j, step)``, and the noise levels new frame
    ``j`` steps through. From nothing (:meth:`SamplerSettings.first_frame_alone`) the first frame is denoised alone
    with its own steps, then the schedule runs over the rest."""
    levels = noise_levels(s.noise_schedule, s.steps, s.shift).tolist()
    if not s.first_frame_alone(context):
        return frame_schedule_plan(s.schedule, frames, s.steps, s.chunk, s.ar_step, s.first_chunk), lambda j: levels
    first_levels = noise_levels(s.noise_schedule, s.first_frame_steps, s.shift).tolist()
    rest = frame_schedule_plan(s.schedule, frames - 1, s.steps, s.chunk, s.ar_step, s.first_chunk) if frames > 1 else []
    plan = [[(0, st)] for st in range(s.first_frame_steps)] + [[(j + 1, st) for j, st in call] for call in rest]
    return plan, lambda j: first_levels if j == 0 else levels


@dataclass(frozen=True)
class SamplingWork:
    """What a generation costs the network (:func:`sampling_work`): ``calls`` forward calls, and ``frame_passes``
    frames run through it over those calls (a frame pass is ``grid²`` tokens). With the windows bounded neither
    depends on how long the video already is, so a request's time is close to ``a·calls + b·frame_passes``."""

    calls: int
    frame_passes: int


def sampling_work(s: SamplerSettings, context: int, frames: int) -> SamplingWork:
    """The :class:`SamplingWork` of generating ``frames`` after ``context`` frames: every model call of the plan with
    its frames, the commit of the context and of the frames each call finishes to the KV cache, times the passes (two
    with history guidance), counted without running anything."""
    plan, levels_of = _plan(s, context, frames)
    finishing = sum(any(st == len(levels_of(j)) - 2 for j, st in call) for call in plan)  # calls followed by a commit
    passes = 2 if s.guided else 1
    calls = len(plan) + finishing + (1 if context else 0)
    return SamplingWork(passes * calls, passes * (sum(len(call) for call in plan) + context + frames))


@torch.no_grad()
def sample_frames(model, context: Optional[torch.Tensor], frames: int, settings: SamplerSettings = SamplerSettings(),
                  batch: int = 1, frame_offset: int = 0, use_cache: bool = True,
                  actions: Optional[torch.Tensor] = None) -> Iterator[Union[GatesEvent, StepEvent, FrameEvent]]:
    """Generate ``frames`` frames after ``context`` ``[B, K, C, H, W]`` (``None`` or ``K = 0``: from
    nothing), yielding events as they happen: for every model call a :class:`GatesEvent` and a
    :class:`StepEvent`, then a :class:`FrameEvent` for every frame it finished, in frame order.
    Cancelling is stopping the iteration (``close()`` or simply not asking for more): no model call
    runs between two events.

    ``actions`` ``[B, K + frames]`` long (a model conditioned on actions, ``config.actions > 0``; required there): the
    action that led to each frame, context frames included (the first frame's is the no-op). A frame is generated
    knowing the actions up to its own only (frame-causal attention).

    ``frame_offset``: the index of the first context frame in a longer video. Noise is drawn per
    absolute frame index, so continuing a video from its last frames draws the same noise as
    generating it in one run.

    **History guidance** (Diffusion Forcing Transformer's observation: a model trained with per-frame
    noise levels already predicts without history when the history is at full noise):
    ``v = v_free + w·(v_history − v_free)``, where ``v_free`` sees every finished frame at noise
    level 1 (``guidance_mode="vanilla"``) or at ``guidance_level`` (``"fractional"``: only the fine
    detail of the history is withheld), its noise centred on 0 even with the previous-frame prior (centred
    on the frame before, a history at level 1 would still show). ``w = history_guidance``, constant or fading with the noise
    level (``guidance_schedule``, see :func:`guidance_scale`). ``w = 1`` runs exactly the unguided
    sampler; otherwise each model call costs two forwards, each pass with its own KV cache.

    See the module docstring for the schedules, the update rule and the cache.
    """
    s = settings  # checked when it was made
    context, actions, windows = _checked_inputs(model, context, frames, s, batch, actions)
    device = next(model.parameters()).device
    b, k0, frame_shape = context.shape[0], context.shape[1], tuple(context.shape[2:])
    plan, levels_of = _plan(s, k0, frames)
    noise_shape = (b, *frame_shape)

    history, free_history = _histories(model, windows, s, use_cache, frame_offset, noise_shape, device, actions)
    passes = [p for p in (history, free_history) if p is not None]

    def commit(new_frames: torch.Tensor, is_context: bool = False) -> None:
        for each in passes:
            each.commit(new_frames, is_context)

    if k0:
        commit(context.to(device).float(), is_context=True)

    # the frames being denoised: absolute index -> current sample, and -> the anchor its noise is centred on
    active, anchors = {}, {}
    finished_new = 0
    for call_index, call in enumerate(plan):
        for j, step in call:
            if step == 0 and (k0 + j) not in active:
                active[k0 + j], anchors[k0 + j] = _start_frame(history, k0 + j, s.seed, frame_offset, noise_shape, device)
        frame_ids = [k0 + j for j, _ in call]
        t_now = torch.tensor([levels_of(j)[st] for j, st in call], device=device)
        t_next = torch.tensor([levels_of(j)[st + 1] for j, st in call], device=device)
        x = torch.stack([active[f] for f in frame_ids], dim=1)  # [B, n, C, H, W]
        x, forwards = _denoising_step(history, free_history, x, [anchors.get(f) for f in frame_ids], frame_ids,
                                      [st for _, st in call], t_now, t_next, s, frame_offset)
        for i, f in enumerate(frame_ids):
            active[f] = x[:, i]
        yield GatesEvent(call_index, frame_ids, t_now.tolist(), model.gates(t_now).cpu())
        # frames that reached level 0 are finished, in order
        reached_zero = {k0 + j for j, st in call if st == len(levels_of(j)) - 2}
        done = []
        while k0 + finished_new in reached_zero:
            anchors.pop(k0 + finished_new, None)
            done.append(active.pop(k0 + finished_new).clamp(-1, 1))
            finished_new += 1
        yield StepEvent(call_index + 1, len(plan), frame_ids, [st + 1 for _, st in call], t_next.tolist(), finished_new, frames,
                        forwards)
        if done:
            new = torch.stack(done, dim=1)  # [B, n, C, H, W]
            commit(new)
            first_index = k0 + finished_new - len(done)
            for i, frame in enumerate(done):
                yield FrameEvent(first_index + i, frame.cpu(), finished_new - len(done) + i + 1, frames)


def sample_video(
    model,
    context: Optional[torch.Tensor],
    frames: int,
    settings: Optional[SamplerSettings] = None,
    use_cache: bool = True,
    batch: int = 1,
    callback: Optional[Callable[[dict], None]] = None,
    frame_offset: int = 0,
    actions: Optional[torch.Tensor] = None,
    **setting_values,
) -> SamplingResult:
    """Generate ``frames`` frames after ``context`` and collect them: a thin wrapper of
    :func:`sample_frames`. The settings come as a :class:`SamplerSettings` or as its fields by
    keyword (``steps=8, chunk=4, ...``). ``callback(info)`` is called after every model call (see the
    module docstring). ``actions``: see :func:`sample_frames`. To stop part-way, iterate :func:`sample_frames`
    instead and stop iterating: no model call runs after the last event taken."""
    settings = replace(settings, **setting_values) if settings is not None else SamplerSettings(**setting_values)
    cfg = model.config
    known = torch.zeros(batch, 0, cfg.channels, cfg.image_size, cfg.image_size) if context is None else context.float().cpu()
    recorder = SamplingRecorder(known)

    with closing(sample_frames(model, context, frames, settings, batch, frame_offset, use_cache, actions)) as events:
        for event in events:
            if recorder.add(event) and callback is not None:
                step = recorder.step
                callback({"call": step.call, "calls": step.calls, "frames": step.frames, "steps": step.steps, "t": step.t,
                          "finished": step.finished, "total": step.total,
                          "video": recorder.video() if isinstance(event, FrameEvent) else None})
    return recorder.finish()


# --------------------------------------------------------------------------------------------------
# Command-line flags from the settings' fields
# --------------------------------------------------------------------------------------------------

def add_settings_arguments(parser) -> None:
    """Add ``--preset`` and one flag per :class:`SamplerSettings` field (``--noise-schedule`` for
    ``noise_schedule``) and per attention window (``--k-s``); unset flags keep the preset's value
    (the windows: the model's)."""
    group = parser.add_argument_group("sampler settings (python -m msc.generate --settings-table lists them)")
    group.add_argument("--preset", choices=list(PRESETS), default="default",
                       help="starting point for the settings below: the weights' own (their sampler.json), else the "
                            "library's " + ", ".join(f"{name} ({p.steps} steps, chunk {p.chunk})" for name, p in PRESETS.items()))
    for f in settings_fields():
        kwargs = {"default": None, "help": f"{f.metadata['help']} (default: {getattr(SamplerSettings(), f.name)})"}
        if "choices" in f.metadata:
            kwargs["choices"] = list(f.metadata["choices"])
        else:
            kwargs["type"] = type(getattr(SamplerSettings(), f.name))
        group.add_argument("--" + f.name.replace("_", "-"), **kwargs)
    for f in window_fields():
        group.add_argument("--" + f.name.replace("_", "-"), type=int, default=None, help=f"override the {f.metadata['help']}")


def settings_from_args(args, model_windows: AttentionWindows, presets: Optional[Dict[str, SamplerSettings]] = None
                       ) -> SamplerSettings:
    """The :class:`SamplerSettings` of parsed flags (see :func:`add_settings_arguments`), starting from ``presets``
    (the weights' own, :func:`load_presets`; default the library's)."""
    windows = replace(model_windows, **{n: getattr(args, n) for n in WINDOW_FLAGS if getattr(args, n) is not None})
    given = {f.name: getattr(args, f.name) for f in settings_fields() if getattr(args, f.name) is not None}
    return replace((presets or PRESETS)[args.preset], windows=windows, **given)
