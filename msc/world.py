"""A seeded world that steps by discrete actions: the data and the referee of the action-conditioned MSC world model.

The player looks down on a large picture (a photograph or a procedural texture, 2.5 frames wide) through a
camera that the actions move; the player's marker stays in the middle of the view and points where it last
moved. Sprites (the procedural generator's discs, squares and rings) move over the picture by themselves at
constant velocity, bounce off its edges and occlude each other in a fixed depth order; the marker is drawn
over them. At the picture's edge the camera stops: pushing against a wall changes nothing but the marker.

    world = World(seed=3)                     # or World(3, photo=image): the picture of your own photograph
    frame = world.reset()                     # [3, S, S] in [-1, 1]
    frame = world.step(ACTIONS.index("left"))

Everything is a pure function of ``(seed, picture, actions)``: the same seed and actions give the same frames.
The camera moves by whole pixels, so a step's view of the picture is an exact shift of the previous one.
The engine makes training data without limit and referees what a model draws; the model never sees it
otherwise (no frame, anchor or input of the model is computed from an action by hand).
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from msc.data.procedural import _texture, sprite_alpha

ACTIONS = ("none", "left", "right", "up", "down")
MOVES = {"none": (0, 0), "left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}  # (dx, dy) per action
FRAME_SIZE = 64
WORLD_SCALE = 2.5  # the picture's side in frames
SPEED = 2  # camera pixels per step
MARKER_RADIUS = 0.07  # of the frame
MARKER_COLOUR = torch.tensor([1.0, 1.0, 1.0])
MARKER_EDGE = torch.tensor([-1.0, -1.0, -1.0])


def check_action(action) -> int:
    """The index of ``action`` (an index or a name of :data:`ACTIONS`); ``ValueError`` naming the choices otherwise."""
    if isinstance(action, str) and action in ACTIONS:
        return ACTIONS.index(action)
    if not isinstance(action, bool) and isinstance(action, int) and 0 <= action < len(ACTIONS):
        return action
    raise ValueError(f"action must be one of {list(ACTIONS)} or its index 0..{len(ACTIONS) - 1}, got {action!r}.")


def _picture(photo: torch.Tensor, side: int) -> torch.Tensor:
    """A photo ``[3, h, w]`` (uint8, or float in [-1, 1]) -> its centre square resized to ``[3, side, side]`` in [-1, 1]."""
    img = photo.float() / 127.5 - 1 if photo.dtype == torch.uint8 else photo.float()
    if img.dim() != 3 or img.shape[0] != 3:
        raise ValueError(f"a photo must be [3, H, W], got {tuple(photo.shape)}.")
    h, w = img.shape[1:]
    short = min(h, w)
    top, left = (h - short) // 2, (w - short) // 2
    square = img[:, top : top + short, left : left + short][None]
    return F.interpolate(square, size=(side, side), mode="bilinear", antialias=True, align_corners=False)[0].clamp(-1, 1)


class World:
    """One episode of the world (see the module docstring). ``photos``: pictures to draw the background from (one
    chosen by the seed); ``photo``: this picture; neither: a procedural texture of the seed."""

    def __init__(self, seed: int, size: int = FRAME_SIZE, photo: Optional[torch.Tensor] = None,
                 photos: Sequence[torch.Tensor] = (), sprites: Optional[int] = None):
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}.")
        self.seed, self.size = seed, size
        g = torch.Generator().manual_seed(seed)
        side = int(round(WORLD_SCALE * size))
        if photo is not None:
            self.picture = _picture(photo, side)
        elif photos:
            self.picture = _picture(photos[int(torch.randint(len(photos), (1,), generator=g))], side)
        else:
            self.picture = _texture(g, side)
        self.side = side
        n = int(torch.randint(2, 7, (1,), generator=g)) if sprites is None else sprites
        self._sprite_start = {
            "pos": torch.rand(n, 2, generator=g) * 0.8 + 0.1,  # picture units
            "vel": (torch.rand(n, 2, generator=g) * 2 - 1) * 0.012,
            "radius": (0.06 + 0.08 * torch.rand(n, generator=g)) / WORLD_SCALE,
            "colour": torch.rand(n, 3, generator=g) * 2 - 1,
            "shape": torch.randint(0, 3, (n,), generator=g),
        }
        start = torch.randint(0, side - size + 1, (2,), generator=g)
        self._camera_start = (int(start[0]), int(start[1]))  # top-left pixel of the view (x, y)
        self.reset()

    def reset(self) -> torch.Tensor:
        """Back to the first frame of the episode, which it returns."""
        self.camera = self._camera_start
        self.heading = ACTIONS.index("up")
        self.pos = self._sprite_start["pos"].clone()
        self.vel = self._sprite_start["vel"].clone()
        self.frame_index = 0
        return self.render()

    def step(self, action) -> torch.Tensor:
        """Apply ``action`` (index or name of :data:`ACTIONS`): the camera moves, the sprites move; the next frame."""
        action = check_action(action)
        dx, dy = MOVES[ACTIONS[action]]
        if (dx, dy) != (0, 0):
            self.heading = action
        limit = self.side - self.size
        self.camera = (min(max(self.camera[0] + SPEED * dx, 0), limit), min(max(self.camera[1] + SPEED * dy, 0), limit))
        radius = self._sprite_start["radius"][:, None]
        self.pos = self.pos + self.vel
        low, high = radius, 1 - radius
        self.vel = torch.where((self.pos < low) | (self.pos > high), -self.vel, self.vel)
        self.pos = torch.where(self.pos < low, 2 * low - self.pos, torch.where(self.pos > high, 2 * high - self.pos, self.pos))
        self.frame_index += 1
        return self.render()

    def rollout(self, actions: Sequence[int]) -> torch.Tensor:
        """``[1 + len(actions), 3, S, S]``: the first frame and one per action (the episode restarts)."""
        return torch.stack([self.reset(), *[self.step(a) for a in actions]])

    def render(self) -> torch.Tensor:
        """The current view ``[3, S, S]`` in [-1, 1]."""
        s, (x0, y0) = self.size, self.camera
        frame = self.picture[:, y0 : y0 + s, x0 : x0 + s].clone()
        coords = (torch.arange(s, dtype=torch.float32) + 0.5) / s  # pixel centres in frame units
        yy, xx = torch.meshgrid(coords, coords, indexing="ij")
        scale = self.side / s  # picture units -> frame units
        offset = torch.tensor([x0, y0], dtype=torch.float32) / s
        sprites = self._sprite_start
        for i in range(self.pos.shape[0]):  # painter's order
            pos = self.pos[i] * scale - offset
            alpha = sprite_alpha(xx, yy, pos, float(sprites["radius"][i]) * scale, int(sprites["shape"][i]), s)
            frame = frame * (1 - alpha) + sprites["colour"][i, :, None, None] * alpha
        return self._draw_marker(frame, xx, yy)

    def _draw_marker(self, frame: torch.Tensor, xx: torch.Tensor, yy: torch.Tensor) -> torch.Tensor:
        """The player's marker in the middle of the view: a white disc with a dark rim and a dark nose pointing
        where the player last moved."""
        centre = torch.tensor([0.5, 0.5])
        rim = sprite_alpha(xx, yy, centre, MARKER_RADIUS + 1.5 / self.size, 0, self.size)
        body = sprite_alpha(xx, yy, centre, MARKER_RADIUS, 0, self.size)
        dx, dy = MOVES[ACTIONS[self.heading]]
        nose = sprite_alpha(xx, yy, centre + 0.6 * MARKER_RADIUS * torch.tensor([dx, dy], dtype=torch.float32),
                            0.35 * MARKER_RADIUS, 0, self.size)
        frame = frame * (1 - rim) + MARKER_EDGE[:, None, None] * rim
        frame = frame * (1 - body) + MARKER_COLOUR[:, None, None] * body
        return (frame * (1 - nose) + MARKER_EDGE[:, None, None] * nose).clamp(-1, 1)


def random_actions(count: int, generator: torch.Generator, hold: float = 0.75) -> torch.Tensor:
    """``[count]`` long: a player's actions, each kept from the previous step with probability ``hold`` (a held key),
    else drawn uniformly."""
    out = torch.empty(count, dtype=torch.long)
    current = int(torch.randint(len(ACTIONS), (1,), generator=generator))
    for i in range(count):
        if torch.rand(1, generator=generator).item() > hold:
            current = int(torch.randint(len(ACTIONS), (1,), generator=generator))
        out[i] = current
    return out


def episode(seed: int, frames: int, size: int = FRAME_SIZE, photos: Sequence[torch.Tensor] = ()):
    """``(frames [T, 3, S, S], actions [T] long)``: an episode of ``seed`` under random actions; ``actions[t]`` is the
    action that led to frame ``t`` (the first frame's is the no-op), as the world model is conditioned."""
    g = torch.Generator().manual_seed(seed + 7)
    actions = random_actions(frames - 1, g)
    world = World(seed, size, photos=photos)
    return world.rollout(actions.tolist()), torch.cat([torch.zeros(1, dtype=torch.long), actions])


class WorldEpisodes(torch.utils.data.Dataset):
    """Training (or held-out) episodes by index: ``(frames [T, 3, S, S], actions [T] long)`` of seed ``index`` (``split``
    ``"test"``: seeds from :data:`~msc.data.procedural.TEST_SEED_OFFSET`), over ``photos`` when given."""

    def __init__(self, frames: int, size: int = FRAME_SIZE, photos: Sequence[torch.Tensor] = (), split: str = "train"):
        from msc.data.procedural import TEST_SEED_OFFSET

        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}.")
        self.frames, self.size, self.photos = frames, size, list(photos)
        self.offset = 0 if split == "train" else TEST_SEED_OFFSET

    def __len__(self) -> int:
        return 1 << 30

    def __getitem__(self, index: int):
        return episode(self.offset + int(index), self.frames, self.size, self.photos)
