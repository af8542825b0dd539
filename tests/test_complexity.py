"""Complexity: the paper's formulas as printed, and exact pair counts checked against the masks."""

import math

import pytest
import torch

from msc import complexity as C
from msc.attention import WindowSpec, dense_window_mask


def test_paper_formulas_as_printed():
    b, s, h, w, v, r, d = 2, 1000, 64, 7, 3, 2, 2
    assert C.paper_dense(b, s, h) == 8 * b * s * h * h + 2 * b * s * s * h
    assert C.paper_high_res(b, s, h, w, v) == pytest.approx(2 * b * s * h * h + b * s * s * h / (2 * w * w * v))
    assert C.paper_low_res(b, s, h, r, d) == pytest.approx(2 * b * s * h * h / r**2 + b * s * s * h / (2 * r**2 * d))


@pytest.mark.parametrize(
    "spec",
    [
        WindowSpec((5, 9, 7), (3, 5, 4), (1, 1, 1), (True, False, False)),
        WindowSpec((7, 4, 4), (3, 4, 4), (2, 1, 1), (True, False, False)),
        WindowSpec((3, 10, 9), (2, 3, 3), (1, 3, 2), (False, False, True)),
    ],
)
def test_window_pairs_equal_mask_count(spec):
    assert C.window_pairs(spec) == int(dense_window_mask(spec).sum())
    n = math.prod(spec.shape)
    assert C.window_pairs(spec) <= C.tiled_pairs(spec)
    assert C.computed_pairs(spec, "reference") == n * n


def test_msc_layer_cheaper_than_dense_and_split_by_channels():
    hi, lo = C.msc_layer_macs(1, 16, 16, 16, 128, k_s=7, k_t=3, r=2, d=2, k_lo=4)
    dense = C.dense_layer_macs(1, 16, 16, 16, 128, causal=True)
    assert hi.total + lo.total < dense.total / 4
    # projections: High-Res on all tokens, Low-Res QKV on pooled tokens (the paper's saving)
    s, c = 16 * 16 * 16, 64
    assert hi.projections == s * 128 * 3 * c + s * c * 128
    assert lo.projections == (s // 4) * 128 * 3 * c + s * c * 128
    hi_c, lo_c = C.msc_layer_macs(1, 16, 16, 16, 128, k_s=7, k_t=3, r=2, d=2, k_lo=4, computed=True)
    assert hi_c.attention >= hi.attention and lo_c.attention >= lo.attention


def test_tiled_pairs_equal_what_the_kernel_scores():
    from msc.attention import _tiling, query_tile

    spec = WindowSpec((5, 19, 13), (3, 5, 4), (1, 1, 1), (True, False, False))
    bias = _tiling(spec.shape, spec.kernel_size, spec.is_causal, query_tile(spec), torch.float32, torch.device("cpu")).bias
    assert C.tiled_pairs(spec) == bias.numel()
    assert C.computed_pairs(spec, "torch") == bias.numel()
