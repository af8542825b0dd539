"""An adversarial term on what the few-step sampler draws (``msc.train --adversarial``).

Why. Sampled in 2 steps, the network is evaluated at levels 1 and 0.5, where the diffusion loss asks it for the
conditional mean of the frame (its regression target is a mean over every future the context allows). Where the future
is uncertain — what a bounce does, what comes in at the edge of a moving view — that mean is a smooth patch, and a
rollout that keeps drawing it dissolves and stops moving (docs/training.md, docs/world.md). Asking the sampler's output
to be indistinguishable from real frames, beside the diffusion loss, is the adversarial diffusion distillation recipe
(Sauer et al. 2023, "ADD"; Lin et al. 2025, "APT", for video): the diffusion loss keeps the frames where the truth is,
the critic penalises the blur of the mean.

What is trained. For a clip ``[B, T, C, H, W]`` the model continues a true context of ``k`` frames by ``r`` frames of
its own (no gradient) and then by a chunk of ``chunk`` frames exactly as the sampler would (:func:`sampled_chunk`: noise
centred on the chunk's anchors, the Euler steps of the noise schedule, differentiable through every step), or draws the
first chunk of a video from nothing; a small patch critic (:class:`FrameCritic`) judges each frame of the chunk beside
the frame before it, against the true frames. Hinge losses (Lim & Ye 2017) with
spectral-normalised convolutions (Miyato et al. 2018); the generator's term is weighted adaptively against the
diffusion loss at the network's last layer, as VQGAN does (Esser et al. 2021, :func:`adaptive_weight`), so that one
setting means the same share of the gradient whatever the scale of the diffusion loss.

The critic is for training only: it is not part of the model's weights and the sampler never calls it.

Measured (docs/world.md, studies world-adversarial and world-adversarial-long): on the world model, after rollouts of
up to 8 frames, the critic never learned to tell the drawn frames from the true ones, and after 80 minutes the term had
moved no bar against the recipe continued; no shipped recipe uses it.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch
import torch.nn as nn
from torch.nn.utils.parametrizations import spectral_norm

from msc.diffusion import Denoiser, noise_levels
from msc.sampling import INITIAL_NOISE, SamplerSettings, frame_noises, sample_video

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


class SampledChunk(NamedTuple):
    """A chunk the sampler drew and the true chunk at the same place, each with the frame before it."""

    fake: torch.Tensor  # [B, chunk, C, H, W] drawn by the sampler, differentiable
    real: torch.Tensor  # [B, chunk, C, H, W] the clip's own frames there
    fake_last: torch.Tensor  # [B, C, H, W] the frame before the drawn chunk (the model's own after an own rollout)
    real_last: torch.Tensor  # [B, C, H, W] the true frame before the true chunk
    start: int  # the chunk's first frame index in the clip


def sampled_chunk(model, clips: torch.Tensor, generator: torch.Generator, chunk: int = 1, steps: int = 2,
                  schedule: str = "cosine", actions: Optional[torch.Tensor] = None, own_frames: int = 0,
                  context_frames: Optional[int] = None, rollout_frames: Optional[int] = None,
                  seed: Optional[int] = None, from_nothing: bool = False) -> SampledChunk:
    """The sampler's continuation of a clip, differentiable in its last chunk. ``clips`` ``[B, T, C, H, W]``: after the
    true frames ``0 .. k - 1`` (``k`` in ``2 ..``: two finished frames give a flow anchor its velocity) the model first
    continues by ``r`` frames of its own (a multiple of ``chunk`` up to ``own_frames``, sampled chunk by chunk as the
    sampler does, without a gradient: the errors a rollout compounds), then draws a chunk of ``chunk`` frames with
    ``steps`` Euler steps of ``schedule``, every frame of the chunk at one level, anchored on the frames before it as the chunk-by-chunk sampler
    anchors, and finished as the sampler finishes frames (clamped to [-1, 1]). ``k``, ``r`` and the sampler's ``seed``
    are drawn from ``generator`` unless given (``context_frames``, ``rollout_frames``, ``seed``); all noise is the
    sampler's own for that seed (:func:`msc.sampling.sample_video` draws the same frames). ``model``: a
    :class:`~msc.diffusion.Denoiser` or a network with a prior; ``actions`` ``[B, T]`` (a world model's).

    ``from_nothing``: the first chunk of a video from nothing instead (no context, no anchor: whole pictures drawn from
    their noise, as the sampler draws a video's first frames), judged beside a blank frame before it."""
    denoiser = Denoiser.around(model)
    if denoiser.prior == "none":
        raise ValueError("the adversarial term continues a context through its anchors: it needs a prior.")
    b, t = clips.shape[:2]
    needed = chunk if from_nothing else chunk + own_frames + 2
    if chunk < 1 or own_frames < 0 or t < needed:
        raise ValueError(f"an adversarial chunk of {chunk} frames after up to {own_frames} of the model's own needs clips "
                         f"of at least {needed} frames, got {t}.")
    if from_nothing:
        context_frames, rollout_frames = 0, 0
    if rollout_frames is None:
        rollout_frames = chunk * int(torch.randint(0, own_frames // chunk + 1, (), generator=generator))
    r = rollout_frames
    k = int(torch.randint(2, t - chunk - r + 1, (), generator=generator)) if context_frames is None else context_frames
    seed = int(torch.randint(0, 2**31, (), generator=generator)) if seed is None else seed
    n = k + r  # frames before the chunk
    acts = None if actions is None else actions[:, : n + chunk].to(clips.device)
    context = clips[:, :k]
    if r:
        with torch.no_grad():
            video = sample_video(denoiser.network, context, r, SamplerSettings(steps=steps, chunk=chunk, seed=seed,
                                                                                 noise_schedule=schedule),
                                 batch=b, actions=None if acts is None else acts[:, :n]).video  # [B, n, C, H, W]
        context = torch.cat([context, video[:, k:].to(clips.device, clips.dtype)], dim=1)
    anchored = torch.zeros(b, n + chunk, dtype=torch.bool, device=clips.device)
    if n:
        anchor = denoiser.anchors(context[:, n - 2], context[:, n - 1], range(1, chunk + 1),
                                  None if acts is None else acts[:, n:]).detach()  # [B, chunk, C, H, W]
        anchored[:, n:] = True
    else:  # from nothing: no frame to anchor on
        anchor = torch.zeros_like(clips[:, :chunk])
    anchors = torch.cat([torch.zeros_like(context), anchor], dim=1)  # the context's are not used
    noise = frame_noises(seed, list(range(n, n + chunk)), INITIAL_NOISE, 0, (b, *clips.shape[2:]), clips.device)
    x = denoiser.start(noise.to(clips.dtype), anchor, anchored[:, n:])  # [B, chunk, C, H, W] at level 1
    levels = noise_levels(schedule, steps).to(torch.float32)
    conditions = {} if acts is None else {"actions": acts}
    for i in range(steps):
        t_now = torch.full((chunk,), float(levels[i]), device=clips.device)
        t_next = torch.full((chunk,), float(levels[i + 1]), device=clips.device)
        per_frame = torch.cat([torch.zeros(n, device=clips.device), t_now])[None].expand(b, -1)  # the context at 0
        v = denoiser(torch.cat([context, x], dim=1), per_frame, anchor=anchors, anchored=anchored,
                     **conditions)[:, n:]  # [B, chunk, C, H, W]
        x = denoiser.step(x, v, t_now, t_next, anchor, anchored[:, n:])
    blank = torch.zeros_like(clips[:, 0])
    return SampledChunk(x.clamp(-1, 1), clips[:, n : n + chunk], context[:, n - 1] if n else blank,
                        clips[:, n - 1] if n else blank, n)


def critic_loss(critic: FrameCritic, drawn: SampledChunk) -> torch.Tensor:
    """The critic's hinge loss: the true chunk above +1, the sampler's (detached) below −1, each beside its frame before."""
    return (torch.relu(1 - critic.judge(drawn.real_last, drawn.real)).mean()
            + torch.relu(1 + critic.judge(drawn.fake_last.detach(), drawn.fake.detach())).mean())


def generator_loss(critic: FrameCritic, drawn: SampledChunk) -> torch.Tensor:
    """The sampler's hinge loss: the critic's logits of its chunk, raised."""
    return -critic.judge(drawn.fake_last, drawn.fake).mean()


def adaptive_weight(reconstruction: torch.Tensor, adversarial: torch.Tensor, last_layer: torch.Tensor) -> torch.Tensor:
    """VQGAN's weight of the adversarial term: ``‖∇ reconstruction‖ / ‖∇ adversarial‖`` at the network's last layer's
    weight (detached, clamped to :data:`ADAPTIVE_WEIGHT_MAX`): multiplied by the setting, the generator's gradient there
    is that share of the diffusion loss's."""
    rec = torch.autograd.grad(reconstruction, last_layer, retain_graph=True)[0].norm()
    adv = torch.autograd.grad(adversarial, last_layer, retain_graph=True)[0].norm()
    return (rec / (adv + 1e-4)).clamp(max=ADAPTIVE_WEIGHT_MAX).detach()
