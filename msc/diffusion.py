"""Per-frame rectified-flow diffusion (docs/design.md §4; paper Sec. 3.3).

Parameterisation — **rectified flow** (Liu et al. 2022; Esser et al. 2024, "SD3"): a frame at noise
level ``t ∈ [0, 1]`` is the straight interpolation

    x_t = (1 - t) · x_0 + t · (a + s·ε),       ε ~ N(0, I),   t = 0 clean, t = 1 pure noise,

and the model predicts the velocity ``v = (a + s·ε) - x_0``, so that ``x_0 = x_t - t · v`` and
``a + s·ε = x_t + (1 - t) · v``. ``a`` is the frame's **anchor**, a cheap prediction of it, and ``s``
the standard deviation of the noise (1 for frames without an anchor):

* ``prior="none"``: ``a = 0``, plain rectified flow;
* ``prior="previous_frame"`` (residual video diffusion, Yang, Srivastava & Mandt 2022): ``a`` is
  the last finished frame before the frame's chunk, so the noise is centred on it and the model
  learns the *change* ``y = x_0 - a``;
* ``prior="flow"``: ``a`` is the classical prediction of the frame, the last finished frame carried
  along the optical flow of the last two finished frames at constant velocity (:mod:`msc.flow`; the
  last frame itself where only one is finished), so the model learns what constant motion does not
  predict; ``prior="flow_splat"``: the same with the stronger extrapolator that pushes each pixel forward along its
  own velocity (:data:`msc.flow.METHODS` ``"splat"``: moving objects arrive where they go instead of smearing);
  ``prior="flow_splat_whole"``: that extrapolation by whole pixels (``"splat_whole"``: no blend of neighbours, whose
  blur a rollout anchored on its own frames would compound); ``prior="flow_splat_layered"``: the sub-pixel
  extrapolation with what moves unlike the camera drawn over what it lands on (``"splat_layered"``, softmax splatting);
* ``prior="action_kernel"`` (a world model; Finn, Goodfellow & Levine 2016, CDNA): ``a`` is the last finished frame
  convolved with a learned ``k × k`` kernel per action (:class:`ActionKernels`, a softmax over the window: each pixel a
  convex combination of its neighbours), once per action since that frame. The kernels start as the identity and
  learn from data what an action does to the picture (a camera step is a shifted delta); they are trained by their
  own regression loss beside the diffusion loss (:func:`diffusion_loss`), the way residual video diffusion trains
  its deterministic predictor, and the network learns the residual around them.

  Everything below holds for every anchor (:func:`anchor_frames` is the one place they differ). The network's output ``F`` is preconditioned as in EDM
  (Karras et al. 2022) for the residual: ``ŷ = c_skip(t)·y_t + c_out(t)·F`` with
  ``c_skip = (1-t)σ² / ((1-t)²σ² + t²s²)``, ``c_out = tσs / √((1-t)²σ² + t²s²)`` and ``σ`` the standard
  deviation of the change between frames, so that an untrained network (``F = 0``) predicts the
  anchor — copy-last — and training learns the correction. Frames with no finished frame before
  them (a video from nothing) have ``a = 0``, ``σ`` = the standard deviation of frames and ``s = 1``.
  ``s = config.noise_scale`` for anchored frames: below 1, the noisy input keeps the anchor visible
  at every level and the sampler has less noise to remove than the change is small (the bundled
  model's choice is measured in its card).

Every frame has its own ``t`` (Diffusion Forcing, Chen et al. 2024): in training the levels are drawn
independently per frame; in sampling the frame schedule arranges them. The sampler's update works
unchanged in either parameterisation, because ``x_0`` and ``a + ε`` follow from ``x_t`` and ``v``
by the same formulas.

Noise schedules map a step index to a noise level; the sampler walks them from 1 down to 0:

* ``linear``: ``t_i = 1 - i / N``;
* ``cosine``: ``t_i = (1 + cos(π i / N)) / 2``, small steps at both ends;
* ``shifted``: the linear schedule warped by ``t' = s t / (1 + (s - 1) t)`` (SD3's time shift), which
  spends more steps at high noise for ``s > 1``.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.nn as nn

from msc.flow import extrapolate as flow_extrapolate

SCHEDULES = ("cosine", "linear", "shifted")
PRIORS = ("none", "previous_frame", "flow", "flow_splat", "flow_splat_whole", "flow_splat_layered", "action_kernel")
# prior -> its extrapolation method in msc.flow.METHODS
FLOW_PRIORS = {"flow": "warp", "flow_splat": "splat", "flow_splat_whole": "splat_whole", "flow_splat_layered": "splat_layered"}
KERNEL_PRIORS = ("action_kernel",)  # anchors made by the network's learned kernels, from the frames' actions
LEVEL_DISTRIBUTIONS = ("uniform", "logit-normal")
MIN_TRAINING_LEVEL = 1e-3  # the preconditioned velocity divides by t
# how each frame's error enters the training loss: its (weighted) mean squared error, or the logarithm of it, which
# counts every frame's relative error alike, as a mean of per-frame PSNRs does (still frames weigh as much as moving ones)
FRAME_LOSSES = ("mse", "log")
LOG_FRAME_LOSS_FLOOR = 1e-3  # added before the logarithm: a frame predicted almost exactly does not dominate the gradient
ANCHOR_ERROR_FLOOR = 1e-3  # added to a frame's mean anchor error before dividing by it (a frame its anchor predicts exactly)


def _per_frame(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return t[:, :, None, None, None].to(like.dtype)


def noise_centre(noise: torch.Tensor, anchor: Optional[torch.Tensor] = None,
                 noise_std: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``a + s·ε``: what a frame is at level 1. ``noise``, ``anchor`` ``[B, T, C, H, W]``, ``noise_std``
    ``[B, T]`` (``None``: 1)."""
    scaled = noise if noise_std is None else noise * _per_frame(noise_std, noise)
    return scaled if anchor is None else anchor + scaled


def add_noise(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, anchor: Optional[torch.Tensor] = None,
              noise_std: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``x0``, ``noise``, ``anchor`` ``[B, T, C, H, W]``, ``t``, ``noise_std`` ``[B, T]`` -> ``x_t``
    (noise of standard deviation ``noise_std`` centred on ``anchor``)."""
    t = _per_frame(t, x0)
    return (1 - t) * x0 + t * noise_centre(noise, anchor, noise_std)


def velocity_target(x0: torch.Tensor, noise: torch.Tensor, anchor: Optional[torch.Tensor] = None,
                    noise_std: Optional[torch.Tensor] = None) -> torch.Tensor:
    """What the model learns to predict: ``a + s·ε - x_0``."""
    return noise_centre(noise, anchor, noise_std) - x0


def residual_scales(t: torch.Tensor, sigma: torch.Tensor, noise_std=1.0) -> Tuple[torch.Tensor, torch.Tensor]:
    """EDM's ``(c_skip, c_out)`` for rectified flow on data of standard deviation ``sigma`` and noise of
    standard deviation ``noise_std`` (tensors of the shape of ``t``, or numbers)."""
    norm2 = (1 - t) ** 2 * sigma**2 + t**2 * noise_std**2
    return (1 - t) * sigma**2 / norm2, t * sigma * noise_std / norm2.sqrt()


def _by_anchor(anchored: torch.Tensor, with_anchor: float, without: float) -> torch.Tensor:
    """``[B, T]`` float32: ``with_anchor`` where a frame has an anchor, ``without`` where it has none."""
    return torch.where(anchored, torch.full_like(anchored, with_anchor, dtype=torch.float32),
                       torch.full_like(anchored, without, dtype=torch.float32))


def frame_sigma(anchored: torch.Tensor, residual_std: float, frame_std: float) -> torch.Tensor:
    """``[B, T]`` standard deviation of what each frame's model predicts: the change from its anchor,
    or the frame itself where it has none."""
    return _by_anchor(anchored, residual_std, frame_std)


def frame_noise_std(anchored: torch.Tensor, noise_scale: float) -> torch.Tensor:
    """``[B, T]`` standard deviation of each frame's noise: ``noise_scale`` around an anchor, else 1."""
    return _by_anchor(anchored, noise_scale, 1.0)


def preconditioned_velocity(raw: torch.Tensor, xt: torch.Tensor, t: torch.Tensor, anchor: torch.Tensor,
                            sigma: torch.Tensor, noise_std: torch.Tensor) -> torch.Tensor:
    """The velocity of the ``previous_frame`` prior from the network's output ``raw``.
    ``raw``, ``xt``, ``anchor`` ``[B, T, C, H, W]``; ``t``, ``sigma``, ``noise_std`` ``[B, T]``."""
    c_skip, c_out = residual_scales(t.float(), sigma, noise_std)
    yt = xt - anchor  # the noisy change
    y0 = _per_frame(c_skip, xt) * yt + _per_frame(c_out, xt) * raw
    return (yt - y0) / _per_frame(t.clamp(min=MIN_TRAINING_LEVEL), xt)


def network_anchor(anchor: torch.Tensor, anchored: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """What a network with ``config.anchor_input`` reads of each frame's anchor: ``anchor`` ``[B, T, C, H, W]`` where the
    frame has one (``anchored`` ``[B, T]``) and is being denoised (``t`` ``[B, T]`` above :data:`MIN_TRAINING_LEVEL`),
    zeros elsewhere. A finished frame reads none: a clean context frame in training (its level is that floor) and a
    frame committed to the KV cache in sampling (the commit runs the network without anchors), so the cache equals a
    full forward and training sees the context as sampling does."""
    reads = anchored & (t > MIN_TRAINING_LEVEL)  # [B, T]
    return anchor * _per_frame(reads, anchor)


def velocity_loss_weight(t: torch.Tensor, sigma: torch.Tensor, noise_std=1.0) -> torch.Tensor:
    """``[B, T]`` weights that turn the velocity error into EDM's unit-variance error of the network
    output: ``t² / c_out² = ((1 - t)² σ² + t² s²) / (σ² s²)``."""
    return ((1 - t) ** 2 * sigma**2 + t**2 * noise_std**2) / (sigma**2 * noise_std**2)


class ActionKernels(nn.Module):
    """A learned ``size × size`` kernel per action, each a softmax over its window (a convex combination of a pixel's
    neighbours), applied per channel to a frame; initialised close to the identity (the centre's logit
    :data:`IDENTITY_LOGIT`). The logits are ``scale ×`` the parameters so that Adam, whose steps are about the learning
    rate, moves a kernel's mass across the window in hundreds of steps rather than thousands.

    ``frame_size`` (``MSCConfig.action_keep_mask``): also a learned keep mask per action and pixel position, the share
    of the pixel kept as it was, the rest taken from the kernel (CDNA's compositing masks, Finn et al. 2016, here fixed
    in position): one kernel cannot both shift the picture and hold the marker in the middle of the view, which a move
    does not move, so alone it settles on a blur of the two. The masks start at :data:`KEEP_START_LOGIT` (almost all
    kernel).

    ``hard`` (``MSCConfig.action_kernel_hard``): the anchors move each pixel by the kernel's largest tap alone (a
    whole-pixel displacement): a soft kernel blurs every anchor a little, and a rollout of hundreds of frames compounds
    that into a picture that washes out. The kernels' own regression still fits the softmax (``soft=True``), whose
    largest tap is the displacement (a straight-through gradient instead spread the softmax and moved its largest tap
    to wrong places within 200 steps).

    ``padding`` (``MSCConfig.action_kernel_padding``): what a kernel reads beyond the frame's edge, where the view moved
    in from: ``"replicate"`` (the edge pixels repeated) or ``"circular"`` (the view wrapped around)."""

    IDENTITY_LOGIT = 6.0
    PADDINGS = ("replicate", "circular")
    KEEP_START_LOGIT = -6.0
    SCALE = 20.0

    def __init__(self, actions: int, size: int, frame_size: Optional[int] = None, hard: bool = False,
                 padding: str = "replicate"):
        super().__init__()
        if size < 1 or size % 2 == 0:
            raise ValueError(f"the action kernel size must be odd and positive, got {size}.")
        if padding not in self.PADDINGS:
            raise ValueError(f"the action kernels' padding must be one of {self.PADDINGS}, got {padding!r}.")
        self.size, self.hard, self.padding = size, hard, padding
        weight = torch.zeros(actions, size * size)
        weight[:, size * size // 2] = self.IDENTITY_LOGIT / self.SCALE
        self.weight = nn.Parameter(weight)
        self.keep = (None if frame_size is None else
                     nn.Parameter(torch.full((actions, frame_size, frame_size), self.KEEP_START_LOGIT / self.SCALE)))

    def keep_masks(self, actions: torch.Tensor) -> torch.Tensor:
        """``[N]`` long -> ``[N, 1, H, W]``: the share of each pixel kept as it was (built with a ``frame_size`` only)."""
        return torch.sigmoid(self.SCALE * self.keep[actions])[:, None]

    def kernels(self, actions: torch.Tensor, soft: bool = False) -> torch.Tensor:
        """``[N]`` long -> ``[N, size, size]`` kernels summing to 1 (``hard`` and not ``soft``: the largest tap alone, 1)."""
        kernel = torch.softmax(self.SCALE * self.weight[actions], dim=-1)  # [N, size²]
        if self.hard and not soft:
            kernel = nn.functional.one_hot(kernel.argmax(dim=-1), kernel.shape[-1]).to(kernel.dtype)
        return kernel.view(-1, self.size, self.size)

    def forward(self, frames: torch.Tensor, actions: torch.Tensor, soft: bool = False) -> torch.Tensor:
        """``frames`` ``[N, C, H, W]``, ``actions`` ``[N]`` -> each frame convolved with its action's kernel (beyond the
        edges: ``padding``), ``[N, C, H, W]``; ``soft``: the softmax kernels even where the anchors are ``hard``."""
        if frames.device.type == "cpu" and torch.is_autocast_enabled("cpu"):  # the CPU's bf16 grouped convolution
            with torch.autocast("cpu", enabled=False):  # trains 1.9× slower than float32's (bench.speed's profile)
                return self(frames.float(), actions, soft)
        n, c, h, w = frames.shape
        k = self.kernels(actions, soft).to(frames.dtype)  # [N, k, k]
        pad = self.size // 2
        padded = nn.functional.pad(frames.reshape(1, n * c, h, w), (pad, pad, pad, pad), mode=self.padding)
        weight = k[:, None].expand(n, c, self.size, self.size).reshape(n * c, 1, self.size, self.size)
        moved = nn.functional.conv2d(padded, weight, groups=n * c).view(n, c, h, w)
        if self.keep is None:
            return moved
        kept = self.keep_masks(actions).to(frames.dtype)  # [N, 1, H, W]
        return kept * frames + (1 - kept) * moved

    def rollout(self, last: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """``last`` ``[B, C, H, W]`` and the actions of the frames after it ``[B, n]`` -> ``[B, n, C, H, W]``: frame
        ``h`` is ``last`` convolved with the kernels of actions 1 .. h in turn."""
        out, frame = [], last
        for i in range(actions.shape[1]):
            frame = self(frame, actions[:, i])
            out.append(frame)
        return torch.stack(out, dim=1)


def anchor_frames(prior: str, previous: Optional[torch.Tensor], last: torch.Tensor, horizons,
                  actions: Optional[torch.Tensor] = None, kernels: Optional[ActionKernels] = None) -> torch.Tensor:
    """The anchors of the frames ``h`` after the last finished frame, for ``h`` in ``horizons``: ``last``
    ``[B, C, H, W]``, ``previous`` the finished frame before it (``None``: there is none) -> ``[B, n, C, H, W]``.
    The ``action_kernel`` prior needs the network's ``kernels`` and ``actions`` ``[B, max(horizons)]``, the actions of
    the frames after ``last``. The one definition of an anchor, for training (:func:`chunk_anchors`) and sampling
    alike."""
    horizons = list(horizons)
    if prior in FLOW_PRIORS:
        return flow_extrapolate(previous, last, horizons, method=FLOW_PRIORS[prior])
    if prior in KERNEL_PRIORS:
        if kernels is None or actions is None or actions.shape[1] < max(horizons):
            raise ValueError("the action_kernel prior needs the network's kernels and the actions of the frames after "
                             "the last finished one.")
        return kernels.rollout(last, actions[:, : max(horizons)])[:, [h - 1 for h in horizons]]
    return last[:, None].expand(-1, len(horizons), -1, -1, -1)


def chunk_anchors(x0: torch.Tensor, generator: torch.Generator, max_chunk: int,
                  prior: str = "previous_frame", actions: Optional[torch.Tensor] = None,
                  kernels: Optional[ActionKernels] = None, soft_kernels: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
    """Training anchors as the chunk-by-chunk sampler makes them: each clip is cut into chunks of a
    random size ``1..max_chunk`` at a random offset, and every frame of a chunk is anchored on the
    frames finished before the chunk (:func:`anchor_frames`; frames before the first cut have none).
    ``x0`` ``[B, T, C, H, W]`` -> ``(anchor [B, T, C, H, W], anchored [B, T] bool)``; unanchored frames get
    a zero anchor. ``actions`` ``[B, T]`` and ``kernels``: the ``action_kernel`` prior's (its anchors keep their
    gradient, for the kernels' own loss; ``soft_kernels``: that loss's, the softmax kernels even where anchors are
    hard)."""
    b, frames = x0.shape[:2]
    chunk = torch.randint(1, max_chunk + 1, (b, 1), generator=generator)
    offset = (torch.rand(b, 1, generator=generator) * chunk).long()  # first cut in 0 .. chunk-1
    i = torch.arange(frames)[None]
    start = i - torch.remainder(i - offset, chunk)  # [B, T] first frame of each frame's chunk
    anchored = start >= 1
    if prior in ("previous_frame", *KERNEL_PRIORS):  # the last frame before the chunk, gathered at once
        source = (start - 1).clamp(min=0).to(x0.device)
        anchor = torch.gather(x0, 1, source[:, :, None, None, None].expand_as(x0))
        if prior in KERNEL_PRIORS:  # then the kernels of the actions since, one horizon at a time
            anchor = _kernel_anchors(anchor, (i - start + 1).clamp(min=1), source, actions, kernels, soft_kernels)
    else:
        anchor = torch.zeros_like(x0)
        for clip in range(b):
            for s in sorted({v for v in start[clip].tolist() if v >= 1}):  # chunks with a frame before them
                members = (start[clip] == s).nonzero().flatten()  # frames s, s+1, ... of the chunk
                previous = x0[clip : clip + 1, s - 2] if s >= 2 else None
                anchor[clip, members] = anchor_frames(prior, previous, x0[clip : clip + 1, s - 1], (members - s + 1).tolist())[0]
    return anchor * anchored.to(x0.device)[:, :, None, None, None].to(x0.dtype), anchored.to(x0.device)


def _kernel_anchors(last: torch.Tensor, horizon: torch.Tensor, source: torch.Tensor, actions: torch.Tensor,
                    kernels: ActionKernels, soft: bool = False) -> torch.Tensor:
    """Every frame's ``last`` finished frame ``[B, T, C, H, W]`` convolved with the kernels of the ``horizon`` ``[B, T]``
    actions after it (``source`` ``[B, T]``: its index), as :meth:`ActionKernels.rollout` does per chunk."""
    if actions is None or kernels is None:
        raise ValueError("the action_kernel prior needs the actions of the frames and the network's kernels.")
    b, t = last.shape[:2]
    actions = actions.to(last.device)
    frame = last.flatten(0, 1)  # [B*T, C, H, W]
    for step in range(1, int(horizon.max()) + 1):
        moved = kernels(frame, torch.gather(actions, 1, (source + step).clamp(max=t - 1)).flatten(), soft)
        frame = torch.where((horizon.to(last.device) >= step).flatten()[:, None, None, None], moved, frame)
    return frame.view_as(last)


def shift_levels(t: torch.Tensor, shift: float) -> torch.Tensor:
    """SD3 time shift: ``s t / (1 + (s - 1) t)``; identity for ``s = 1``."""
    return shift * t / (1 + (shift - 1) * t)


def noise_levels(schedule: str, steps: int, shift: float = 3.0) -> torch.Tensor:
    """``[steps + 1]`` noise levels from 1 down to 0 (float64, exactly 1 and 0 at the ends)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"noise schedule must be one of {SCHEDULES}, got {schedule!r}.")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"the number of denoising steps must be a positive integer, got {steps!r}.")
    if not shift > 0:
        raise ValueError(f"the schedule shift must be positive, got {shift}.")
    u = torch.linspace(0, 1, steps + 1, dtype=torch.float64)  # step fraction
    if schedule == "linear":
        t = 1 - u
    elif schedule == "cosine":
        t = (1 + torch.cos(math.pi * u)) / 2
    else:
        t = shift_levels(1 - u, shift)
    t[0], t[-1] = 1.0, 0.0
    return t


def sampler_query_levels(schedule: str, steps: int, shift: float = 3.0) -> torch.Tensor:
    """``[steps]`` float32: the levels a sampler of ``steps`` steps on ``schedule`` runs the network at, from 1 down
    (:func:`noise_levels` without its final 0, where the frame is finished and no call is made)."""
    return noise_levels(schedule, steps, shift)[:-1].float()


def sample_training_levels(batch: int, frames: int, generator: torch.Generator, clean_prefix_prob: float = 0.25,
                           distribution: str = "uniform", return_prefix: bool = False,
                           no_prefix: Optional[torch.Tensor] = None, shared_level_prob: float = 0.0,
                           prefix_length: Optional[int] = None, sampler_levels: Optional[torch.Tensor] = None,
                           sampler_level_prob: float = 0.0):
    """``[B, T]`` independent per-frame noise levels for training.

    Independent levels per frame (Diffusion Forcing): ``uniform`` on [0, 1], or ``logit-normal``
    (``sigmoid(N(0, 1))``, SD3), which spends more training on the middle levels. With probability
    ``clean_prefix_prob`` a sample instead gets a random-length prefix at low noise (``t < 0.1``),
    the situation of autoregressive sampling (a nearly clean context, then noisy frames), which
    uniform draws almost never produce for long prefixes. ``return_prefix``: also return the
    ``[B, T]`` bool mask of those prefix frames. ``no_prefix`` ``[B]`` bool: samples that never get one.
    ``shared_level_prob``: the fraction of samples whose frames after the prefix all share one level (the last
    frame's draw), as the chunk-by-chunk sampler denoises a chunk after the context together (its random numbers are
    drawn after the others: at 0 the levels are the same as without it). ``prefix_length``: every sample gets a prefix
    of exactly that many frames (its random numbers are drawn as without it, then overridden).

    ``sampler_levels`` ``[L]`` with ``sampler_level_prob`` > 0: that fraction of the frames after the prefix instead
    take one of those levels, uniformly (the levels a sampler queries the network at, :func:`sampler_query_levels`).
    A few-step sampler asks the network at only a few levels (2 steps of the cosine schedule: 1 and 0.5), where a
    continuous draw almost never trains it; the rest of the frames keep the continuous draw, so every level stays
    learned (its random numbers are drawn after all the others: at 0 the levels are the same as without it).
    """
    if distribution not in LEVEL_DISTRIBUTIONS:
        raise ValueError(f"level distribution must be one of {LEVEL_DISTRIBUTIONS}, got {distribution!r}.")
    if distribution == "uniform":
        t = torch.rand(batch, frames, generator=generator)
    else:
        t = torch.sigmoid(torch.randn(batch, frames, generator=generator))
    prefix = torch.randint(1, max(frames, 2), (batch,), generator=generator)
    use_prefix = torch.rand(batch, generator=generator) < clean_prefix_prob
    if no_prefix is not None:
        use_prefix &= ~no_prefix
    if prefix_length is not None:
        if not 1 <= prefix_length < frames:
            raise ValueError(f"a forced prefix must leave a frame after it: 1 <= prefix_length < {frames}, got {prefix_length}.")
        prefix, use_prefix = torch.full_like(prefix, prefix_length), torch.ones_like(use_prefix)
    low = 0.1 * torch.rand(batch, frames, generator=generator)
    in_prefix = use_prefix[:, None] & (torch.arange(frames)[None] < prefix[:, None])
    shared = torch.rand(batch, generator=generator) < shared_level_prob if shared_level_prob > 0 else None  # [B]
    if sampler_level_prob > 0:
        if sampler_levels is None or len(sampler_levels) == 0:
            raise ValueError("sampler_level_prob > 0 needs the sampler's levels (sampler_levels).")
        queried = torch.rand(batch, frames, generator=generator) < sampler_level_prob  # [B, T]
        pick = torch.randint(len(sampler_levels), (batch, frames), generator=generator)
        t = torch.where(queried, torch.as_tensor(sampler_levels, dtype=t.dtype)[pick], t)
    levels = torch.where(in_prefix, low, t)
    if shared is not None:
        levels = torch.where(shared[:, None] & ~in_prefix, t[:, -1:], levels)  # the last frame is never in the prefix
    return (levels, in_prefix) if return_prefix else levels


def corrupt_context(x0: torch.Tensor, context: torch.Tensor, generator: torch.Generator, max_std: float,
                    max_blur: float = 0.0) -> torch.Tensor:
    """``x0`` ``[B, T, C, H, W]`` with Gaussian noise on the ``context`` ``[B, T]`` frames, its standard
    deviation drawn per clip uniformly in ``[0, max_std]``: a stand-in for the errors of generated frames,
    which become the context and the anchors of the next chunk in sampling (docs/design.md §4). ``max_blur`` > 0: the
    context frames are first blurred (:func:`blur_frames`, a Gaussian of standard deviation drawn per clip uniformly in
    ``[0, max_blur]`` pixels), the other error of generated frames: detail lost, which a long rollout compounds into a
    picture that washes out (its random numbers are drawn after the noise's: at 0 the noise is the same as without)."""
    b = x0.shape[0]
    std = max_std * torch.rand(b, generator=generator)  # [B]
    noise = torch.randn(x0.shape, generator=generator)
    if max_blur > 0:
        sigma = max_blur * torch.rand(b, generator=generator)  # [B] pixels
        x0 = torch.where(_per_frame(context.to(x0.device), x0).bool(), blur_frames(x0, sigma.to(x0.device)), x0)
    mask = context.float() * std[:, None]  # [B, T]
    return x0 + (_per_frame(mask, x0) * noise).to(x0.device, x0.dtype)


def blur_frames(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Every frame of clip ``b`` of ``x`` ``[B, T, C, H, W]`` blurred by a Gaussian of standard deviation ``sigma[b]``
    pixels (separable, edges reflected; ``sigma`` ``[B]``, 0 leaves a clip as it is)."""
    out = []
    for clip, s in zip(x, sigma.tolist()):  # [T, C, H, W]
        if s <= 0:
            out.append(clip)
            continue
        radius = max(1, math.ceil(3 * s))
        taps = torch.arange(-radius, radius + 1, dtype=torch.float32, device=x.device)
        kernel = torch.exp(-0.5 * (taps / s) ** 2)
        kernel = (kernel / kernel.sum()).to(x.dtype)
        t, c, h, w = clip.shape
        flat = clip.reshape(t * c, 1, h, w)
        flat = nn.functional.conv2d(nn.functional.pad(flat, (radius, radius, 0, 0), mode="reflect"), kernel.view(1, 1, 1, -1))
        flat = nn.functional.conv2d(nn.functional.pad(flat, (0, 0, radius, radius), mode="reflect"), kernel.view(1, 1, -1, 1))
        out.append(flat.view(t, c, h, w))
    return torch.stack(out)


def anchor_error_weight(x0: torch.Tensor, anchor: torch.Tensor, anchored: torch.Tensor, strength: float) -> torch.Tensor:
    """``[B, T, 1, H, W]`` per-pixel loss weights that put the training where the anchor is wrong:
    ``w = 1 + strength · r / mean(r)`` with ``r = Σ_c |x_0 − a|`` the anchor's error at a pixel and the mean over the
    frame's pixels, then scaled to a mean of 1 per frame (unanchored frames: 1 everywhere). The anchor is right on
    most pixels (a still background, a pan it continues); an unweighted loss spends most of its gradient there, where
    predicting the anchor is already the answer, and little on the few pixels it gets wrong (a sprite that bounces,
    what the motion uncovers), which are what the network is for."""
    r = (x0.float() - anchor.float()).abs().sum(2, keepdim=True)  # [B, T, 1, H, W]
    w = 1 + strength * r / (r.mean(dim=(3, 4), keepdim=True) + ANCHOR_ERROR_FLOOR)
    w = w / w.mean(dim=(3, 4), keepdim=True)
    return torch.where(anchored[:, :, None, None, None].to(w.device), w, torch.ones_like(w))


def velocity_loss(model, x0: torch.Tensor, levels: torch.Tensor, noise: torch.Tensor,
                  anchor: Optional[torch.Tensor] = None, anchored: Optional[torch.Tensor] = None,
                  scored: Optional[torch.Tensor] = None, frame_loss: str = "mse",
                  actions: Optional[torch.Tensor] = None, pixel_weight: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean squared error between the predicted and the true velocity at the given levels and noise;
    with anchors, weighted per frame by :func:`velocity_loss_weight`. ``model``: a :class:`Denoiser`, or a network
    (wrapped in one). ``scored`` ``[B, T]`` bool: the frames whose error counts (``None``: all). ``frame_loss``
    ``"log"``: the mean of the frames' log errors instead (:data:`FRAME_LOSSES`). ``pixel_weight`` ``[B, T, 1, H, W]``
    (a mean of 1 over each frame's pixels, :func:`anchor_error_weight`): a frame's error is its pixels' weighted
    mean."""
    if frame_loss not in FRAME_LOSSES:
        raise ValueError(f"frame loss must be one of {FRAME_LOSSES}, got {frame_loss!r}.")
    denoiser = Denoiser.around(model)
    conditions = {} if actions is None else {"actions": actions}  # a world model's
    pred = denoiser(denoiser.add_noise(x0, noise, levels, anchor, anchored), levels, anchor=anchor, anchored=anchored,
                    **conditions)
    err = (pred.float() - denoiser.target(x0, noise, anchor, anchored).float()).pow(2)  # [B, T, C, H, W]
    if pixel_weight is not None:
        err = err * pixel_weight.float()
    err = err.mean(dim=(2, 3, 4))  # [B, T]
    if anchor is not None:
        err = err * denoiser.loss_weight(levels.float(), anchored)
    if frame_loss == "log":
        err = torch.log(err + LOG_FRAME_LOSS_FLOOR)  # [B, T]
    if scored is None:
        return err.mean()
    scored = scored.to(err.device)
    return (err * scored).sum() / scored.sum().clamp(min=1)


def diffusion_loss(model, x0: torch.Tensor, generator: torch.Generator, clean_prefix_prob: float = 0.25,
                   level_distribution: str = "uniform", max_chunk: int = 4, context_corruption: float = 0.0,
                   from_nothing_prob: float = 0.0, frame_loss: str = "mse", shared_level_prob: float = 0.0,
                   actions: Optional[torch.Tensor] = None, anchor_error_strength: float = 0.0,
                   context_blur: float = 0.0, own_context: Optional[torch.Tensor] = None,
                   sampler_levels: Optional[torch.Tensor] = None, sampler_level_prob: float = 0.0) -> torch.Tensor:
    """The training loss: independent per-frame noise levels and fresh noise from ``generator``;
    with the ``previous_frame`` prior, chunk anchors (:func:`chunk_anchors`). ``x0`` ``[B, T, C, H, W]``.

    ``context_corruption`` > 0: the nearly clean prefix frames (the context, see
    :func:`sample_training_levels`) are corrupted by :func:`corrupt_context` and not scored, so the
    frames after them learn to continue, from a context and anchors that carry errors the way generated
    frames do, towards the clean truth (exposure to the model's own output in long rollouts). ``context_blur`` > 0:
    the same frames are also blurred first (up to that many pixels, :func:`corrupt_context`).

    ``from_nothing_prob`` > 0 (the ``previous_frame`` prior): that fraction of the clips are videos from
    nothing: no clean prefix and no anchors, so every frame draws a whole picture from its own noise
    level (Diffusion Forcing without the prior), where otherwise only the frames before the first
    chunk cut do; generating from nothing starts with such a frame.

    ``frame_loss``: how each frame's error counts (:func:`velocity_loss`). ``shared_level_prob``: the fraction of
    clips whose frames after the context share one noise level (:func:`sample_training_levels`). ``actions`` ``[B, T]``:
    the action that led to each frame (a world model). ``anchor_error_strength`` > 0: each pixel's error weighted by how
    wrong the anchor is there (:func:`anchor_error_weight`). ``sampler_levels``, ``sampler_level_prob``: that fraction
    of the frames trained at the levels the sampler queries (:func:`sample_training_levels`).

    ``own_context`` ``[B, P, C, H, W]`` (a prior with anchors): the clips' first ``P`` frames as the model itself
    continued them (:func:`msc.train.own_rollout`: the true first frames, then its own generated ones). They are the
    context of every clip (the nearly clean prefix, not scored, no clip from nothing), and the frames after them, anchored
    on them, learn to continue towards the truth ``x0`` from the errors the model really makes, which a long rollout
    otherwise compounds (the exposure bias of teacher forcing; scheduled sampling, Bengio et al. 2015; Self Forcing,
    Huang et al. 2025). The kernels' own regression still sees the true frames."""
    b, t = x0.shape[:2]
    denoiser = Denoiser.around(model)
    if own_context is not None and denoiser.config.prior == "none":
        raise ValueError("own_context continues from the model's own frames through their anchors: it needs a prior.")
    nothing = torch.rand(b, generator=generator) < from_nothing_prob if from_nothing_prob > 0 else None  # [B]
    if own_context is not None:
        nothing = None  # every clip continues the model's own frames
    levels, context = sample_training_levels(b, t, generator, clean_prefix_prob, level_distribution, return_prefix=True,
                                             no_prefix=nothing, shared_level_prob=shared_level_prob,
                                             prefix_length=None if own_context is None else own_context.shape[1],
                                             sampler_levels=sampler_levels, sampler_level_prob=sampler_level_prob)
    levels = levels.to(x0.device)
    noise = torch.randn(x0.shape, generator=generator).to(x0.device, x0.dtype)
    if denoiser.config.prior == "none":
        return velocity_loss(denoiser, x0, levels, noise, frame_loss=frame_loss, actions=actions)
    corrupted = context_corruption > 0 or context_blur > 0
    seen = x0 if own_context is None else torch.cat([own_context.to(x0.device, x0.dtype), x0[:, own_context.shape[1]:]], 1)
    seen = corrupt_context(seen, context, generator, context_corruption, context_blur) if corrupted else seen  # [B, T, C, H, W]
    cuts = generator.get_state()  # the chunk cuts, drawn again below for the kernels' clean anchors
    learned = denoiser.config.prior in KERNEL_PRIORS  # the kernels' anchors are no regression target: no graph for them
    with torch.set_grad_enabled(torch.is_grad_enabled() and not learned):
        anchor, anchored = chunk_anchors(seen, generator, max_chunk, denoiser.config.prior, actions, denoiser.kernels)
    if nothing is not None:
        anchored = anchored & ~nothing[:, None].to(anchored.device)
        anchor = anchor * anchored[:, :, None, None, None].to(anchor.dtype)
    kernel_loss = 0.0
    if learned:  # the kernels' own regression, from clean frames onto clean frames (on
        # the corrupted context the best kernel would blur, to denoise); the network learns the residual around their
        # detached prediction from the frames it sees
        same_cuts = torch.Generator().set_state(cuts)
        clean, _ = chunk_anchors(x0, same_cuts, max_chunk, denoiser.config.prior, actions, denoiser.kernels,
                                 soft_kernels=True)
        kernel_loss = (clean - x0).pow(2).mean(dim=(2, 3, 4))[anchored].mean() if anchored.any() else clean.sum() * 0
    weight = anchor_error_weight(x0, anchor, anchored, anchor_error_strength) if anchor_error_strength > 0 else None
    return kernel_loss + velocity_loss(denoiser, seen, levels.clamp(min=MIN_TRAINING_LEVEL), noise, anchor, anchored,
                                       scored=~context if corrupted or own_context is not None else None,
                                       frame_loss=frame_loss, actions=actions,
                                       pixel_weight=weight)


# --------------------------------------------------------------------------------------------------
# The denoiser: the one home of the maths above, around a raw network
# --------------------------------------------------------------------------------------------------


class Denoiser(nn.Module):
    """The diffusion maths around a raw network (as k-diffusion's ``VDenoiser`` wraps its model): what a frame is
    at level 1 (:meth:`start`), noising (:meth:`add_noise`), the preconditioned velocity of the network's output
    (:meth:`forward`), the training target and weight (:meth:`target`, :meth:`loss_weight`), the sampler's update
    (:meth:`step`) and the anchors (:meth:`anchors`). Everything that depends on the prior — what a frame's noise is
    centred on, how wide it is — is decided here, from the network's config (``prior``, ``residual_std``,
    ``frame_std``, ``noise_scale``); the network sees noisy frames and levels only.

    ``anchor`` ``[B, T, C, H, W]`` and ``anchored`` ``[B, T]`` bool (which frames have one) travel together;
    without a prior both are ``None``. ``network`` may be wrapped by DDP (its ``.module`` holds the config)."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network
        self.config = getattr(network, "module", network).config

    @staticmethod
    def around(model) -> "Denoiser":
        """``model`` itself when it is a :class:`Denoiser`, else a denoiser around it."""
        return model if isinstance(model, Denoiser) else Denoiser(model)

    @property
    def prior(self) -> str:
        return self.config.prior

    def noise_std(self, anchored: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        """``[B, T]`` standard deviation of each frame's noise (``None``: 1 everywhere, no prior)."""
        return None if anchored is None else frame_noise_std(anchored, self.config.noise_scale).to(anchored.device)

    @property
    def kernels(self) -> Optional["ActionKernels"]:
        """The network's learned action kernels (the ``action_kernel`` prior), else ``None``."""
        return getattr(getattr(self.network, "module", self.network), "action_kernels", None)

    def anchors(self, previous: Optional[torch.Tensor], last: torch.Tensor, horizons,
                actions: Optional[torch.Tensor] = None, prior: Optional[str] = None) -> torch.Tensor:
        """See :func:`anchor_frames` (``actions``: of the frames after ``last``, for the ``action_kernel`` prior;
        ``prior``: another prior's anchor in place of the model's own)."""
        return anchor_frames(prior or self.prior, previous, last, horizons, actions, self.kernels)

    def start(self, noise: torch.Tensor, anchor=None, anchored=None) -> torch.Tensor:
        """A frame at level 1: its noise, centred on its anchor and scaled by its noise std."""
        return noise_centre(noise, anchor, self.noise_std(anchored))

    def add_noise(self, x0, noise, t, anchor=None, anchored=None) -> torch.Tensor:
        """``x_t`` of clean frames ``x0`` (see :func:`add_noise`)."""
        return add_noise(x0, noise, t, anchor, self.noise_std(anchored))

    def target(self, x0, noise, anchor=None, anchored=None) -> torch.Tensor:
        """The velocity the denoiser learns (see :func:`velocity_target`)."""
        return velocity_target(x0, noise, anchor, self.noise_std(anchored))

    def loss_weight(self, t: torch.Tensor, anchored: torch.Tensor) -> torch.Tensor:
        """``[B, T]``: the weight that makes the velocity error the network output's unit-variance error."""
        sigma = frame_sigma(anchored, self.config.residual_std, self.config.frame_std).to(t.device)
        return velocity_loss_weight(t, sigma, self.noise_std(anchored))

    def forward(self, x: torch.Tensor, t: torch.Tensor, anchor=None, anchored=None, **network_kwargs) -> torch.Tensor:
        """The velocity of the noisy frames ``x`` at levels ``t``: the network's output, preconditioned around the
        anchors with the prior (an untrained network predicts the anchor), as is without one. ``network_kwargs``
        (``windows``, ``cache``, ``commit``, ``actions``) go to the network; with ``config.anchor_input`` the network
        also reads the anchors (:func:`network_anchor`)."""
        if self.prior == "none":
            return self.network(x, t, **network_kwargs)
        if anchor is None:
            anchor, anchored = torch.zeros_like(x), torch.zeros(x.shape[:2], dtype=torch.bool, device=x.device)
        elif anchored is None:
            anchored = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        if self.config.anchor_input:
            network_kwargs["anchor"] = network_anchor(anchor, anchored, t)
        raw = self.network(x, t, **network_kwargs)
        sigma = frame_sigma(anchored, self.config.residual_std, self.config.frame_std).to(x.device)
        return preconditioned_velocity(raw, x, t, anchor, sigma, self.noise_std(anchored))

    def step(self, x: torch.Tensor, v: torch.Tensor, t_now: torch.Tensor, t_next: torch.Tensor, anchor=None, anchored=None,
             eta: float = 0.0, fresh: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The sampler's update of frames ``x`` ``[B, n, C, H, W]`` from levels ``t_now`` to ``t_next`` (``[n]``) along
        the velocity ``v``: with ``x̂₀ = x − t·v`` and ``ĉ = x + (1 − t)·v`` (the noise centred on the anchor),
        ``x' = (1 − t')·x̂₀ + t'·(a + √(1 − η²)·(ĉ − a) + η·s·z)``, ``z = fresh`` (``a = 0``, ``s = 1`` without an anchor);
        ``η = 0`` is the deterministic Euler step."""
        tn, tx = t_now[None, :, None, None, None], t_next[None, :, None, None, None]
        x0 = x - tn * v
        centre_hat = x + (1 - tn) * v
        if eta > 0:  # renew part of the noise around the frame's anchor, at the frame's noise std
            centre, std = 0.0, 1.0
            if anchor is not None:
                centre, std = anchor, self.noise_std(anchored)[:, :, None, None, None]
            centre_hat = centre + math.sqrt(1 - eta**2) * (centre_hat - centre) + eta * std * fresh
        return (1 - tx) * x0 + tx * centre_hat
