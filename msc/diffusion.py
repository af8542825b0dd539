"""Per-frame rectified-flow diffusion (DESIGN.md §4; paper Sec. 3.3).

Parameterisation — **rectified flow** (Liu et al. 2022; Esser et al. 2024, "SD3"): a frame at noise
level ``t ∈ [0, 1]`` is the straight interpolation

    x_t = (1 - t) · x_0 + t · ε,       ε ~ N(0, I),   t = 0 clean, t = 1 pure noise,

and the model predicts the velocity ``v = ε - x_0``, so that ``x_0 = x_t - t · v`` and
``ε = x_t + (1 - t) · v``. Every frame has its own ``t`` (Diffusion Forcing, Chen et al. 2024): in
training the levels are drawn independently per frame; in sampling the frame schedule arranges them.

Noise schedules map a step index to a noise level; the sampler walks them from 1 down to 0:

* ``linear``: ``t_i = 1 - i / N``;
* ``cosine``: ``t_i = (1 + cos(π i / N)) / 2``, small steps at both ends;
* ``shifted``: the linear schedule warped by ``t' = s t / (1 + (s - 1) t)`` (SD3's time shift), which
  spends more steps at high noise for ``s > 1``.
"""

from __future__ import annotations

import math

import torch

SCHEDULES = ("cosine", "linear", "shifted")


def add_noise(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``x0``, ``noise`` ``[B, T, C, H, W]``, ``t`` ``[B, T]`` -> ``x_t``."""
    t = t[:, :, None, None, None].to(x0.dtype)
    return (1 - t) * x0 + t * noise


def velocity_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """What the model learns to predict: ``ε - x_0``."""
    return noise - x0


def predict_x0(xt: torch.Tensor, velocity: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return xt - t[:, :, None, None, None].to(xt.dtype) * velocity


def predict_noise(xt: torch.Tensor, velocity: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return xt + (1 - t[:, :, None, None, None].to(xt.dtype)) * velocity


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


def sample_training_levels(batch: int, frames: int, generator: torch.Generator, clean_prefix_prob: float = 0.25) -> torch.Tensor:
    """``[B, T]`` independent per-frame noise levels for training.

    Independent uniform levels per frame (Diffusion Forcing). With probability
    ``clean_prefix_prob`` a sample instead gets a random-length prefix at low noise (``t < 0.1``),
    the situation of autoregressive sampling (a nearly clean context, then noisy frames), which
    uniform draws almost never produce for long prefixes.
    """
    t = torch.rand(batch, frames, generator=generator)
    prefix = torch.randint(1, max(frames, 2), (batch,), generator=generator)
    use_prefix = torch.rand(batch, generator=generator) < clean_prefix_prob
    low = 0.1 * torch.rand(batch, frames, generator=generator)
    in_prefix = torch.arange(frames)[None] < prefix[:, None]
    return torch.where(use_prefix[:, None] & in_prefix, low, t)


def velocity_loss(model, x0: torch.Tensor, levels: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Mean squared error between the predicted and the true velocity at the given levels and noise."""
    pred = model(add_noise(x0, noise, levels), levels)
    return (pred.float() - velocity_target(x0, noise).float()).pow(2).mean()


def diffusion_loss(model, x0: torch.Tensor, generator: torch.Generator, clean_prefix_prob: float = 0.25) -> torch.Tensor:
    """The training loss: independent per-frame noise levels and fresh noise from ``generator``.
    ``x0`` ``[B, T, C, H, W]``."""
    b, t = x0.shape[:2]
    levels = sample_training_levels(b, t, generator, clean_prefix_prob).to(x0.device)
    noise = torch.randn(x0.shape, generator=generator).to(x0.device, x0.dtype)
    return velocity_loss(model, x0, levels, noise)
