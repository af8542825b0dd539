"""A seeded procedural video generator: training data that needs no download (docs/design.md §5).

The procedural clips hold both kinds of motion the paper separates (Sec. 3.2):

* **global motion**: a camera pans over, and zooms into, a large smooth texture (the paper's
  I-frame time scale: the whole scene moves together);
* **local motion**: 1–4 sprites (discs, squares, rings) move at constant velocity, bounce off the
  frame's edges and occlude each other in a fixed depth order (the P-frame time scale).

Every clip is a pure function of its seed; training draws seeds ``0 .. 2^30 - 1`` and the held-out test
set uses seeds from :data:`TEST_SEED_OFFSET` upwards, which training never touches.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

TEST_SEED_OFFSET = 1 << 30  # held-out seeds start here; torch seeds its CPU generator with 32 bits, so stay below 2^32


def _texture(g: torch.Generator, size: int) -> torch.Tensor:
    """``[3, size, size]`` smooth random texture in [-1, 1]: random low-frequency colour waves."""
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    img = torch.zeros(3, size, size)
    for _ in range(6):
        freq = 1 + 5 * torch.rand(2, generator=g)
        phase = 2 * math.pi * torch.rand(1, generator=g)
        wave = torch.sin(2 * math.pi * (freq[0] * xx + freq[1] * yy) + phase)  # [size, size]
        colour = torch.rand(3, 1, 1, generator=g) * 2 - 1
        img += colour * wave
    base = torch.rand(3, 1, 1, generator=g) * 1.2 - 0.6
    return (base + 0.35 * img / 2).clamp(-1, 1)


def procedural_clip(seed: int, frames: int = 16, size: int = 64) -> torch.Tensor:
    """The clip of ``seed``: ``[T, 3, size, size]`` float32 in [-1, 1]."""
    return _render(seed, frames, size)[0]


def procedural_sprites(seed: int, frames: int = 16, size: int = 64) -> dict:
    """The sprites of the clip of ``seed``, as the generator drew them: ``centre`` ``[T, n, 2]`` (column, row) in pixels,
    ``radius`` ``[n]`` in pixels, ``colour`` ``[n, 3]`` in [-1, 1], ``shape`` ``[n]`` (0 disc, 1 square, 2 ring), and
    ``visible`` ``[T, n]``: the fraction of each sprite's pixels not covered by a sprite drawn after it."""
    return _render(seed, frames, size)[1]


def sprite_alpha(xx, yy, pos, radius, shape, size: int) -> torch.Tensor:
    """Coverage of one sprite (``pos``, ``radius`` in frame units, ``shape``) at the points ``xx``, ``yy`` (frame units) of
    a ``size``-pixel frame, with a one-pixel anti-aliased edge."""
    dx, dy = xx - pos[0], yy - pos[1]
    if shape == 0:  # disc
        dist = torch.sqrt(dx**2 + dy**2) - radius
    elif shape == 1:  # square
        dist = torch.maximum(dx.abs(), dy.abs()) - radius
    else:  # ring
        dist = (torch.sqrt(dx**2 + dy**2) - 0.7 * radius).abs() - 0.3 * radius
    return (0.5 - dist * size).clamp(0, 1)


def _scene(seed: int, size: int) -> dict:
    """Everything a clip of ``seed`` is drawn from, drawn from its generator in one fixed order: the texture, the
    camera path and each sprite's first position, velocity, radius, colour and shape (positions in [0, 1] frame units)."""
    g = torch.Generator().manual_seed(int(seed))
    # -- global motion: a camera path over a texture four times the frame's area
    texture = _texture(g, 2 * size)[None]  # [1, 3, 2S, 2S]
    pan = (torch.rand(2, generator=g) * 2 - 1) * 0.03  # texture units per frame (texture spans [-1, 1])
    start = (torch.rand(2, generator=g) * 2 - 1) * 0.3
    zoom0 = 0.45 + 0.1 * torch.rand(1, generator=g).item()  # frame covers this fraction of the texture
    zoom_rate = (torch.rand(1, generator=g).item() * 2 - 1) * 0.01
    # -- local motion: sprites with position, velocity, radius, colour, shape
    n_sprites = int(torch.randint(1, 5, (1,), generator=g))
    pos = torch.rand(n_sprites, 2, generator=g) * 0.6 + 0.2  # in [0, 1] frame units
    vel = (torch.rand(n_sprites, 2, generator=g) * 2 - 1) * 0.04
    radius = 0.06 + 0.08 * torch.rand(n_sprites, generator=g)
    colour = torch.rand(n_sprites, 3, generator=g) * 2 - 1
    shape = torch.randint(0, 3, (n_sprites,), generator=g)
    return {"texture": texture, "pan": pan, "start": start, "zoom0": zoom0, "zoom_rate": zoom_rate, "pos": pos, "vel": vel,
            "radius": radius, "colour": colour, "shape": shape}


def _camera(scene: dict, frame: int):
    """``(centre [2], half)``: the texture window (texture units, the texture spanning [-1, 1]) frame ``frame`` shows."""
    half = scene["zoom0"] * (1 + scene["zoom_rate"] * frame)
    return (scene["start"] + scene["pan"] * frame).clamp(-1 + half, 1 - half), half


def _render(seed: int, frames: int, size: int):
    """``(clip [T, 3, S, S], sprites)`` of ``seed`` (see :func:`procedural_sprites`)."""
    scene = _scene(seed, size)
    pos, vel, radius, colour, shape = (scene[k] for k in ("pos", "vel", "radius", "colour", "shape"))
    n_sprites = len(radius)
    coords = (torch.arange(size) + 0.5) / size
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")  # [S, S]
    out = torch.empty(frames, 3, size, size)
    centres = torch.empty(frames, n_sprites, 2)
    visible = torch.empty(frames, n_sprites)
    for f in range(frames):
        centre, half = _camera(scene, f)
        lin = torch.linspace(-half, half, size)
        gy, gx = torch.meshgrid(lin + centre[1], lin + centre[0], indexing="ij")
        grid = torch.stack([gx, gy], dim=-1)[None]  # [1, S, S, 2]
        frame = F.grid_sample(scene["texture"], grid, mode="bilinear", align_corners=False)[0]  # [3, S, S]
        alphas = [sprite_alpha(xx, yy, pos[i], radius[i], int(shape[i]), size) for i in range(n_sprites)]
        for i in range(n_sprites):  # painter's order: later sprites occlude earlier ones
            frame = frame * (1 - alphas[i]) + colour[i, :, None, None] * alphas[i]
            cover = torch.zeros_like(alphas[i])
            for later in alphas[i + 1:]:
                cover = torch.maximum(cover, later)
            visible[f, i] = (alphas[i] * (1 - cover)).sum() / alphas[i].sum().clamp(min=1e-6)
        out[f] = frame
        centres[f] = pos * size - 0.5  # pixel (column, row): pixel i spans [i/S, (i+1)/S]
        # advance sprites, bouncing off the frame edges
        pos = pos + vel
        low, high = radius[:, None], 1 - radius[:, None]
        bounce = (pos < low) | (pos > high)
        vel = torch.where(bounce, -vel, vel)
        pos = torch.where(pos < low, 2 * low - pos, torch.where(pos > high, 2 * high - pos, pos))
    sprites = {"centre": centres, "radius": radius * size, "colour": colour, "shape": shape, "visible": visible}
    return out.clamp(-1, 1), sprites


def procedural_motion(seed: int, frame: int, size: int = 64) -> dict:
    """The exact motion of frame ``frame`` (>= 1) of the clip of ``seed`` against the frame before it, as an optical
    flow estimator would measure it: ``flow`` ``[2, S, S]``, where each pixel was one frame earlier (``(dx, dy)``
    pixels, :func:`msc.flow.backward_flow`'s convention): the camera's pan and zoom for the texture, the sprite's own
    move for a pixel at least half covered by a sprite; and ``layer`` ``[S, S]``, 0 for the texture and ``i + 1`` for
    sprite ``i`` (the topmost where sprites overlap: the painter's order)."""
    if frame < 1:
        raise ValueError(f"a frame's motion needs the frame before it: frame must be >= 1, got {frame}.")
    scene = _scene(seed, size)
    (now, half_now), (before, half_before) = _camera(scene, frame), _camera(scene, frame - 1)
    unit = (2 * torch.arange(size, dtype=torch.float32) / (size - 1) - 1)  # pixel -> window offset over half
    flow = torch.empty(2, size, size)
    for axis in (0, 1):  # 0: columns (x), 1: rows (y)
        seen = now[axis] + half_now * unit  # the texture point each column / row shows now
        was = ((seen - before[axis]) / half_before + 1) * (size - 1) / 2 - torch.arange(size)  # [S] pixels
        flow[axis] = was[None, :].expand(size, size) if axis == 0 else was[:, None].expand(size, size)
    sprites = _render(seed, frame + 1, size)[1]
    coords = (torch.arange(size) + 0.5) / size
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")  # [S, S]
    layer = torch.zeros(size, size, dtype=torch.long)
    for i, (radius, shape) in enumerate(zip(sprites["radius"].tolist(), sprites["shape"].tolist())):
        centre = sprites["centre"][frame, i]  # pixels
        covered = sprite_alpha(xx, yy, (centre + 0.5) / size, radius / size, int(shape), size) >= 0.5
        flow[:, covered] = (sprites["centre"][frame - 1, i] - centre)[:, None]
        layer[covered] = i + 1
    return {"flow": flow, "layer": layer}


class ProceduralVideos(torch.utils.data.Dataset):
    """Clips by index: ``split="train"`` uses seed ``index``, ``"test"`` seed ``TEST_SEED_OFFSET + index``."""

    def __init__(self, frames: int = 16, size: int = 64, split: str = "train", length: int = TEST_SEED_OFFSET):
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}.")
        self.frames, self.size, self.length = frames, size, length
        self.offset = 0 if split == "train" else TEST_SEED_OFFSET

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> torch.Tensor:
        return procedural_clip(self.offset + int(index), self.frames, self.size)
