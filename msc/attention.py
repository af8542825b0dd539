"""Exact 3-D neighborhood attention with NATTEN's ``na3d`` semantics (docs/design.md §3).

One public function, :func:`neighborhood_attention`, with NATTEN's layout ``[B, T, H, W, heads, D]``
and stride 1. Every query attends to a window of keys chosen per axis:

* **non-causal axis** (NATTEN's border rule): the window of ``k`` positions is centred on the query
  (``k // 2`` to the left, ``k // 2 - 1 + k % 2`` to the right, so even kernels lean left) and
  shifted to stay inside the axis; ``k`` equal to the extent is global attention;
* **causal axis**: the query and the ``k - 1`` positions before it, cut at 0 (NATTEN raises when
  ``k`` exceeds the extent; we cut, because the first frames of every generation need it, §3);
* **dilation** ``d``: the axis is split into ``d`` interleaved groups (``i mod d``) and the rules
  above apply inside each group, exactly as NATTEN's dilated neighborhood attention
  (Hassani & Shi, "Dilated Neighborhood Attention Transformer", 2022).

Backends (``backend=``):

* ``"reference"``: dense SDPA over all tokens with an explicit boolean mask. Obviously right, slow;
  tests only.
* ``"torch"``: the fast exact CPU kernel. Queries are cut into tiles; each tile gathers the halo of
  keys that covers the windows of all its queries (at most ``tile + k - 1`` per axis), and one
  batched SDPA call runs every tile with its exact mask. Dilation is handled by running each
  dilation group as its own undilated problem. Forward and backward (plain autograd).
* ``"natten"``: NATTEN's fused kernels (needs ``natten.HAS_LIBNATTEN`` and CUDA tensors).
* ``"auto"``: NATTEN where it is fused, else the cheaper of ``torch`` and dense-with-mask by a cost
  model calibrated in ``bench/attention.py``.

All per-axis windows come from one function, :func:`axis_window_mask`; the tests compare both of our
backends against NATTEN's own output, which shares no code with this module.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Sequence, Tuple, Union

import torch
import torch.nn.functional as F

IntOr3 = Union[int, Sequence[int]]
BoolOr3 = Union[bool, Sequence[bool]]

BACKENDS = ("auto", "torch", "reference", "natten")

# Queries per tile of the ``torch`` backend: one frame per tile keeps the causal halo at ``k_t`` frames, and 64
# queries give SDPA matrices large enough to be efficient (:func:`query_tile` picks their shape per grid).
TILE_QUERIES = 64

# ``auto`` uses the tiled kernel when (keys it visits) * TILED_OVERHEAD < (keys dense visits).
# The tiled path pays for the halo gather and the output scatter; measured crossover (bench).
TILED_OVERHEAD = 2.0


# --------------------------------------------------------------------------------------------------
# Argument handling
# --------------------------------------------------------------------------------------------------


def _triple(value, name: str, kind) -> Tuple:
    if isinstance(value, (list, tuple)):
        if len(value) != 3:
            raise ValueError(f"{name} must be one value or three (T, H, W), got {tuple(value)}.")
        out = tuple(value)
    else:
        out = (value,) * 3
    for v in out:
        if kind is int and (isinstance(v, bool) or not isinstance(v, int)):
            raise ValueError(f"{name} must hold integers, got {out}.")
        if kind is bool and not isinstance(v, bool):
            raise ValueError(f"{name} must hold booleans, got {out}.")
    return out


@dataclass(frozen=True)
class WindowSpec:
    """Validated window settings for a ``[T, H, W]`` token grid."""

    shape: Tuple[int, int, int]
    kernel_size: Tuple[int, int, int]
    dilation: Tuple[int, int, int]
    is_causal: Tuple[bool, bool, bool]

    @property
    def keys_per_query(self) -> int:
        """Upper bound of keys one query sees (causal windows cut at 0 see fewer)."""
        return math.prod(min(k, math.ceil(n / d)) for n, k, d in zip(self.shape, self.kernel_size, self.dilation))


def check_arguments(q, k, v, kernel_size, dilation, is_causal) -> WindowSpec:
    """Validate inputs and window settings; raise ``ValueError`` with a sentence a user understands."""
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}.")
        if x.dim() != 6:
            raise ValueError(
                f"{name} must have 6 dimensions [B, T, H, W, heads, D], got shape {tuple(x.shape)}."
            )
    if q.shape != k.shape or k.shape[:-1] != v.shape[:-1]:
        raise ValueError(
            f"q, k and v must agree in shape [B, T, H, W, heads, D] (v may differ in D), got "
            f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}."
        )
    if not (q.dtype == k.dtype == v.dtype) or not q.is_floating_point():
        raise ValueError(f"q, k and v must share one floating dtype, got {q.dtype}, {k.dtype}, {v.dtype}.")
    if q.numel() == 0:
        raise ValueError(f"q, k and v must not be empty, got shape {tuple(q.shape)}.")
    kernel_size = _triple(kernel_size, "kernel_size", int)
    dilation = _triple(dilation, "dilation", int)
    is_causal = _triple(is_causal, "is_causal", bool)
    shape = tuple(q.shape[1:4])
    for axis, n, ks, dil, causal in zip("THW", shape, kernel_size, dilation, is_causal):
        if ks < 1:
            raise ValueError(f"kernel_size along {axis} must be >= 1, got {ks}.")
        if dil < 1:
            raise ValueError(f"dilation along {axis} must be >= 1, got {dil}.")
        if not causal and ks * dil > n:
            raise ValueError(
                f"kernel_size * dilation along {axis} is {ks} * {dil} = {ks * dil}, larger than the "
                f"{n} tokens on that axis; use a kernel of at most {max(n // dil, 1)} "
                f"(a kernel equal to the extent means global attention)."
            )
    return WindowSpec(shape, kernel_size, dilation, is_causal)


# --------------------------------------------------------------------------------------------------
# Window definition: the single source of truth for both backends
# --------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=256)
def axis_window_mask(length: int, kernel: int, dilation: int, causal: bool) -> torch.Tensor:
    """``[length, length]`` bool: ``mask[i, j]`` is True when key ``j`` is in query ``i``'s window.

    NATTEN's rule along one axis (see the module docstring). Cached: windows are tiny and reused.
    """
    idx = torch.arange(length)
    group = idx % dilation  # dilation group of every position
    pos = idx // dilation  # position inside its group
    group_len = (length - group + dilation - 1) // dilation  # [length] size of each query's group
    same_group = group[:, None] == group[None, :]
    qi, kj = pos[:, None], pos[None, :]
    if causal:
        in_window = (kj <= qi) & (kj > qi - kernel)
    else:
        start = (pos - kernel // 2).clamp(min=0)
        start = torch.minimum(start, group_len - kernel)[:, None]  # shift to stay inside the axis
        in_window = (kj >= start) & (kj < start + kernel)
    return same_group & in_window


def dense_window_mask(spec: WindowSpec) -> torch.Tensor:
    """``[N, N]`` bool mask over all ``N = T*H*W`` tokens (row-major T, H, W): the AND of axis masks."""
    return _dense_window_mask(spec.shape, spec.kernel_size, spec.dilation, spec.is_causal)


@functools.lru_cache(maxsize=32)
def _dense_window_mask(shape, kernel_size, dilation, is_causal) -> torch.Tensor:
    mt, mh, mw = (axis_window_mask(*args) for args in zip(shape, kernel_size, dilation, is_causal))
    mask = mt[:, None, None, :, None, None] & mh[None, :, None, None, :, None] & mw[None, None, :, None, None, :]
    n = math.prod(shape)
    return mask.reshape(n, n)  # [T*H*W, T*H*W]


# --------------------------------------------------------------------------------------------------
# Backends
# --------------------------------------------------------------------------------------------------


def to_heads_first(x: torch.Tensor) -> torch.Tensor:
    """``[B, T, H, W, heads, D]`` -> ``[B, heads, T*H*W, D]``."""
    b, t, h, w, nh, d = x.shape
    return x.reshape(b, t * h * w, nh, d).transpose(1, 2)


@functools.lru_cache(maxsize=4)  # 64 MB each at 4k tokens
def _dense_bias(spec: WindowSpec, dtype, device) -> torch.Tensor:
    """``[1, 1, N, N]`` additive mask (0 inside the window, -inf outside): a 4-D float mask keeps
    PyTorch's fused CPU flash kernel, where a boolean one falls back to the unfused math path."""
    mask = dense_window_mask(spec)
    return torch.zeros(mask.shape, dtype=dtype).masked_fill_(~mask, float("-inf"))[None, None].to(device)


def _reference(q, k, v, spec: WindowSpec, scale: float, query_start: int = 0) -> torch.Tensor:
    """Dense attention under the window mask; only the queries of frames ``query_start ..`` (their rows of the mask)."""
    b, t, h, w, nh, _ = q.shape
    bias = _dense_bias(spec, q.dtype, q.device)[:, :, query_start * h * w:]  # [1, 1, N_new, N]
    out = F.scaled_dot_product_attention(
        to_heads_first(q[:, query_start:]), to_heads_first(k), to_heads_first(v), attn_mask=bias, scale=scale
    )  # [B, heads, N_new, Dv]
    return out.transpose(1, 2).reshape(b, t - query_start, h, w, nh, v.shape[-1])


@dataclass(frozen=True, eq=False)  # identity hash: instances come from a cache
class _AxisTiling:
    """How one undilated axis is cut into query tiles and key halos (index tensors are long)."""

    n_tiles: int
    tile: int  # queries per tile
    halo: int  # keys gathered per tile
    query_pos: torch.Tensor  # [n_tiles, tile] position of every tile query (last tile overlaps)
    key_pos: torch.Tensor  # [n_tiles, halo] position of every gathered key
    tile_of: torch.Tensor  # [length] the tile whose output each position is read from
    offset: torch.Tensor  # [length] the position's place inside that tile
    mask: torch.Tensor  # [n_tiles, tile, halo] bool


@functools.lru_cache(maxsize=256)
def _axis_tiling(length: int, kernel: int, causal: bool, tile: int) -> _AxisTiling:
    """Cut an undilated axis into query tiles; the last tile is moved back to end at ``length``.

    A tile's halo starts at its first query's window start: window starts never decrease and grow
    by at most one per query, so ``tile + kernel - 1`` keys cover every window of the tile.
    """
    tile = min(tile, length)
    halo = min(length, tile + kernel - 1)
    n_tiles = math.ceil(length / tile)
    q_start = torch.clamp(torch.arange(n_tiles) * tile, max=length - tile)  # [n_tiles]
    window = axis_window_mask(length, kernel, 1, causal)  # [length, length]
    first_key = window.int().argmax(dim=1)  # first key of every query's window
    h_start = torch.clamp(first_key[q_start], max=length - halo)  # [n_tiles]
    query_pos = q_start[:, None] + torch.arange(tile)  # [n_tiles, tile]
    key_pos = h_start[:, None] + torch.arange(halo)  # [n_tiles, halo]
    mask = window[query_pos[:, :, None], key_pos[:, None, :]]  # [n_tiles, tile, halo]
    if int(mask.sum()) != int(window[query_pos.flatten()].sum()):
        raise AssertionError("internal error: a tile's halo misses keys of its windows")
    pos = torch.arange(length)
    tile_of = torch.clamp(pos // tile, max=n_tiles - 1)
    return _AxisTiling(n_tiles, tile, halo, query_pos, key_pos, tile_of, pos - q_start[tile_of], mask)


def _flat_tile_index(shape, positions) -> torch.Tensor:
    """Row-major token index of every (tile, token-in-tile), tiles outermost.

    ``positions[a]``: ``[n_a, s_a]`` positions along axis ``a``. Returns ``[nT*nH*nW * sT*sH*sW]``.
    """
    (pt, ph, pw), (_, h, w) = positions, shape
    idx = (
        pt[:, None, None, :, None, None] * (h * w)
        + ph[None, :, None, None, :, None] * w
        + pw[None, None, :, None, None, :]
    )  # [nT, nH, nW, sT, sH, sW]
    return idx.flatten()


@dataclass(frozen=True, eq=False)
class _Tiling:
    """Everything the tiled kernel needs for one grid and window, built once and cached."""

    n_tiles: int
    query_index: torch.Tensor  # [n_tiles * q_per_tile] flat token index of every tile query
    key_index: torch.Tensor  # [n_tiles * k_per_tile] flat token index of every halo key
    unscatter: torch.Tensor  # [T*H*W] row of every token in the tiled output
    bias: torch.Tensor  # [n_tiles, 1, q_per_tile, k_per_tile] 0 inside the window, -inf outside


@functools.lru_cache(maxsize=16)  # a 16k-token grid holds ~40 MB of bias
def _tiling(shape, kernel_size, is_causal, tile, dtype, device) -> _Tiling:
    axes = [_axis_tiling(n, ks, c, tl) for n, ks, c, tl in zip(shape, kernel_size, is_causal, tile)]
    (mt, mh, mw) = (a.mask for a in axes)
    mask = (
        mt[:, None, None, :, None, None, :, None, None]
        & mh[None, :, None, None, :, None, None, :, None]
        & mw[None, None, :, None, None, :, None, None, :]
    )  # [nT, nH, nW, tT, tH, tW, hT, hH, hW]
    n_tiles = axes[0].n_tiles * axes[1].n_tiles * axes[2].n_tiles
    q_per_tile = axes[0].tile * axes[1].tile * axes[2].tile
    bias = torch.zeros(mask.shape, dtype=dtype).masked_fill_(~mask, float("-inf"))
    bias = bias.reshape(n_tiles, 1, q_per_tile, -1)
    (at, ah, aw) = axes
    tile_row = (at.tile_of[:, None, None] * ah.n_tiles + ah.tile_of[None, :, None]) * aw.n_tiles + aw.tile_of
    in_tile = (at.offset[:, None, None] * ah.tile + ah.offset[None, :, None]) * aw.tile + aw.offset
    unscatter = (tile_row * q_per_tile + in_tile).flatten()  # [T*H*W]
    return _Tiling(
        n_tiles,
        _flat_tile_index(shape, [a.query_pos for a in axes]).to(device),
        _flat_tile_index(shape, [a.key_pos for a in axes]).to(device),
        unscatter.to(device),
        bias.to(device),
    )


def _tiled_undilated(q, k, v, kernel_size, is_causal, scale, tile, query_start: int = 0) -> torch.Tensor:
    """The ``torch`` backend for dilation 1: tiles of queries against their key halos. ``query_start``: only the
    query frames from it on are computed (their tiles; one frame per tile along T), ``[B, T - query_start, ...]``."""
    b, t, h, w, nh, d = q.shape
    dv = v.shape[-1]
    tiling = _tiling((t, h, w), kernel_size, is_causal, tile, q.dtype, q.device)
    if query_start:
        if tile[0] != 1:  # tiles span frames: compute every query, keep the later frames
            return _tiled_undilated(q, k, v, kernel_size, is_causal, scale, tile)[:, query_start:]
        tiling = _later_frames(tiling, query_start, h * w)

    def gather(x, index):  # [B, T, H, W, heads, D] -> [n_tiles, B*heads, tokens per tile, D]
        # Token-major rows (B*heads*D contiguous values each) make the gather a row copy.
        rows = x.reshape(b, t * h * w, nh * x.shape[-1]).transpose(0, 1).reshape(t * h * w, -1)
        tiles = rows.index_select(0, index).view(tiling.n_tiles, -1, b * nh, x.shape[-1])
        return tiles.transpose(1, 2)  # strided view; SDPA reads it in place

    out = F.scaled_dot_product_attention(
        gather(q, tiling.query_index),
        gather(k, tiling.key_index),
        gather(v, tiling.key_index),
        attn_mask=tiling.bias,
        scale=scale,
    )  # [n_tiles, B*heads, q_per_tile, Dv]
    out = out.transpose(1, 2).reshape(-1, b, nh, dv).index_select(0, tiling.unscatter)  # [N, B, heads, Dv]
    return out.view(t - query_start, h, w, b, nh, dv).permute(3, 0, 1, 2, 4, 5)  # [B, T - query_start, H, W, heads, Dv]


def _later_frames(tiling: _Tiling, first: int, frame_tokens: int) -> _Tiling:
    """The part of a tiling (one frame per tile along T, frames outermost) that computes frames ``first ..``."""
    tiles_per_frame = tiling.n_tiles // (tiling.unscatter.numel() // frame_tokens)
    q_per_tile = tiling.bias.shape[2]
    k_per_tile = tiling.key_index.numel() // tiling.n_tiles
    skip = first * tiles_per_frame
    return _Tiling(tiling.n_tiles - skip, tiling.query_index[skip * q_per_tile:], tiling.key_index[skip * k_per_tile:],
                   tiling.unscatter[first * frame_tokens:] - skip * q_per_tile, tiling.bias[skip:])


def _dilation_groups(spec: WindowSpec):
    """Yield the slices of every dilation group: each group is an undilated sub-grid."""
    dt, dh, dw = spec.dilation
    for gt in range(dt):
        for gh in range(dh):
            for gw in range(dw):
                yield (slice(None), slice(gt, None, dt), slice(gh, None, dh), slice(gw, None, dw))


@functools.lru_cache(maxsize=256)
def query_tile(spec: WindowSpec) -> Tuple[int, int, int]:
    """The ``torch`` backend's query tile (T, H, W) for ``spec``: one frame, and of the spatial shapes of
    :data:`TILE_QUERIES` queries (the whole frame when it has fewer) the one whose halos hold the fewest keys, the wider
    on a tie (its rows are longer runs of the gather). On the bundled model's 16 x 16 tokens and 7 x 7 window that is
    4 x 16, whose halo spans the whole width: 160 keys a frame where 8 x 8 tiles gather 196, 25-30 % less attention
    time on a 2-core CPU (measured with the model's own shapes in sampling and training)."""
    h, w = (-(-n // d) for n, d in zip(spec.shape[1:], spec.dilation[1:]))  # a dilation group's grid
    (kh, kw), (ch, cw) = spec.kernel_size[1:], spec.is_causal[1:]
    best = None
    for tw in (2**i for i in range(TILE_QUERIES.bit_length())):
        th, tw = min(h, TILE_QUERIES // tw), min(w, tw)
        a, b = _axis_tiling(h, kh, ch, th), _axis_tiling(w, kw, cw, tw)
        rank = (-th * tw, a.n_tiles * a.tile * a.halo * b.n_tiles * b.tile * b.halo, -tw)  # most queries, fewest pairs
        if best is None or rank < best[0]:
            best = rank, (1, th, tw)
    return best[1]


def _tiled(q, k, v, spec: WindowSpec, scale: float, tile=None, query_start: int = 0) -> torch.Tensor:
    tile = tile or query_tile(spec)
    if spec.dilation == (1, 1, 1):
        return _tiled_undilated(q, k, v, spec.kernel_size, spec.is_causal, scale, tile, query_start)
    out = q.new_empty(*q.shape[:5], v.shape[-1])
    dt = spec.dilation[0]
    for sl in _dilation_groups(spec):
        if out[sl].numel() == 0:  # a dilation larger than the axis leaves some groups empty
            continue
        g = sl[1].start  # the group's first frame: its frames are g, g + dt, ...
        first = max(0, -(-(query_start - g) // dt))  # the group's first frame at or after query_start
        frames = out[sl].shape[1]
        if first >= frames:
            continue
        later = (slice(None), slice(g + first * dt, None, dt), sl[2], sl[3])
        out[later] = _tiled_undilated(q[sl], k[sl], v[sl], spec.kernel_size, spec.is_causal, scale, tile, first)
    return out[:, query_start:]


def _natten_available(q: torch.Tensor) -> bool:
    if not q.is_cuda:
        return False
    try:
        import natten
    except ImportError:
        return False
    return bool(getattr(natten, "HAS_LIBNATTEN", False))


def _natten(q, k, v, spec: WindowSpec, scale: float) -> torch.Tensor:
    import natten

    return natten.na3d(
        q, k, v, kernel_size=spec.kernel_size, dilation=spec.dilation, is_causal=spec.is_causal, scale=scale
    )


def tiled_pairs(spec: WindowSpec, tile=None) -> int:
    """(query, key) pairs the ``torch`` backend scores: every tile (``None``: :func:`query_tile`'s) against its whole
    halo, summed over dilation groups. Used by ``auto``'s cost model and by :mod:`msc.complexity`."""
    tile = tile or query_tile(spec)
    per_axis = []
    for n, ks, d, c, tl in zip(spec.shape, spec.kernel_size, spec.dilation, spec.is_causal, tile):
        groups = [(n - g + d - 1) // d for g in range(min(d, n))]  # length of every non-empty dilation group
        per_axis.append(sum(a.n_tiles * a.tile * a.halo for a in (_axis_tiling(lg, ks, c, tl) for lg in groups)))
    return math.prod(per_axis)


def choose_backend_for_spec(spec: WindowSpec) -> str:
    """The cheaper exact CPU backend: tiled unless its halo work is near dense work (cost model)."""
    n = math.prod(spec.shape)
    return "torch" if tiled_pairs(spec) * TILED_OVERHEAD < n * n else "reference"


def choose_backend(q: torch.Tensor, spec: WindowSpec) -> str:
    """What ``backend="auto"`` runs for these inputs."""
    natten_accepts = all(not c or k <= n for c, k, n in zip(spec.is_causal, spec.kernel_size, spec.shape))
    if natten_accepts and _natten_available(q):
        return "natten"
    return choose_backend_for_spec(spec)


def neighborhood_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    kernel_size: IntOr3,
    dilation: IntOr3 = 1,
    is_causal: BoolOr3 = False,
    backend: str = "auto",
    scale: float | None = None,
    query_start: int = 0,
) -> torch.Tensor:
    """3-D neighborhood attention, NATTEN ``na3d`` semantics, layout ``[B, T, H, W, heads, D]``.

    Args:
        q, k, v: ``[B, T, H, W, heads, D]`` (``v`` may have another ``D``).
        kernel_size: window per axis (T, H, W), one int for all three.
        dilation: dilation per axis.
        is_causal: causal flag per axis; a causal window longer than the axis is cut at 0.
        backend: ``"auto"``, ``"torch"``, ``"reference"`` or ``"natten"`` (see the module docstring).
        scale: softmax scale, ``D ** -0.5`` by default.
        query_start: only the outputs of frames ``query_start ..`` are wanted (earlier frames only lend keys and
            values, as cached frames do in sampling); the ``torch`` and ``reference`` backends skip their queries' work.

    Returns:
        ``[B, T - query_start, H, W, heads, Dv]``.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}.")
    spec = check_arguments(q, k, v, kernel_size, dilation, is_causal)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    if backend == "auto":
        backend = choose_backend(q, spec)
    if not (isinstance(query_start, int) and 0 <= query_start < q.shape[1]):
        raise ValueError(f"query_start must be a frame index in 0..{q.shape[1] - 1}, got {query_start!r}.")
    if backend == "reference":
        return _reference(q, k, v, spec, scale, query_start)
    if backend == "torch":
        return _tiled(q, k, v, spec, scale, query_start=query_start)
    if not _natten_available(q):
        raise ValueError(
            "backend='natten' needs CUDA tensors and a NATTEN build with its compiled library "
            "(natten.HAS_LIBNATTEN); use backend='torch' on this machine."
        )
    return _natten(q, k, v, spec, scale)[:, query_start:]
