"""Live play of a world model: one frame per action, as the actions arrive (paper Sec. 3.3: frame-causal attention
is what makes "interactive control of video content" possible).

    player = Player(world_model, context, context_actions, load_presets(weights)["real-time"])  # or context=None
    frame = player.step(ACTIONS.index("left"))   # [B, C, H, W]: the next frame, knowing the actions so far only

Each call denoises one new frame (chunks of 1 frame: the lowest latency) and commits it to the bounded KV cache,
so every frame costs the same however long the game lasts. The frames are exactly those of
:func:`msc.sampling.sample_video` given the whole action sequence at once with ``chunk=1`` (same seed, same
noise per frame): playing live changes nothing but when the actions become known.
"""

from __future__ import annotations

from dataclasses import replace
from typing import List, Optional

import torch

from msc.diffusion import noise_levels
from msc.sampling import PRESETS, SamplerSettings, _denoising_step, _histories, _start_frame
from msc.world import check_action


class Player:
    """One game: the frames so far and the model state (KV caches) that the next frame needs."""

    @torch.no_grad()
    def __init__(self, model, context: Optional[torch.Tensor] = None, context_actions: Optional[torch.Tensor] = None,
                 settings: SamplerSettings = PRESETS["real-time"]):
        """``context`` ``[B, K, C, H, W]`` in the model's space (``None``: from nothing, the first frame drawn with the
        no-op and ``settings.first_frame_steps``), ``context_actions`` ``[B, K]`` the actions that led to them (the
        first frame's is the no-op; default all no-ops)."""
        if not model.config.actions:
            raise ValueError("this model is not a world model (config.actions is 0): it takes no actions.")
        self.model, self.settings = model, replace(settings, chunk=1)
        cfg = model.config
        self.device = next(model.parameters()).device
        frame_shape = (cfg.channels, cfg.image_size, cfg.image_size)
        batch = 1 if context is None else context.shape[0]
        if context is not None and (context.dim() != 5 or tuple(context.shape[2:]) != frame_shape):
            raise ValueError(f"context must be [B, K, {', '.join(map(str, frame_shape))}], got {tuple(context.shape)}.")
        k = 0 if context is None else context.shape[1]
        if context_actions is None:
            context_actions = torch.zeros(batch, k, dtype=torch.long)
        if tuple(context_actions.shape) != (batch, k):
            raise ValueError(f"context_actions must be [B, K] = [{batch}, {k}], got {tuple(context_actions.shape)}.")
        actions = context_actions.to(self.device, torch.long)
        model.check_actions(actions, actions.shape)  # before any work
        s, windows = self.settings, self.settings.windows or cfg.windows
        windows.check_fits(cfg.grid)
        self.noise_shape = (batch, *frame_shape)
        self.history, self.free_history = _histories(model, windows, s, True, 0, self.noise_shape, self.device, actions)
        self.levels = noise_levels(s.noise_schedule, s.steps, s.shift)
        self.first_levels = noise_levels(s.noise_schedule, s.first_frame_steps, s.shift) if s.first_frame_alone(k) else self.levels
        self.frames: List[torch.Tensor] = []  # [B, C, H, W] each, the context included
        if k:
            self._commit(context.to(self.device).float())
        else:
            self._generate(0)

    def __len__(self) -> int:
        return len(self.frames)

    def video(self) -> torch.Tensor:
        """``[B, T, C, H, W]``: every frame so far."""
        return torch.stack(self.frames, dim=1)

    @torch.no_grad()
    def step(self, action) -> torch.Tensor:
        """The next frame ``[B, C, H, W]`` after ``action`` (an index or a name of :data:`msc.world.ACTIONS`)."""
        action = check_action(action)
        if action >= self.model.config.actions:
            raise ValueError(f"this model knows {self.model.config.actions} actions, got {action}.")
        return self._generate(action)

    def _commit(self, frames: torch.Tensor) -> None:
        for history in (self.history, self.free_history):
            if history is not None:
                history.commit(frames)
        self.frames.extend(frames.unbind(1))

    def _generate(self, action: int) -> torch.Tensor:
        index = len(self.frames)
        taken = torch.full((self.noise_shape[0], 1), action, dtype=torch.long, device=self.device)
        for history in (self.history, self.free_history):
            if history is not None:
                history.actions = torch.cat([history.actions, taken], dim=1)
        levels = self.first_levels if index == 0 else self.levels
        x, anchor = _start_frame(self.history, index, self.settings.seed, 0, self.noise_shape, self.device)
        x = x[:, None]  # [B, 1, C, H, W]
        for st in range(len(levels) - 1):
            t_now, t_next = levels[st : st + 1].float().to(self.device), levels[st + 1 : st + 2].float().to(self.device)
            x, _ = _denoising_step(self.history, self.free_history, x, [anchor], [index], [st], t_now, t_next, self.settings, 0)
        frame = x.clamp(-1, 1)
        self._commit(frame)
        return frame[:, 0]
