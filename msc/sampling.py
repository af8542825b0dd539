"""Samplers: extend a video frame-chunk by frame-chunk (DESIGN.md §4; paper Sec. 3.3).

Pure functions in the style of k-diffusion's ``sampling.py``: ``sample_video(model, context, frames,
...)`` returns the context followed by the generated frames, and reports progress through an
optional ``callback(info)``.

The ``autoregressive`` frame schedule: frames are generated in chunks; each chunk starts as pure
noise (level 1) and is integrated along the rectified-flow ODE ``dx/dt = v`` (Euler steps on the
noise-level schedule) while the frames before it sit at ``context_noise``. Because attention is
frame-causal, earlier frames never change.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

from msc.diffusion import add_noise, noise_levels


@torch.no_grad()
def sample_video(
    model,
    context: torch.Tensor,
    frames: int,
    steps: int = 16,
    chunk: int = 4,
    schedule: str = "cosine",
    shift: float = 3.0,
    context_noise: float = 0.0,
    seed: int = 0,
    callback: Optional[Callable[[dict], None]] = None,
) -> torch.Tensor:
    """Generate ``frames`` new frames after ``context`` ``[B, K, C, H, W]`` (K may be 0).

    Returns ``[B, K + frames, C, H, W]`` in [-1, 1].
    """
    if frames < 1:
        raise ValueError(f"frames must be at least 1, got {frames}.")
    if chunk < 1:
        raise ValueError(f"chunk must be at least 1, got {chunk}.")
    device = next(model.parameters()).device
    g = torch.Generator().manual_seed(int(seed))
    levels = noise_levels(schedule, steps, shift).tolist()
    video = context.to(device)
    b = video.shape[0]
    shape = tuple(video.shape[2:]) if video.shape[1] else (model.config.channels, model.config.image_size, model.config.image_size)
    done = 0
    while done < frames:
        n = min(chunk, frames - done)
        k = video.shape[1]
        ctx_levels = torch.full((b, k), float(context_noise), device=device)
        ctx = add_noise(video, torch.randn(video.shape, generator=g).to(device), ctx_levels) if context_noise > 0 else video
        x = torch.randn((b, n, *shape), generator=g).to(device)
        for i in range(steps):
            t_now, t_next = levels[i], levels[i + 1]
            t = torch.cat([ctx_levels, torch.full((b, n), t_now, device=device)], dim=1)
            v = model(torch.cat([ctx, x], dim=1), t)[:, k:]
            x = x + (t_next - t_now) * v
            if callback is not None:
                callback({"chunk_start": done, "chunk_frames": n, "step": i + 1, "steps": steps, "t": t_next})
        video = torch.cat([video, x.clamp(-1, 1)], dim=1)
        done += n
    return video
