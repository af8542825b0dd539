"""Photographs turned into video by a simulated camera, with moving cut-outs.

A clip is a pure function of ``(photos, seed)``:

* **camera**: a square view of 35–80 % of a photograph's short side moves over it: pan (0.1–2
  output pixels per frame, a fifth of the clips hold still), zoom (±1 % per frame) and a small roll
  (at most ±0.4° per frame): the global motion of the paper's I-frames (Sec. 3.2);
* **parallax** (half the clips): a second photograph or texture in front, seen below a wavy
  horizon, moving 1.5–3 times faster in the same direction: two layers at different depths;
* **cut-outs** (0–3): discs, rounded squares and ellipses cut from other photographs, moving at
  constant velocity and bouncing off the frame's edges, in a fixed depth order: local motion.

Everything is sampled with bilinear ``grid_sample`` from the stored photos (short side 160 px), all
frames of a clip at once.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F


def _uniform(g: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * torch.rand(1, generator=g).item()


def _view_grid(photo_hw, size: int, centre: torch.Tensor, half: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """``[T, S, S, 2]`` sampling grid of square views (centre ``[T, 2]`` (x, y) and half side ``[T]``
    in photo pixels, roll ``angle`` ``[T]`` in radians) in ``grid_sample``'s normalised coordinates."""
    h, w = photo_hw
    u = (torch.arange(size) + 0.5) / size * 2 - 1  # [S] output pixel centres in [-1, 1]
    vy, ux = torch.meshgrid(u, u, indexing="ij")  # [S, S]
    cos, sin = torch.cos(angle)[:, None, None], torch.sin(angle)[:, None, None]
    hs = half[:, None, None]
    px = centre[:, 0, None, None] + hs * (cos * ux - sin * vy)  # [T, S, S] photo pixels
    py = centre[:, 1, None, None] + hs * (sin * ux + cos * vy)
    return torch.stack([px / w * 2 - 1, py / h * 2 - 1], dim=-1)


def _camera_path(g: torch.Generator, photo_hw, size: int, frames: int, speed_scale: float = 1.0):
    """A camera path that stays inside the photo: centres ``[T, 2]``, half sides ``[T]``, angles ``[T]``."""
    h, w = photo_hw
    short = min(h, w)
    half0 = _uniform(g, 0.35, 0.8) * short / 2
    zoom = _uniform(g, -0.01, 0.01)
    k = torch.arange(frames, dtype=torch.float32)
    half = half0 * (1 + zoom * k)  # [T]
    still = torch.rand(1, generator=g).item() < 0.2 and speed_scale == 1.0
    speed = 0.0 if still else _uniform(g, 0.1, 2.0) * speed_scale * (2 * half0 / size)  # photo px per frame
    direction = _uniform(g, 0, 2 * math.pi)
    velocity = torch.tensor([math.cos(direction), math.sin(direction)]) * speed
    margin = float(half.max()) * 1.06  # room for the roll
    extent = torch.tensor([w, h], dtype=torch.float32) - 2 * margin  # where the centre may go, along x and y
    span = velocity.abs() * (frames - 1)
    if bool((span > extent).any()):  # too fast to fit: slow down until it does
        fit = (extent.clamp(min=0) / span.clamp(min=1e-6)).min().clamp(0, 1)
        velocity, span = velocity * fit, span * fit
    room = (extent - span).clamp(min=0)
    start = margin + torch.rand(2, generator=g) * room + torch.where(velocity < 0, span, torch.zeros(2))
    centre = start[None] + velocity[None] * k[:, None]  # [T, 2]
    roll = _uniform(g, -0.4, 0.4) * math.pi / 180 * (torch.rand(1, generator=g).item() < 0.5)
    angle = _uniform(g, -2, 2) * math.pi / 180 + roll * k
    return centre, half, angle, velocity


def _sample(photo: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """``photo`` ``[3, h, w]`` uint8, ``grid`` ``[T, S, S, 2]`` -> ``[T, 3, S, S]`` float in [-1, 1]."""
    x = photo.float()[None].div(127.5).sub(1).expand(grid.shape[0], -1, -1, -1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def camera_clip(photos: Sequence[torch.Tensor], seed: int, frames: int = 16, size: int = 64) -> torch.Tensor:
    """The clip of ``seed`` over ``photos`` (``[3, h, w]`` uint8 each): ``[T, 3, size, size]`` in [-1, 1]."""
    g = torch.Generator().manual_seed(int(seed))
    pick = lambda: photos[int(torch.randint(len(photos), (1,), generator=g))]  # noqa: E731
    background = pick()
    centre, half, angle, velocity = _camera_path(g, background.shape[1:], size, frames)
    video = _sample(background, _view_grid(background.shape[1:], size, centre, half, angle))  # [T, 3, S, S]

    if torch.rand(1, generator=g).item() < 0.5:  # parallax: a faster foreground layer under a wavy horizon
        layer = pick()
        c2, h2, a2, _ = _camera_path(g, layer.shape[1:], size, frames, speed_scale=_uniform(g, 1.5, 3.0))
        grid = _view_grid(layer.shape[1:], size, c2, h2, a2)
        front = _sample(layer, grid)
        # the horizon lives in the layer's own coordinates, so it moves with the layer
        ly = grid[..., 1]  # [T, S, S]
        lx = grid[..., 0]
        level, amp, freq, phase = _uniform(g, -0.2, 0.6), _uniform(g, 0.0, 0.15), _uniform(g, 2, 8), _uniform(g, 0, 6.3)
        edge = level + amp * torch.sin(freq * lx + phase)
        alpha = torch.sigmoid((ly - edge) * size * 0.8)[:, None]  # [T, 1, S, S]
        video = video * (1 - alpha) + front * alpha

    coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")  # [S, S] frame units
    k = torch.arange(frames, dtype=torch.float32)
    for _ in range(int(torch.randint(0, 4, (1,), generator=g))):  # cut-outs, painter's order
        source = pick()
        radius = _uniform(g, 0.08, 0.22)
        aspect = _uniform(g, 0.6, 1.0)
        shape = int(torch.randint(0, 3, (1,), generator=g))
        pos0 = torch.rand(2, generator=g) * (1 - 2 * radius) + radius
        vel = (torch.rand(2, generator=g) * 2 - 1) * 0.035
        # bounce: reflect the free path into [radius, 1 - radius]
        free = pos0[None] + vel[None] * k[:, None]  # [T, 2]
        lo, span = radius, 1 - 2 * radius
        phase = torch.remainder(free - lo, 2 * span)
        pos = lo + torch.where(phase > span, 2 * span - phase, phase)  # [T, 2]
        dx = (xx[None] - pos[:, 0, None, None]) / radius  # [T, S, S] in sprite radii
        dy = (yy[None] - pos[:, 1, None, None]) / (radius * aspect)
        if shape == 0:
            dist = torch.sqrt(dx**2 + dy**2) - 1
        elif shape == 1:
            dist = (dx.abs() ** 4 + dy.abs() ** 4) ** 0.25 - 1
        else:
            dist = torch.maximum(dx.abs(), dy.abs()) - 1
        alpha = (0.5 - dist * radius * size).clamp(0, 1)[:, None]  # [T, 1, S, S], one-pixel soft edge
        # the cut-out's picture: a patch of ``source`` that moves with it
        sh, sw = source.shape[1:]
        patch_half = _uniform(g, 0.15, 0.4) * min(sh, sw)
        pc = torch.tensor([_uniform(g, patch_half, sw - patch_half), _uniform(g, patch_half, sh - patch_half)])
        gx = (pc[0] + dx * patch_half) / sw * 2 - 1
        gy = (pc[1] + dy * patch_half * aspect) / sh * 2 - 1
        sprite = _sample(source, torch.stack([gx, gy], dim=-1))
        video = video * (1 - alpha) + sprite * alpha
    return video.clamp(-1, 1)
