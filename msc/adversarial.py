"""An adversarial term on what the few-step sampler draws (``msc.train --adversarial``).

Why. Sampled in 2 steps, the network is evaluated at levels 1 and 0.5, where the diffusion loss asks it for the
conditional mean of the frame (its regression target is a mean over every future the context allows). Where the future
is uncertain — what a bounce does, what comes in at the edge of a moving view — that mean is a smooth patch, and a
rollout that keeps drawing it dissolves and stops moving (docs/training.md, docs/world.md). Asking the sampler's output
to be indistinguishable from real frames, beside the diffusion loss, is the adversarial diffusion distillation recipe
(Sauer et al. 2023, "ADD"; Lin et al. 2025, "APT", for video): the diffusion loss keeps the frames where the truth is,
the critic penalises the blur of the mean.

What is trained. For a clip ``[B, T, C, H, W]`` the model continues a true context of ``k`` frames by a chunk of
``chunk`` frames exactly as the sampler would (:func:`sampled_chunk`: noise centred on the chunk's anchors, the Euler
steps of the noise schedule, differentiable through every step), and a small patch critic (:class:`FrameCritic`) judges
each frame of the chunk beside the frame before it, against the true frames. Hinge losses (Lim & Ye 2017) with
spectral-normalised convolutions (Miyato et al. 2018); the generator's term is weighted adaptively against the
diffusion loss at the network's last layer, as VQGAN does (Esser et al. 2021, :func:`adaptive_weight`), so that one
setting means the same share of the gradient whatever the scale of the diffusion loss.

The critic is for training only: it is not part of the model's weights and the sampler never calls it.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn as nn
from torch.nn.utils.parametrizations import spectral_norm

from msc.diffusion import Denoiser, noise_levels

CRITIC_WIDTH = 64  # channels of the critic's first convolution, doubled at each of its stride-2 layers
CRITIC_DEPTH = 3  # stride-2 layers: a 32 × 32 frame is judged in 4 × 4 patches of 8 × 8 pixels' reach and more
ADAPTIVE_WEIGHT_MAX = 1e4  # VQGAN's clamp of the adaptive weight (a vanishing critic gradient must not blow it up)


class FrameCritic(nn.Module):
    """A patch critic of a frame given the frame before it: ``previous``, ``frame`` ``[N, C, H, W]`` ->
    logits ``[N, 1, H / 2^depth, W / 2^depth]`` (positive: real)."""

    def __init__(self, channels: int = 3, width: int = CRITIC_WIDTH, depth: int = CRITIC_DEPTH):
        super().__init__()
        layers, c_in = [], 2 * channels
        for i in range(depth):
            c_out = width * 2**i
            layers += [spectral_norm(nn.Conv2d(c_in, c_out, 4, stride=2, padding=1)), nn.LeakyReLU(0.2)]
            c_in = c_out
        layers.append(spectral_norm(nn.Conv2d(c_in, 1, 3, padding=1)))
        self.net = nn.Sequential(*layers)

    def forward(self, previous: torch.Tensor, frame: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([previous, frame], dim=1))

    def judge(self, last: torch.Tensor, chunk: torch.Tensor) -> torch.Tensor:
        """Logits of every frame of ``chunk`` ``[B, n, C, H, W]`` beside the frame before it (``last`` ``[B, C, H, W]``
        before the first) -> ``[B·n, 1, h, w]``."""
        previous = torch.cat([last[:, None], chunk[:, :-1]], dim=1)  # [B, n, C, H, W]
        return self(previous.flatten(0, 1), chunk.flatten(0, 1))


def sampled_chunk(model, clips: torch.Tensor, generator: torch.Generator, chunk: int = 1, steps: int = 2,
                  schedule: str = "cosine", actions: Optional[torch.Tensor] = None, context_frames: Optional[int] = None,
                  noise: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, int]:
    """The sampler's continuation of a true context, differentiable: ``clips`` ``[B, T, C, H, W]`` -> ``(fake
    [B, chunk, C, H, W], k)``, frames ``k .. k + chunk - 1`` drawn after the true frames ``0 .. k - 1`` (``k`` drawn
    from ``generator`` in ``2 .. T - chunk``: two finished frames give a flow anchor its velocity) with ``steps`` Euler
    steps of ``schedule`` (clamped to [-1, 1] as the sampler finishes frames), every frame of the chunk at one level, anchored on the context as the chunk-by-chunk sampler
    anchors it. ``model``: a :class:`~msc.diffusion.Denoiser` or a network with a prior; ``actions`` ``[B, T]`` (a world
    model's). ``context_frames`` (``k``) and ``noise`` ``[B, chunk, C, H, W]`` given instead of drawn: the sampler's
    own draws (the test that this is :func:`msc.sampling.sample_video`'s chunk). The context is at level 0, as the
    sampler commits it."""
    denoiser = Denoiser.around(model)
    if denoiser.prior == "none":
        raise ValueError("the adversarial term continues a context through its anchors: it needs a prior.")
    b, t = clips.shape[:2]
    if not 1 <= chunk <= t - 2:
        raise ValueError(f"an adversarial chunk of {chunk} frames needs clips of at least {chunk + 2} frames, got {t}.")
    k = int(torch.randint(2, t - chunk + 1, (), generator=generator)) if context_frames is None else context_frames
    frames = clips[:, : k + chunk]  # [B, k + chunk, C, H, W]
    acts = None if actions is None else actions[:, : k + chunk].to(clips.device)
    horizons = range(1, chunk + 1)
    anchor = denoiser.anchors(clips[:, k - 2], clips[:, k - 1], horizons,
                              None if acts is None else acts[:, k:]).detach()  # [B, chunk, C, H, W]
    anchors = torch.cat([torch.zeros_like(frames[:, :k]), anchor], dim=1)  # the context's are not used
    anchored = torch.zeros(b, k + chunk, dtype=torch.bool, device=clips.device)
    anchored[:, k:] = True
    if noise is None:
        noise = torch.randn(anchor.shape, generator=generator).to(clips.device, clips.dtype)
    x = denoiser.start(noise, anchor, anchored[:, k:])  # [B, chunk, C, H, W] at level 1
    levels = noise_levels(schedule, steps).to(torch.float32)
    conditions = {} if acts is None else {"actions": acts}
    for i in range(steps):
        t_now = torch.full((chunk,), float(levels[i]), device=clips.device)
        t_next = torch.full((chunk,), float(levels[i + 1]), device=clips.device)
        per_frame = torch.cat([torch.zeros(k, device=clips.device), t_now])[None].expand(b, -1)
        v = denoiser(torch.cat([frames[:, :k], x], dim=1), per_frame, anchor=anchors, anchored=anchored,
                     **conditions)[:, k:]  # [B, chunk, C, H, W]
        x = denoiser.step(x, v, t_now, t_next, anchor, anchored[:, k:])
    return x.clamp(-1, 1), k  # a finished frame, clamped to the pixel range as the sampler finishes it


def critic_loss(critic: FrameCritic, last: torch.Tensor, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """The critic's hinge loss: real chunks ``[B, n, C, H, W]`` above +1, the sampler's (detached) below −1."""
    return (torch.relu(1 - critic.judge(last, real)).mean()
            + torch.relu(1 + critic.judge(last, fake.detach())).mean())


def generator_loss(critic: FrameCritic, last: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """The sampler's hinge loss: the critic's logits of its chunks, raised."""
    return -critic.judge(last, fake).mean()


def adaptive_weight(reconstruction: torch.Tensor, adversarial: torch.Tensor, last_layer: torch.Tensor) -> torch.Tensor:
    """VQGAN's weight of the adversarial term: ``‖∇ reconstruction‖ / ‖∇ adversarial‖`` at the network's last layer's
    weight (detached, clamped to :data:`ADAPTIVE_WEIGHT_MAX`): multiplied by the setting, the generator's gradient there
    is that share of the diffusion loss's."""
    rec = torch.autograd.grad(reconstruction, last_layer, retain_graph=True)[0].norm()
    adv = torch.autograd.grad(adversarial, last_layer, retain_graph=True)[0].norm()
    return (rec / (adv + 1e-4)).clamp(max=ADAPTIVE_WEIGHT_MAX).detach()
