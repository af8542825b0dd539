"""Attention cost: the paper's estimates (Sec. 3.2) beside exact counts of what we compute.

The paper's formulas, as printed (``b`` batch, ``s`` tokens, ``h`` hidden size, ``w`` spatial
window, ``v`` temporal window, ``r`` down factor, ``d`` temporal stride):

* dense attention: ``8bsh² + 2bs²h`` (QKV and output projections, scores and weighted sum);
* High-Res branch (``h/2`` channels): ``2bsh² + bs²h / (2w²v)``;
* Low-Res branch (``h/2`` channels): ``2bsh²/r² + bs²h / (2r²d)``.

These are estimates, and their attention terms divide ``s²`` by the window size rather than
replacing one ``s`` by it, so they are not the cost of a windowed attention. The exact counts below
are multiply-accumulates (MACs) and follow the real window of every query, the Low-Res branch
pooling by ``r`` in both spatial axes, and what our tiled kernel actually scores (its halo of keys,
masked entries included), so the app and the docs can show all three side by side.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, asdict
from typing import Dict, Tuple

from msc.attention import WindowSpec, axis_window_mask, choose_backend_for_spec, tiled_pairs


# --------------------------------------------------------------------------------------------------
# The paper's formulas (Sec. 3.2), verbatim
# --------------------------------------------------------------------------------------------------


def paper_dense(b: int, s: int, h: int) -> float:
    """Dense attention: ``8bsh² + 2bs²h``."""
    return 8 * b * s * h**2 + 2 * b * s**2 * h


def paper_high_res(b: int, s: int, h: int, w: int, v: int) -> float:
    """High-Res branch with ``h/2`` channels: ``2bsh² + bs²h / (2w²v)``."""
    return 2 * b * s * h**2 + b * s**2 * h / (2 * w**2 * v)


def paper_low_res(b: int, s: int, h: int, r: int, d: int) -> float:
    """Low-Res branch with ``h/2`` channels: ``2bsh²/r² + bs²h / (2r²d)``."""
    return 2 * b * s * h**2 / r**2 + b * s**2 * h / (2 * r**2 * d)


# --------------------------------------------------------------------------------------------------
# Exact counts
# --------------------------------------------------------------------------------------------------


def window_pairs(spec: WindowSpec) -> int:
    """Exact number of (query, key) pairs inside the windows. The mask is a product of axis masks,
    so the count is the product over axes of each axis's pair count."""
    return math.prod(
        int(axis_window_mask(n, k, d, c).sum()) for n, k, d, c in zip(spec.shape, spec.kernel_size, spec.dilation, spec.is_causal)
    )


def computed_pairs(spec: WindowSpec, backend: str = "auto") -> int:
    """(query, key) pairs a backend scores: dense-with-mask scores all ``N²``."""
    if backend == "auto":
        backend = choose_backend_for_spec(spec)
    n = math.prod(spec.shape)
    return n * n if backend == "reference" else tiled_pairs(spec) if backend == "torch" else window_pairs(spec)


@dataclass
class LayerCost:
    """MACs of one attention layer, split by part."""

    projections: float  # QKV and output projections
    attention: float  # scores (QKᵀ) and weighted sum (AV)

    @property
    def total(self) -> float:
        return self.projections + self.attention

    def as_dict(self) -> Dict[str, float]:
        return {**asdict(self), "total": self.total}


def dense_layer_macs(batch: int, frames: int, height: int, width: int, hidden: int, causal: bool = False) -> LayerCost:
    """Dense (frame-causal if ``causal``) attention over all tokens: the baseline."""
    s = frames * height * width
    pairs = s * s if not causal else height * width * height * width * frames * (frames + 1) // 2
    return LayerCost(projections=4 * batch * s * hidden**2, attention=2 * batch * pairs * hidden)


def msc_layer_macs(
    batch: int,
    frames: int,
    height: int,
    width: int,
    hidden: int,
    k_s: int,
    k_t: int,
    r: int,
    d: int,
    k_lo: int,
    low_res_fraction: float = 0.5,
    computed: bool = False,
) -> Tuple[LayerCost, LayerCost]:
    """(High-Res, Low-Res) MACs of one MSC attention layer on a ``frames × height × width`` grid.

    ``computed=False`` counts the pairs inside the windows; ``computed=True`` counts what
    ``backend="auto"`` scores (masked entries included). The output projection (``hidden²`` per
    token) is split between the branches in proportion to their channels.
    """
    s = frames * height * width
    c_lo = round(hidden * low_res_fraction)
    c_hi = hidden - c_lo
    hi_spec = WindowSpec((frames, height, width), (k_t, k_s, k_s), (1, 1, 1), (True, False, False))
    hp, wp = height // r, width // r
    lo_spec = WindowSpec((frames, hp, wp), (k_lo, hp, wp), (d, 1, 1), (True, False, False))
    count = computed_pairs if computed else window_pairs
    high = LayerCost(
        projections=batch * s * hidden * 3 * c_hi + batch * s * c_hi * hidden,
        attention=2 * batch * count(hi_spec) * c_hi,
    )
    s_lo = frames * hp * wp
    low = LayerCost(
        projections=batch * s_lo * hidden * 3 * c_lo + batch * s * c_lo * hidden,
        attention=2 * batch * count(lo_spec) * c_lo,
    )
    return high, low
