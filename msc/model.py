"""The MSC transformer (paper Sec. 3; docs/design.md §2).

A DiT (Peebles & Xie, 2023) over per-frame patches whose self-attention is replaced by MSC attention:

    x: [B, T, C, H, W] --patchify per frame--> tokens [B, T, h, w, D]
    t: [B, T]           --per-frame embedding--> c [B, T, D]   (adaLN-Zero, broadcast over a frame)
    L x MSCBlock:  x += g_attn * MSCAttention(mod(norm(x)), c);  x += g_mlp * MLP(mod(norm(x)))
    final adaLN + linear back to patches -> y: [B, T, C, H, W]

MSC attention splits its heads between two branches (Sec. 3.1–3.2):

* High-Res: all tokens, neighborhood window ``k_s × k_s`` in space, causal window ``k_t`` in time;
* Low-Res: tokens average-pooled by ``r_l`` per frame (the QKV projection runs on the pooled tokens),
  global in the frame, causal and dilated by ``d`` over at most ``k_lo`` frames, upsampled back;

and scales each frame's branch outputs by weights computed from that frame's noise embedding
(Sec. 3.3, "noise scale modulated causal attention"), before one output projection. With
``attention="dense"`` the same model uses plain frame-causal dense attention: the baseline.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin

from msc.attention import neighborhood_attention, to_heads_first
from msc.diffusion import KERNEL_PRIORS, PRIORS, ActionKernels
from msc.rotary import apply_rotary

# --------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AttentionWindows:
    """Window sizes of MSC attention (parameters of the attention, not weights: docs/design.md §4)."""

    # metadata: "help" for flags, tables and labels; "range" (low, high, step) the app offers (None: the token grid)
    k_s: int = field(default=7, metadata={"help": "High-Res spatial window (k_s × k_s tokens)", "range": (1, None, 1)})
    k_t: int = field(default=3, metadata={"help": "High-Res causal temporal window (frames t-k_t+1 .. t)", "range": (1, 16, 1)})
    d: int = field(default=2, metadata={"help": "Low-Res temporal stride (frames)", "range": (1, 8, 1)})
    k_lo: int = field(default=4, metadata={"help": "Low-Res temporal reach (frames t, t-d, …: at most k_lo of them)",
                                           "range": (1, 16, 1)})

    def __post_init__(self):
        """Checked once, when made (``ValueError`` naming the setting)."""
        for name in ("k_s", "k_t", "d", "k_lo"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")

    def check_fits(self, grid: int) -> None:
        """Raise ``ValueError`` unless the spatial window fits a ``grid`` × ``grid`` token frame: done
        once where windows meet a model (its config, the sampler, the light cone)."""
        if self.k_s > grid:
            raise ValueError(f"spatial window k_s={self.k_s} is larger than the {grid} × {grid} token grid; use k_s <= {grid}.")

    def history(self) -> Tuple[int, int]:
        """Past frames each branch can see: (High-Res, Low-Res)."""
        return self.k_t - 1, (self.k_lo - 1) * self.d


@dataclass
class MSCConfig:
    """Everything needed to rebuild a model; saved as JSON next to the weights."""

    image_size: int = 64
    channels: int = 3
    patch_size: int = 4
    hidden_size: int = 192
    depth: int = 8
    num_heads: int = 6
    low_res_heads: int = 3  # heads given to the Low-Res branch; the rest are High-Res
    mlp_ratio: float = 4.0
    k_s: int = 7
    k_t: int = 3
    d: int = 2
    k_lo: int = 4
    low_res_factors: List[int] = field(default_factory=lambda: [2, 2, 2, 2, 4, 4, 4, 4])  # r_l per layer
    upsample: str = "nearest"  # Low-Res back to the full grid: "nearest" or "bilinear"
    attention: str = "msc"  # "msc", or "dense" for the frame-causal dense baseline
    rope_base: float = 100.0
    # what each frame's noise is centred on (msc.diffusion, PRIORS): "none" (plain rectified flow), "previous_frame" (the
    # last finished frame; the network learns the change, EDM-preconditioned), "flow" / "flow_splat" / "flow_splat_whole" /
    # "flow_splat_layered" (its optical-flow extrapolation; msc.flow.METHODS)
    # or "action_kernel" (a world model: the last frame through a learned kernel per action)
    prior: str = "none"
    residual_std: float = 0.2  # std of a frame's change from its anchor in the training mixture
    frame_std: float = 0.5  # std of frames, for frames that have no anchor
    noise_scale: float = 1.0  # std of the noise centred on an anchor (frames without one get unit noise)
    # action conditioning (a world model, msc.world): the number of discrete actions, one per frame (0: none). The
    # action that led to a frame is embedded and added to the frame's noise embedding before adaLN (as Oasis does);
    # frame-causal attention makes frame t depend on the actions of frames <= t only
    actions: int = 0
    # std of the action embedding at initialisation. world1's 0.02 (an embedding of norm ~0.2 beside noise
    # embeddings ~2 apart for levels 0.2 apart) left the actions unused after 600 steps: study world2 measures 0.2
    action_init_std: float = 0.02
    # the action_kernel prior's learned kernels (msc.diffusion.ActionKernels): their side in pixels, odd; a camera
    # step of up to (size - 1) / 2 pixels is one kernel
    action_kernel_size: int = 7
    # the action_kernel prior's anchor also keeps a learned share of each pixel as it was, per action and position (what
    # the camera does not move: the player's marker), ActionKernels' keep mask; False: the kernel alone everywhere
    action_keep_mask: bool = False
    # the action_kernel prior's anchors move each pixel by the kernel's largest tap only (one whole-pixel displacement
    # per action, learned: the kernels' regression still fits their softmax): an anchor without blur, which a rollout
    # would otherwise compound frame after frame. False: the softmax kernel itself (a blend of neighbours)
    action_kernel_hard: bool = False
    # what the action_kernel prior's anchor shows where the view moved in from beyond its edge (msc.diffusion.ActionKernels):
    # "replicate" repeats the edge pixels (a camera held on a key draws streaks), "circular" wraps the view around (the
    # opposite edge's texture: the view's colours and detail are kept, only their place is wrong). Either way the network
    # draws what the world shows there, which no anchor knows
    action_kernel_padding: str = "replicate"
    # the network also reads each frame's anchor (a prior's cheap prediction of the frame, msc.diffusion): a second patch
    # embedding, zero at initialisation (a model fine-tuned with it starts as the same function), added to the tokens of
    # the frames being denoised (msc.diffusion.network_anchor). False: the network sees its anchor only through the
    # unit noise centred on it, and the change it is trained to predict is relative to a frame it cannot see
    anchor_input: bool = False

    def __post_init__(self):
        self.low_res_factors = list(self.low_res_factors)
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} must be a multiple of patch_size {self.patch_size}.")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} must be a multiple of num_heads {self.num_heads}.")
        if self.attention not in ("msc", "dense"):
            raise ValueError(f"attention must be 'msc' or 'dense', got {self.attention!r}.")
        if self.prior not in PRIORS:
            raise ValueError(f"prior must be one of {PRIORS}, got {self.prior!r}.")
        if not (self.residual_std > 0 and self.frame_std > 0 and self.noise_scale > 0):
            raise ValueError("residual_std, frame_std and noise_scale must be positive.")
        if isinstance(self.actions, bool) or not isinstance(self.actions, int) or self.actions < 0:
            raise ValueError(f"actions must be a number of discrete actions >= 0, got {self.actions!r}.")
        if self.prior in KERNEL_PRIORS and not self.actions:
            raise ValueError(f"the {self.prior} prior learns a kernel per action: it needs actions > 0.")
        if self.action_kernel_padding not in ActionKernels.PADDINGS:
            raise ValueError(f"action_kernel_padding must be one of {ActionKernels.PADDINGS}, got {self.action_kernel_padding!r}.")
        if self.anchor_input and self.prior == "none":
            raise ValueError("anchor_input reads each frame's anchor: it needs a prior other than 'none'.")
        if self.upsample not in ("nearest", "bilinear"):
            raise ValueError(f"upsample must be 'nearest' or 'bilinear', got {self.upsample!r}.")
        if len(self.low_res_factors) != self.depth:
            raise ValueError(f"low_res_factors needs one factor per layer ({self.depth}), got {self.low_res_factors}.")
        if self.attention == "msc":
            if not 0 < self.low_res_heads < self.num_heads:
                raise ValueError(f"low_res_heads must be between 1 and num_heads - 1, got {self.low_res_heads}.")
            for r in self.low_res_factors:
                if r < 1 or self.grid % r:
                    raise ValueError(f"low-res factor {r} must divide the {self.grid} × {self.grid} token grid.")
        self.windows.check_fits(self.grid)

    @property
    def grid(self) -> int:
        """Tokens per side of a frame."""
        return self.image_size // self.patch_size

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def windows(self) -> AttentionWindows:
        return AttentionWindows(self.k_s, self.k_t, self.d, self.k_lo)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# One registry of named sizes (as DiT's ``DiT_models``): ``tiny`` for tests; ``compact`` is bundled (it
# learned more per CPU-minute than ``small`` in the recipe study, bench/results/recipes.md).
CONFIGS = {
    "tiny": dict(image_size=16, patch_size=2, hidden_size=48, depth=2, num_heads=4, low_res_heads=2,
                 k_s=3, k_t=2, d=2, k_lo=2, low_res_factors=[2, 4], mlp_ratio=2.0),
    "compact": dict(image_size=64, patch_size=4, hidden_size=128, depth=6, num_heads=4, low_res_heads=2,
                    low_res_factors=[2, 2, 2, 4, 4, 4]),
    "small": dict(image_size=64, patch_size=4, hidden_size=192, depth=8, num_heads=6, low_res_heads=3),
}


def config_from_name(name: str, **overrides) -> MSCConfig:
    if name not in CONFIGS:
        raise ValueError(f"unknown model size {name!r}; choose one of {sorted(CONFIGS)}.")
    return MSCConfig(**{**CONFIGS[name], **overrides})


# --------------------------------------------------------------------------------------------------
# KV cache (docs/design.md §4)
# --------------------------------------------------------------------------------------------------


class BranchCache:
    """Keys and values of one branch of one layer for the last ``keep`` committed frames
    (``keep=None`` keeps every frame: the dense baseline has no bounded window)."""

    def __init__(self, keep: Optional[int]):
        self.keep = keep
        self.k: Optional[torch.Tensor] = None  # [B, n, h, w, heads, D], rotary already applied
        self.v: Optional[torch.Tensor] = None

    @property
    def frames(self) -> int:
        return 0 if self.k is None else self.k.shape[1]

    def with_past(self, k: torch.Tensor, v: torch.Tensor, commit: bool = False):
        """Prepend the cached frames: ``(k_all, v_all, n_past)``. With ``commit`` the new frames
        are also kept, trimmed to the last ``keep`` frames."""
        n_past = self.frames
        if n_past:
            k, v = torch.cat([self.k, k], dim=1), torch.cat([self.v, v], dim=1)
        if commit:
            first = 0 if self.keep is None else max(0, k.shape[1] - self.keep)
            self.k, self.v = k[:, first:].detach(), v[:, first:].detach()
        return k, v, n_past


class KVCache:
    """Past frames' keys and values for every layer, bounded by the attention windows.

    Frame-level causality makes a frame's keys and values final once the frame is: they are
    computed once (``model(x, t, cache=cache, commit=True)``) and only the last window's worth is
    kept: ``k_t - 1`` frames for the High-Res branch and ``(k_lo - 1)·d`` for the Low-Res branch, so
    the cost of a new frame and the cache's memory do not grow with the video's length.
    """

    def __init__(self, config: "MSCConfig", windows: Optional[AttentionWindows] = None):
        self.windows = windows or config.windows
        keep_hi, keep_lo = (None, None) if config.attention == "dense" else self.windows.history()
        self.layers = [(BranchCache(keep_hi), BranchCache(keep_lo)) for _ in range(config.depth)]
        self.frames = 0  # frames committed so far: the absolute index of the next frame

    def memory_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for pair in self.layers for b in pair for t in (b.k, b.v) if t is not None)


# --------------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------------


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN modulation; ``x`` ``[B, T, h, w, D]``, ``shift``/``scale`` ``[B, T, D]`` per frame."""
    return x * (1 + scale[:, :, None, None]) + shift[:, :, None, None]


class TimestepEmbedder(nn.Module):
    """Noise level in [0, 1] -> ``[.., D]``: sinusoidal features of ``1000 t`` and an MLP (DiT)."""

    def __init__(self, hidden_size: int, frequency_size: int = 256):
        super().__init__()
        self.frequency_size = frequency_size
        self.mlp = nn.Sequential(nn.Linear(frequency_size, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.frequency_size // 2
        freqs = torch.exp(-math.log(10000) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
        args = 1000 * t.float()[..., None] * freqs  # [.., half]
        return self.mlp(torch.cat([torch.cos(args), torch.sin(args)], dim=-1))


def attention_in_float32(q, k, v, *args, **kwargs) -> torch.Tensor:
    """:func:`~msc.attention.neighborhood_attention`, in float32 under the CPU's bf16 autocast (``msc.train --bf16``):
    there the matmuls gain bf16's rate, but PyTorch's CPU flash attention runs its backward 2.7× slower in bf16 than in
    float32 (the world model's training step, bench.speed's profile). Elsewhere it is the call itself."""
    if q.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
        with torch.autocast("cpu", enabled=False):
            return neighborhood_attention(q.float(), k.float(), v.float(), *args, **kwargs)
    return neighborhood_attention(q, k, v, *args, **kwargs)


class MSCAttention(nn.Module):
    """MSC attention of one layer (or frame-causal dense attention for the baseline)."""

    def __init__(self, config: MSCConfig, low_res_factor: int):
        super().__init__()
        self.config = config
        self.r = low_res_factor
        hd = config.head_dim
        self.dense = config.attention == "dense"
        self.heads_lo = 0 if self.dense else config.low_res_heads
        self.heads_hi = config.num_heads - self.heads_lo
        c = config.hidden_size
        self.qkv_hi = nn.Linear(c, 3 * self.heads_hi * hd)
        self.qkv_lo = None if self.dense else nn.Linear(c, 3 * self.heads_lo * hd)
        # noise-gated branch weights: zero-initialised, so softmax starts at (1/2, 1/2)
        self.gate = None if self.dense else nn.Linear(c, 2)
        self.proj = nn.Linear(c, c)
        if self.gate is not None:
            nn.init.zeros_(self.gate.weight)
            nn.init.zeros_(self.gate.bias)

    def branch_weights(self, c: torch.Tensor) -> torch.Tensor:
        """``c`` ``[.., D]`` noise embedding -> ``[.., 2]`` weights of (High-Res, Low-Res)."""
        return torch.softmax(self.gate(F.silu(c)).float(), dim=-1).to(c.dtype)

    def _qkv(self, linear: nn.Linear, x: torch.Tensor, heads: int, first_frame: int, scale: int):
        b, t, h, w, _ = x.shape
        q, k, v = linear(x).view(b, t, h, w, 3, heads, self.config.head_dim).unbind(4)  # each [B, T, h, w, heads, hd]
        base = self.config.rope_base
        return apply_rotary(q, first_frame, scale, base), apply_rotary(k, first_frame, scale, base), v

    def forward(
        self, x: torch.Tensor, c: torch.Tensor, windows: AttentionWindows, cache=None, first_frame: int = 0, commit: bool = False
    ) -> torch.Tensor:
        """``x`` ``[B, T, h, w, D]`` (normalised, modulated), ``c`` ``[B, T, D]`` the frames' noise embedding (which
        gates the branches) -> ``[B, T, h, w, D]``.

        With ``cache`` (this layer's ``(High-Res, Low-Res)`` :class:`BranchCache` pair) the frames of
        ``x`` are frames ``first_frame ..`` of the video and attend the cached past as well;
        ``commit`` appends their keys and values to the cache.
        """
        b, t, h, w, _ = x.shape
        hi_cache, lo_cache = cache if cache is not None else (None, None)
        q, k, v = self._qkv(self.qkv_hi, x, self.heads_hi, first_frame, 1)
        if self.dense:  # frame-causal, global in space
            return self.proj(self._attend_dense(q, k, v, hi_cache, commit).reshape(b, t, h, w, -1))
        hi = self._attend(q, k, v, hi_cache, commit, (windows.k_t, windows.k_s, windows.k_s), 1)
        hi = hi.reshape(b, t, h, w, -1)  # [B, T, h, w, C_hi]

        r = self.r
        pooled = self._pool(x)  # [B, T, h/r, w/r, D]
        q, k, v = self._qkv(self.qkv_lo, pooled, self.heads_lo, first_frame, r)
        lo = self._attend(q, k, v, lo_cache, commit, (windows.k_lo, h // r, w // r), (windows.d, 1, 1))
        lo = self._upsample(lo.reshape(b, t, h // r, w // r, -1), h, w)  # [B, T, h, w, C_lo]

        g = self.branch_weights(c)[:, :, None, None, :]  # [B, T, 1, 1, 2]
        return self.proj(torch.cat([hi * g[..., :1], lo * g[..., 1:]], dim=-1))

    @staticmethod
    def _attend_dense(q, k, v, cache, commit):
        """Frame-causal global attention for the baseline. With a cache, each new frame attends the
        cached frames and the new frames up to itself, one unmasked SDPA call per new frame."""
        if cache is None:
            return attention_in_float32(q, k, v, (q.shape[1], q.shape[2], q.shape[3]), 1, (True, False, False))
        k_all, v_all, n_past = cache.with_past(k, v, commit)
        outs = []
        for i in range(q.shape[1]):
            o = F.scaled_dot_product_attention(to_heads_first(q[:, i : i + 1]), to_heads_first(k_all[:, : n_past + i + 1]),
                                               to_heads_first(v_all[:, : n_past + i + 1]))  # [B, H, h*w, D]
            outs.append(o.transpose(1, 2).reshape(q.shape[0], 1, *q.shape[2:4], q.shape[4], -1))
        return torch.cat(outs, dim=1)  # [B, T, h, w, H, D]

    @staticmethod
    def _attend(q, k, v, cache, commit, kernel_size, dilation):
        """Causal-in-time attention of the new frames over (cached past +) new frames.

        Cached frames only lend keys and values: their (placeholder) queries are not computed.
        """
        n_past = 0
        if cache is not None:
            k, v, n_past = cache.with_past(k, v, commit)
            if n_past:  # placeholders: only the new frames' queries are computed (query_start)
                q = torch.cat([q.new_zeros(q.shape[0], n_past, *q.shape[2:]), q], dim=1)
        return attention_in_float32(q, k, v, kernel_size, dilation, (True, False, False), query_start=n_past)

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, T, h, w, D]`` -> ``[B, T, h/r, w/r, D]``: the mean of every ``r × r`` block of tokens, as two sums over
        one axis each (a mean over two strided axes at once takes a slow reduction path on the CPU: 12-17× slower)."""
        b, t, h, w, d = x.shape
        r = self.r
        return x.view(b, t, h // r, r, w // r, r, d).sum(3).sum(4) * (1.0 / (r * r))

    def _upsample(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, t, hp, wp, ch = x.shape
        if self.config.upsample == "nearest":
            return x[:, :, :, None, :, None].expand(b, t, hp, self.r, wp, self.r, ch).reshape(b, t, h, w, ch)
        y = F.interpolate(x.reshape(b * t, hp, wp, ch).permute(0, 3, 1, 2), size=(h, w), mode="bilinear", align_corners=False)
        return y.permute(0, 2, 3, 1).reshape(b, t, h, w, ch)

    def commit_keys(self, x: torch.Tensor, cache, first_frame: int) -> None:
        """Only what the cache keeps of frames ``x`` ``[B, T, h, w, D]`` (normalised, modulated): each branch's keys
        and values, appended as :meth:`forward` with ``commit`` appends them, without attending."""
        hi_cache, lo_cache = cache
        _, k, v = self._qkv(self.qkv_hi, x, self.heads_hi, first_frame, 1)
        hi_cache.with_past(k, v, commit=True)
        if not self.dense:
            _, k, v = self._qkv(self.qkv_lo, self._pool(x), self.heads_lo, first_frame, self.r)
            lo_cache.with_past(k, v, commit=True)


class MSCBlock(nn.Module):
    """DiT block with adaLN-Zero, per-frame modulation, and MSC attention."""

    def __init__(self, config: MSCConfig, low_res_factor: int):
        super().__init__()
        c = config.hidden_size
        self.norm1 = nn.LayerNorm(c, elementwise_affine=False, eps=1e-6)
        self.attn = MSCAttention(config, low_res_factor)
        self.norm2 = nn.LayerNorm(c, elementwise_affine=False, eps=1e-6)
        hidden = int(c * config.mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(c, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, c))
        self.adaLN = nn.Sequential(nn.SiLU(), nn.Linear(c, 6 * c))
        nn.init.zeros_(self.adaLN[-1].weight)
        nn.init.zeros_(self.adaLN[-1].bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor, windows: AttentionWindows, cache=None, first_frame=0, commit=False,
                noise: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``c`` ``[B, T, D]`` conditions adaLN; ``noise`` (default ``c``) the frames' noise embedding, which alone gates
        the branches (with actions, ``c`` is the noise embedding plus the action's)."""
        shift1, scale1, gate1, shift2, scale2, gate2 = self.adaLN(c).chunk(6, dim=-1)  # each [B, T, D]
        attn = self.attn(modulate(self.norm1(x), shift1, scale1), c if noise is None else noise, windows, cache, first_frame, commit)
        x = x + gate1[:, :, None, None] * attn
        x = x + gate2[:, :, None, None] * self.mlp(modulate(self.norm2(x), shift2, scale2))
        return x

    def commit_keys(self, x: torch.Tensor, c: torch.Tensor, cache, first_frame: int) -> None:
        """The block's keys and values of ``x`` into ``cache`` (:meth:`MSCAttention.commit_keys`), nothing else."""
        shift1, scale1 = self.adaLN(c).chunk(6, dim=-1)[:2]
        self.attn.commit_keys(modulate(self.norm1(x), shift1, scale1), cache, first_frame)


class FinalLayer(nn.Module):
    def __init__(self, config: MSCConfig):
        super().__init__()
        c = config.hidden_size
        self.norm = nn.LayerNorm(c, elementwise_affine=False, eps=1e-6)
        self.adaLN = nn.Sequential(nn.SiLU(), nn.Linear(c, 2 * c))
        self.linear = nn.Linear(c, config.patch_size**2 * config.channels)
        for layer in (self.adaLN[-1], self.linear):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN(c).chunk(2, dim=-1)
        return self.linear(modulate(self.norm(x), shift, scale))


# --------------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------------


class MSCModel(nn.Module, PyTorchModelHubMixin):
    """MSC video diffusion transformer: the raw network. ``model(x, t)`` is its output for every frame (``t`` one noise
    level per frame); :class:`msc.diffusion.Denoiser` turns it into the rectified-flow velocity."""

    # parameters a config option adds (action_keep_mask, anchor_input): weights trained without them may start such a
    # model, where they keep their initial values (msc.train's --init-from)
    OPTIONAL_PARAMETERS = ("action_kernels.keep", "anchor_embed.weight")

    def __init__(self, config: MSCConfig = None, **kwargs):
        super().__init__()
        if config is None:
            config = MSCConfig(**kwargs)
        elif isinstance(config, dict):
            config = MSCConfig(**config)
        self.config = config
        c, p = config.hidden_size, config.patch_size
        self.patch_embed = nn.Linear(config.channels * p * p, c)
        # linear in the anchor (no bias): a frame that reads no anchor (zeros) gets nothing added, as one given none
        self.anchor_embed = nn.Linear(config.channels * p * p, c, bias=False) if config.anchor_input else None
        if self.anchor_embed is not None:  # zero: it adds nothing until trained (_init_weights leaves zero weights)
            nn.init.zeros_(self.anchor_embed.weight)
        self.t_embed = TimestepEmbedder(c)
        self.action_embed = nn.Embedding(config.actions, c) if config.actions else None
        self.action_kernels = (ActionKernels(config.actions, config.action_kernel_size,
                                             config.image_size if config.action_keep_mask else None,
                                             hard=config.action_kernel_hard, padding=config.action_kernel_padding)
                               if config.prior in KERNEL_PRIORS else None)  # the anchor's learned predictor
        self.blocks = nn.ModuleList(MSCBlock(config, r) for r in config.low_res_factors)
        self.final = FinalLayer(config)
        self._init_weights()

    def _init_weights(self):
        for module in self.modules():
            if isinstance(module, nn.Linear) and module.weight.abs().sum() > 0:
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.normal_(self.t_embed.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embed.mlp[2].weight, std=0.02)
        if self.action_embed is not None:
            nn.init.normal_(self.action_embed.weight, std=self.config.action_init_std)

    # ---------------------------------------------------------------- I/O

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """Load from a local folder (``config.json`` + ``model.safetensors``) or a hub repo id.

        A path that exists is used as a folder; a missing folder with path separators is reported
        as missing instead of being sent to the hub as a repo id.
        """
        path = str(pretrained_model_name_or_path)
        local = os.path.abspath(os.path.expanduser(path))
        if os.path.isdir(local):
            for name in ("config.json", "model.safetensors"):
                if not os.path.isfile(os.path.join(local, name)):
                    raise FileNotFoundError(f"{name} is missing from the weights folder {local}.")
            path = local
        elif os.path.exists(local) or path.startswith((".", "/", "~")) or path.count("/") > 1 or os.sep + os.sep in path:
            raise FileNotFoundError(f"weights folder {local} does not exist.")
        return super().from_pretrained(path, **kwargs)

    # ---------------------------------------------------------------- forward

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, T, C, H, W]`` -> ``[B, T, h, w, C*p*p]``."""
        b, t, ch, hgt, wid = x.shape
        p = self.config.patch_size
        x = x.view(b, t, ch, hgt // p, p, wid // p, p).permute(0, 1, 3, 5, 2, 4, 6)
        return x.reshape(b, t, hgt // p, wid // p, ch * p * p)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, T, h, w, C*p*p]`` -> ``[B, T, C, H, W]``."""
        b, t, h, w, _ = x.shape
        p, ch = self.config.patch_size, self.config.channels
        x = x.view(b, t, h, w, ch, p, p).permute(0, 1, 4, 2, 5, 3, 6)
        return x.reshape(b, t, ch, h * p, w * p)

    def check_inputs(self, x: torch.Tensor, t: torch.Tensor) -> None:
        cfg = self.config
        expected = (cfg.channels, cfg.image_size, cfg.image_size)
        if x.dim() != 5 or tuple(x.shape[2:]) != expected:
            raise ValueError(f"x must be [B, T, {expected[0]}, {expected[1]}, {expected[2]}], got {tuple(x.shape)}.")
        if t.shape != x.shape[:2]:
            raise ValueError(f"t must hold one noise level per frame, shape {tuple(x.shape[:2])}, got {tuple(t.shape)}.")

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        windows: Optional[AttentionWindows] = None,
        cache: Optional[KVCache] = None,
        commit: bool = False,
        actions: Optional[torch.Tensor] = None,
        anchor: Optional[torch.Tensor] = None,
        keys_only: bool = False,
    ) -> Optional[torch.Tensor]:
        """``x`` ``[B, T, C, H, W]`` noisy frames, ``t`` ``[B, T]`` noise levels -> the network's raw output, same shape
        as ``x``: the velocity itself without a prior; with one, :class:`msc.diffusion.Denoiser` preconditions it
        around the frames' anchors.
        ``actions`` ``[B, T]`` long: the action that led to each frame (a model with ``config.actions``; required there).
        ``anchor`` ``[B, T, C, H, W]``: what the network reads of each frame's anchor (a model with
        ``config.anchor_input``; zeros where a frame reads none, :func:`msc.diffusion.network_anchor`; ``None``: none).

        ``windows`` overrides the attention windows of the config (sampling-time settings). With a
        :class:`KVCache`, ``x`` holds the frames that follow the cached ones; ``commit=True`` adds
        their keys and values to the cache (do it once per frame, with the frame in its final state); with
        ``keys_only`` too, nothing else is computed (the last block stops at its keys and values, a sixth of the
        model's blocks less) and ``None`` is returned: the sampler's commit of finished frames, whose outputs it drops.

        """
        self.check_inputs(x, t)
        if keys_only and (cache is None or not commit):
            raise ValueError("keys_only computes what a commit to a KV cache keeps: pass cache= and commit=True.")
        if cache is not None:
            if windows is not None and windows != cache.windows:
                raise ValueError("the windows differ from the ones the KV cache was built with; start a new cache.")
            windows = cache.windows
        windows = windows or self.config.windows  # checked where they were made (the kernels check their own inputs)
        first_frame = cache.frames if cache is not None else 0
        tokens = self.patch_embed(self.patchify(x))  # [B, T, h, w, D]
        if anchor is not None:
            if self.anchor_embed is None:
                raise ValueError("this model reads no anchors (config.anchor_input is false).")
            if anchor.shape != x.shape:
                raise ValueError(f"anchor must have the shape of x, {tuple(x.shape)}, got {tuple(anchor.shape)}.")
            tokens = tokens + self.anchor_embed(self.patchify(anchor))  # [B, T, h, w, D]
        noise = self.t_embed(t)  # [B, T, D]
        c = noise + self.embed_actions(actions, t.shape)  # [B, T, D]
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            layer_cache = cache.layers[i] if cache is not None else None
            if keys_only and i == last:
                block.commit_keys(tokens, c, layer_cache, first_frame)
            else:
                tokens = block(tokens, c, windows, layer_cache, first_frame, commit, noise)
        if cache is not None and commit:
            cache.frames += x.shape[1]
        return None if keys_only else self.unpatchify(self.final(tokens, c))  # [B, T, C, H, W]

    def embed_actions(self, actions: Optional[torch.Tensor], shape) -> torch.Tensor | float:
        """``[B, T, D]`` embedding of the frames' actions (0 for a model without actions), checked by
        :meth:`check_actions`."""
        self.check_actions(actions, shape)
        return 0.0 if self.action_embed is None else self.action_embed(actions)

    def check_actions(self, actions: Optional[torch.Tensor], shape) -> None:
        """``ValueError`` when a model with actions gets none for the ``shape`` ``[B, T]`` of frames, or one without gets
        some, or an action is out of range."""
        if self.action_embed is None:
            if actions is not None:
                raise ValueError("this model takes no actions (config.actions is 0).")
            return
        if actions is None:
            raise ValueError(f"this model is conditioned on actions: pass actions [B, T] of {self.config.actions} choices.")
        if tuple(actions.shape) != tuple(shape) or actions.dtype != torch.long:
            raise ValueError(f"actions must be a long tensor of shape {tuple(shape)} (one per frame), got "
                             f"{actions.dtype} {tuple(actions.shape)}.")
        if actions.numel() and (int(actions.min()) < 0 or int(actions.max()) >= self.config.actions):
            raise ValueError(f"actions must lie in 0..{self.config.actions - 1}, got {actions.unique().tolist()}.")

    @torch.no_grad()
    def gates(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` ``[N]`` noise levels -> ``[N, depth, 2]`` branch weights (High-Res, Low-Res).

        The dense baseline has no branches and reports ``(1, 0)``.
        """
        t = torch.as_tensor(t, dtype=torch.float32, device=self.patch_embed.weight.device).reshape(-1)
        if self.config.attention == "dense":
            out = torch.zeros(t.numel(), self.config.depth, 2, device=t.device)
            out[..., 0] = 1
            return out
        c = self.t_embed(t)  # [N, D]
        return torch.stack([block.attn.branch_weights(c) for block in self.blocks], dim=1)
