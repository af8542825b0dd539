"""3-D rotary position embeddings over (t, y, x) (docs/design.md §2).

The head dimension is split into three even parts, one per axis; each part rotates pairs of
channels by ``position * frequency`` (RoFormer, Su et al. 2021). Queries and keys are rotated, so
attention scores depend on relative positions only and a video can run past its training length.

Positions are floats: the Low-Res branch places a pooled token at the centre of the ``r × r`` block
it averages (``i * r + (r - 1) / 2``), so both branches agree on where a token is.
"""

from __future__ import annotations

import functools
from typing import Tuple

import torch

MIN_HEAD_DIM = 6  # two channels for each of t, y and x


def axis_dims(head_dim: int) -> Tuple[int, int, int]:
    """Channels given to (t, y, x): even numbers summing to ``head_dim``; space gets the larger share."""
    if head_dim % 2 or head_dim < MIN_HEAD_DIM:
        raise ValueError(f"rotary embeddings need an even head dimension >= {MIN_HEAD_DIM}, got {head_dim}.")
    spatial = 2 * (head_dim // 6)
    return head_dim - 2 * spatial, spatial, spatial


@functools.lru_cache(maxsize=64)
def _cos_sin(head_dim: int, frames: Tuple[int, int], height: int, width: int, scale: int, base: float, dtype, device):
    """Cosines and sines ``[T, H, W, 1, head_dim / 2]`` for frames ``frames[0] .. frames[1] - 1``."""
    dims = axis_dims(head_dim)
    offset = (scale - 1) / 2
    positions = (
        torch.arange(*frames, dtype=torch.float64),
        torch.arange(height, dtype=torch.float64) * scale + offset,
        torch.arange(width, dtype=torch.float64) * scale + offset,
    )
    parts = []
    for axis, (dim, pos) in enumerate(zip(dims, positions)):
        freqs = base ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)  # [dim / 2]
        ang = pos[:, None] * freqs  # [n, dim / 2]
        shape = [1, 1, 1, dim // 2]
        shape[axis] = pos.numel()
        parts.append(ang.view(shape).expand(frames[1] - frames[0], height, width, dim // 2))
    ang = torch.cat(parts, dim=-1)[:, :, :, None, :]  # [T, H, W, 1, head_dim / 2]
    return ang.cos().to(dtype=dtype, device=device), ang.sin().to(dtype=dtype, device=device)


def apply_rotary(x: torch.Tensor, first_frame: int = 0, scale: int = 1, base: float = 100.0) -> torch.Tensor:
    """Rotate ``x`` ``[B, T, H, W, heads, D]`` by its (t, y, x) position; frame 0 of ``x`` is
    ``first_frame`` of the video (the KV cache feeds later frames alone)."""
    _, t, h, w, _, d = x.shape
    cos, sin = _cos_sin(d, (first_frame, first_frame + t), h, w, scale, base, x.dtype, x.device)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    out = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)  # [B, T, H, W, heads, D/2, 2]
    return out.flatten(-2)
