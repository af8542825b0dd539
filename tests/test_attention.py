"""Neighborhood attention: our backends against NATTEN (an oracle we did not write) and each other."""

import random

import natten
import pytest
import torch

from msc import attention as A
from msc.attention import axis_window_mask, neighborhood_attention

TOL = 1e-5


def _random_case(rng: random.Random, natten_compatible: bool):
    """A random grid and window; ``natten_compatible`` keeps to what NATTEN accepts (k >= 2, k*d <= n)."""
    while True:
        shape = (rng.randint(1, 6), rng.randint(1, 11), rng.randint(1, 11))
        kernel, dilation, causal = [], [], []
        for n in shape:
            c = rng.random() < 0.4
            d = rng.randint(1, max(1, min(3, n // 2)))
            if c and not natten_compatible:
                ks = rng.randint(1, n + 3)  # may exceed the extent: cut at 0
            else:
                ks = rng.randint(1, max(1, n // d))
            kernel.append(ks)
            dilation.append(d)
            causal.append(c)
        if natten_compatible and (min(kernel) < 2 or any(k * d > n for k, d, n in zip(kernel, dilation, shape))):
            continue
        return shape, tuple(kernel), tuple(dilation), tuple(causal)


def _qkv(shape, batch=2, heads=2, dim=8, dim_v=None, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    size = (batch, *shape, heads)
    q = torch.randn(*size, dim, generator=g, dtype=dtype)
    k = torch.randn(*size, dim, generator=g, dtype=dtype)
    v = torch.randn(*size, dim_v or dim, generator=g, dtype=dtype)
    return q, k, v


# ------------------------------------------------------------------ window rule, by hand


def test_axis_window_by_hand():
    # length 5, kernel 3, non-causal: windows shift to stay inside.
    m = axis_window_mask(5, 3, 1, False)
    assert m[0].nonzero().flatten().tolist() == [0, 1, 2]
    assert m[2].nonzero().flatten().tolist() == [1, 2, 3]
    assert m[4].nonzero().flatten().tolist() == [2, 3, 4]
    # even kernel 4 leans left: 2 before, 1 after.
    m = axis_window_mask(8, 4, 1, False)
    assert m[4].nonzero().flatten().tolist() == [2, 3, 4, 5]
    # causal kernel 3, cut at 0; kernel longer than the axis is allowed.
    m = axis_window_mask(5, 3, 1, True)
    assert m[0].nonzero().flatten().tolist() == [0]
    assert m[4].nonzero().flatten().tolist() == [2, 3, 4]
    assert axis_window_mask(3, 10, 1, True).equal(torch.ones(3, 3, dtype=torch.bool).tril())
    # causal dilated: t, t-d, t-2d, at most k frames.
    m = axis_window_mask(9, 3, 2, True)
    assert m[8].nonzero().flatten().tolist() == [4, 6, 8]
    assert m[3].nonzero().flatten().tolist() == [1, 3]
    # kernel equal to the extent is global.
    assert axis_window_mask(6, 6, 1, False).all()


# ------------------------------------------------------------------ against NATTEN


NATTEN_FIXED = [
    # (shape, kernel, dilation, causal): the shapes MSC uses, scaled down.
    ((4, 8, 8), (3, 5, 5), (1, 1, 1), (True, False, False)),  # High-Res branch
    ((6, 4, 4), (3, 4, 4), (2, 1, 1), (True, False, False)),  # Low-Res branch: global, dilated
    ((4, 9, 7), (2, 4, 6), (1, 2, 1), (False, False, False)),  # even kernels, spatial dilation
    ((5, 6, 6), (5, 3, 3), (1, 1, 1), (True, True, True)),  # causal everywhere
    ((3, 10, 10), (3, 3, 3), (1, 3, 3), (False, False, False)),  # dilation with remainders
]


@pytest.mark.parametrize("case", range(len(NATTEN_FIXED) + 10))
def test_matches_natten(case):
    if case < len(NATTEN_FIXED):
        shape, kernel, dilation, causal = NATTEN_FIXED[case]
    else:
        shape, kernel, dilation, causal = _random_case(random.Random(case), natten_compatible=True)
    q, k, v = _qkv(shape, seed=case)
    expected = natten.na3d(q, k, v, kernel_size=kernel, dilation=dilation, is_causal=causal)
    for backend in ("torch", "reference", "auto"):
        got = neighborhood_attention(q, k, v, kernel, dilation, causal, backend=backend)
        err = (got - expected).abs().max().item()
        assert err <= TOL, f"{backend} vs NATTEN: {err} on {shape, kernel, dilation, causal}"


# ------------------------------------------------------------------ torch vs reference


@pytest.mark.parametrize("seed", range(60))
def test_torch_matches_reference(seed):
    rng = random.Random(1000 + seed)
    shape, kernel, dilation, causal = _random_case(rng, natten_compatible=False)
    q, k, v = _qkv(shape, batch=rng.randint(1, 2), heads=rng.randint(1, 3), dim_v=rng.choice([8, 5]), seed=seed)
    ref = neighborhood_attention(q, k, v, kernel, dilation, causal, backend="reference")
    got = neighborhood_attention(q, k, v, kernel, dilation, causal, backend="torch")
    assert got.shape == ref.shape
    assert (got - ref).abs().max().item() <= TOL, (shape, kernel, dilation, causal)


def test_torch_matches_reference_on_tile_boundaries():
    """Grids larger than a tile, not multiples of it: overlapping last tiles and shifted halos."""
    for shape, kernel, causal in [((3, 19, 13), (2, 7, 4), (True, False, False)), ((9, 17, 9), (9, 5, 9), (True, False, False))]:
        q, k, v = _qkv(shape, batch=1, heads=2, dim=16)
        ref = neighborhood_attention(q, k, v, kernel, 1, causal, backend="reference")
        got = neighborhood_attention(q, k, v, kernel, 1, causal, backend="torch")
        assert (got - ref).abs().max().item() <= TOL


def test_query_tile_gathers_the_fewest_keys_for_its_queries():
    """The bundled model's grid: 4 x 16 tiles, whose halo spans the width, score fewer pairs than 8 x 8 ones; every
    shape exact on a grid where the chosen tile is not a divisor."""
    spec = A.check_arguments(*_qkv((10, 16, 16), batch=1, heads=1, dim=2), (3, 7, 7), 1, (True, False, False))
    assert A.query_tile(spec) == (1, 4, 16)
    assert A.tiled_pairs(spec) < A.tiled_pairs(spec, tile=(1, 8, 8))
    assert A.query_tile(A.check_arguments(*_qkv((2, 4, 4)), (2, 3, 3), 1, (True, False, False))) == (1, 4, 4)  # whole frame
    q, k, v = _qkv((3, 13, 21), batch=1, heads=2, dim=8)
    ref = neighborhood_attention(q, k, v, (2, 5, 7), 1, (True, False, False), backend="reference")
    for tile in [(1, 4, 16), (1, 8, 8), (1, 2, 21), (1, 13, 4)]:
        spec = A.check_arguments(q, k, v, (2, 5, 7), 1, (True, False, False))
        assert (A._tiled(q, k, v, spec, q.shape[-1] ** -0.5, tile=tile) - ref).abs().max().item() <= TOL, tile


@pytest.mark.parametrize("seed", range(12))
def test_gradients_match_reference(seed):
    rng = random.Random(2000 + seed)
    shape, kernel, dilation, causal = _random_case(rng, natten_compatible=False)
    grads = {}
    for backend in ("reference", "torch"):
        q, k, v = (x.requires_grad_() for x in _qkv(shape, seed=seed))
        out = neighborhood_attention(q, k, v, kernel, dilation, causal, backend=backend)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        grads[backend] = (q.grad, k.grad, v.grad)
    for g_ref, g_got in zip(grads["reference"], grads["torch"]):
        assert (g_ref - g_got).abs().max().item() <= 1e-4


def test_gradcheck_float64():
    q, k, v = (x.requires_grad_() for x in _qkv((3, 5, 4), batch=1, heads=1, dim=3, dtype=torch.float64))
    fn = lambda q, k, v: neighborhood_attention(q, k, v, (2, 3, 2), (1, 1, 2), (True, False, False), backend="torch")
    assert torch.autograd.gradcheck(fn, (q, k, v), eps=1e-6, atol=1e-6)


# ------------------------------------------------------------------ auto


def test_auto_picks_dense_for_small_and_tiled_for_large():
    small = A.check_arguments(*_qkv((2, 4, 4)), (2, 3, 3), 1, (True, False, False))
    large = A.check_arguments(*_qkv((8, 32, 32), batch=1, heads=1, dim=2), (3, 7, 7), 1, (True, False, False))
    assert A.choose_backend(torch.zeros(1), small) == "reference"
    assert A.choose_backend(torch.zeros(1), large) == "torch"


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(kernel_size=(3, 9, 3)), "larger than the 8 tokens"),
        (dict(kernel_size=(3, 0, 3)), ">= 1"),
        (dict(kernel_size=(3, 3)), "three"),
        (dict(kernel_size=3.0), "integers"),
        (dict(kernel_size=3, dilation=(1, 3, 1)), "larger than"),
        (dict(kernel_size=3, dilation=0), ">= 1"),
        (dict(kernel_size=3, is_causal=(1, 0, 0)), "booleans"),
        (dict(kernel_size=3, backend="cuda"), "backend"),
        (dict(kernel_size=3, backend="natten"), "HAS_LIBNATTEN"),
    ],
)
def test_invalid_arguments_raise(kwargs, message):
    q, k, v = _qkv((4, 8, 8))
    with pytest.raises(ValueError, match=message):
        neighborhood_attention(q, k, v, **kwargs)


def test_invalid_tensors_raise():
    q, k, v = _qkv((4, 8, 8))
    with pytest.raises(ValueError, match="6 dimensions"):
        neighborhood_attention(q[0], k[0], v[0], 3)
    with pytest.raises(ValueError, match="agree in shape"):
        neighborhood_attention(q, k[:, :3], v, 3)
    with pytest.raises(ValueError, match="dtype"):
        neighborhood_attention(q, k.double(), v, 3)


def test_causal_dilation_larger_than_the_video():
    """The first frames of a generation: fewer frames than the Low-Res stride."""
    q, k, v = _qkv((1, 4, 4))
    for backend in ("torch", "reference"):
        out = neighborhood_attention(q, k, v, (4, 4, 4), (3, 1, 1), (True, False, False), backend=backend)
        ref = neighborhood_attention(q, k, v, (1, 4, 4), 1, (True, False, False), backend="reference")
        assert (out - ref).abs().max().item() <= TOL


def test_causal_kernel_longer_than_video_is_cut_not_rejected():
    q, k, v = _qkv((2, 4, 4))
    out = neighborhood_attention(q, k, v, (8, 3, 3), 1, (True, False, False), backend="torch")
    ref = neighborhood_attention(q, k, v, (2, 3, 3), 1, (True, False, False), backend="reference")
    assert (out - ref).abs().max().item() <= TOL


@pytest.mark.parametrize("kernel_size,dilation", [((3, 5, 5), (1, 1, 1)), ((4, 4, 4), (2, 1, 1)), ((2, 3, 3), (3, 1, 1))])
@pytest.mark.parametrize("query_start", [1, 4, 6])
def test_query_start_computes_only_the_later_frames_exactly(kernel_size, dilation, query_start):
    """Cached frames lend keys and values only: both CPU kernels skip their queries' work, and the later frames'
    outputs are those of the whole problem (the reference backend's, sliced)."""
    from msc.attention import neighborhood_attention

    g = torch.Generator().manual_seed(query_start)
    q, k, v = (torch.randn(2, 7, 8, 8, 2, 8, generator=g) for _ in range(3))
    full = neighborhood_attention(q, k, v, kernel_size, dilation, (True, False, False), backend="reference")
    for backend in ("torch", "reference"):
        part = neighborhood_attention(q, k, v, kernel_size, dilation, (True, False, False), backend=backend,
                                      query_start=query_start)
        assert part.shape == (2, 7 - query_start, 8, 8, 2, 8)
        assert torch.allclose(part, full[:, query_start:], atol=1e-5), backend
    with pytest.raises(ValueError, match="query_start"):
        neighborhood_attention(q, k, v, kernel_size, dilation, (True, False, False), query_start=7)
