"""Sprite trajectories in generated video: does a predicted object go where the true one goes?

The procedural generator knows every sprite's true centre in every frame (:func:`msc.data.procedural.procedural_sprites`).
In a predicted frame the sprite is found by a matched filter: for each candidate centre ``p``,

    score(p) = mean_alpha ‖frame(p + u) − colour‖²  −  ½ · mean_ring min(‖frame(p + u) − colour‖², 1)

with ``alpha`` the sprite's own coverage mask (its shape and radius), ``ring`` the two pixels around it and
``colour`` its colour: the sprite's colour inside and a different one around it, so that a background
region of a similar colour does not match. The centre is the ``p`` of the lowest score (positions off the
frame count as the worst colour). The **trajectory
error** is the mean distance, in pixels, between the centre found in the prediction and the true centre,
over the sprites that are at least half visible in the truth. The same locator run on the true frames
gives the measurement's own floor, reported beside it; the frozen last frame (copy-last) is the
reference a model that stops its sprites scores.
"""

from __future__ import annotations

import math
from typing import List

import torch
import torch.nn.functional as F

from msc.data.procedural import sprite_alpha

MIN_VISIBLE = 0.5  # sprites less visible than this in the truth (occluded) are not scored
_WORST = 12.0  # the largest squared colour distance of a pixel in [-1, 1]^3
RING = 2  # pixels around a sprite that should not be its colour


def _dilate(mask: torch.Tensor) -> torch.Tensor:
    """A 3 × 3 maximum filter of ``[h, w]`` coverage (the sprite's anti-aliased edge is not background)."""
    return F.max_pool2d(mask[None, None], 3, stride=1, padding=1)[0, 0]


def locate_sprites(frames: torch.Tensor, sprites: dict) -> torch.Tensor:
    """``[T, 3, S, S]`` frames -> ``[T, n, 2]`` (column, row) centre of each sprite of ``sprites`` (the record of
    :func:`~msc.data.procedural.procedural_sprites`) found by the matched filter."""
    t, _, size, _ = frames.shape
    out = torch.empty(t, len(sprites["radius"]), 2)
    for i, (radius, colour, shape) in enumerate(zip(sprites["radius"].tolist(), sprites["colour"], sprites["shape"].tolist())):
        k = int(math.ceil(radius)) + 1 + RING  # template half-size, pixels
        offsets = torch.arange(-k, k + 1, dtype=torch.float32) / size
        yy, xx = torch.meshgrid(offsets, offsets, indexing="ij")
        alpha = sprite_alpha(xx, yy, torch.zeros(2), radius / size, int(shape), size)  # [2k+1, 2k+1]
        outer = sprite_alpha(xx, yy, torch.zeros(2), (radius + RING) / size, 0, size)  # a disc RING pixels wider
        ring = (outer - _dilate(alpha)).clamp(min=0)
        distance = (frames.float() - colour[None, :, None, None]).pow(2).sum(1, keepdim=True)  # [T, 1, S, S]
        distance = F.pad(distance, (k, k, k, k), value=_WORST)
        inside = F.conv2d(distance, (alpha / alpha.sum())[None, None])
        around = F.conv2d(distance.clamp(max=1), (ring / ring.sum().clamp(min=1e-6))[None, None])
        score = (inside - 0.5 * around).flatten(1)  # [T, S*S]
        best = score.argmin(dim=1)
        out[:, i, 0], out[:, i, 1] = (best % size).float(), torch.div(best, size, rounding_mode="floor").float()
    return out


def trajectory_error(pred: torch.Tensor, sprites: List[dict], first_frame: int) -> float:
    """Mean distance (pixels) between the sprites found in ``pred`` ``[N, M, 3, S, S]`` and their true centres, clip
    ``n``'s frames being frames ``first_frame .. first_frame + M - 1`` of the clip ``sprites[n]`` describes; only
    sprites at least :data:`MIN_VISIBLE` visible in the truth count."""
    total, count = 0.0, 0
    for clip, record in zip(pred, sprites):
        frames = slice(first_frame, first_frame + clip.shape[0])
        found = locate_sprites(clip, record)  # [M, n, 2]
        distance = (found - record["centre"][frames]).norm(dim=-1)  # [M, n]
        scored = record["visible"][frames] >= MIN_VISIBLE
        total += float(distance[scored].sum())
        count += int(scored.sum())
    return total / max(count, 1)
