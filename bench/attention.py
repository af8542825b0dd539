"""Neighborhood-attention benchmark: dense SDPA vs NATTEN (CPU) vs our `reference` and `torch`.

    python -m bench.attention            # the table in docs/implementation.md (about 3 minutes on 2 cores)
    python -m bench.attention --quick    # smaller grids, for a smoke run

Every ratio compares timings measured side by side in this run (median of --repeats runs after one
warm-up). ``flop ratio`` is dense pairs / in-window pairs (the best any exact windowed kernel can
do); ``computed`` is dense pairs / pairs our tiled kernel scores (its halo, masked entries included).
NATTEN on CPU runs unfused through Flex Attention, so it is timed only up to --natten-max-tokens.
"""

from __future__ import annotations

import argparse
import math
import platform
import warnings

import torch
import torch.nn.functional as F

from bench.speed import timed
from msc.attention import check_arguments, choose_backend, neighborhood_attention
from msc.complexity import tiled_pairs, window_pairs

warnings.filterwarnings("ignore")

HEADS, HEAD_DIM = 4, 32
KERNEL, CAUSAL = (3, 7, 7), (True, False, False)
GRIDS = [(4, 8, 8), (4, 16, 16), (16, 16, 16), (4, 32, 32), (8, 32, 32), (16, 32, 32), (32, 32, 32)]
QUICK_GRIDS = [(4, 8, 8), (4, 16, 16), (8, 32, 32)]


def bench_grid(shape, repeats: int, natten_max_tokens: int) -> dict:
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, *shape, HEADS, HEAD_DIM, generator=g) for _ in range(3))
    spec = check_arguments(q, k, v, KERNEL, 1, CAUSAL)
    n = math.prod(shape)
    # dense SDPA over the same tokens, no mask: the baseline every ratio divides
    qd, kd, vd = (x.reshape(1, n, HEADS, HEAD_DIM).transpose(1, 2).contiguous() for x in (q, k, v))
    row = {"shape": shape, "tokens": n, "auto": choose_backend(q, spec)}
    row["dense"] = timed(lambda: F.scaled_dot_product_attention(qd, kd, vd), repeats)["seconds"]
    for backend in ("reference", "torch", "auto"):
        run = lambda: neighborhood_attention(q, k, v, KERNEL, 1, CAUSAL, backend=backend)
        row[backend + "_s"] = timed(run, repeats)["seconds"]
    row["natten_s"] = None
    if n <= natten_max_tokens:
        import natten

        fn = lambda: natten.na3d(q, k, v, kernel_size=KERNEL, is_causal=CAUSAL)
        row["natten_s"] = timed(fn, max(1, repeats // 2))["seconds"]
    row["flop_ratio"] = n * n / window_pairs(spec)
    row["computed_ratio"] = n * n / tiled_pairs(spec)
    return row


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="three grids, fewer repeats")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--natten-max-tokens", type=int, default=8192)
    args = parser.parse_args(argv)
    grids = QUICK_GRIDS if args.quick else GRIDS
    repeats = 3 if args.quick else args.repeats
    print(
        f"# {platform.machine()} {platform.processor() or ''}, {torch.get_num_threads()} threads, torch {torch.__version__}; "
        f"{HEADS} heads x {HEAD_DIM}, kernel {KERNEL} causal in T, forward, float32, median of {repeats}"
    )
    print(
        "| grid T×H×W | tokens | dense SDPA (s) | NATTEN CPU (s) | reference (s) | torch (s) | auto (s) → picks "
        "| dense / torch | dense / auto | flop ratio | computed ratio |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for shape in grids:
        r = bench_grid(shape, repeats, args.natten_max_tokens)
        nat = f"{r['natten_s']:.4f}" if r["natten_s"] is not None else "—"
        print(
            f"| {'×'.join(map(str, shape))} | {r['tokens']} | {r['dense']:.4f} | {nat} | {r['reference_s']:.4f} "
            f"| {r['torch_s']:.4f} | {r['auto_s']:.4f} → {r['auto']} | {r['dense'] / r['torch_s']:.1f}× "
            f"| {r['dense'] / r['auto_s']:.1f}× | {r['flop_ratio']:.1f}× | {r['computed_ratio']:.1f}× |",
            flush=True,
        )


if __name__ == "__main__":
    main()
