"""History-guidance cost: wall time of a whole extension with and without guidance, side by side in
one run (a randomly initialised `small` model: speed does not depend on the weights).

    python -m bench.guidance

Each row extends 8 context frames by 16 frames (chunks of 4, --steps steps, KV cache on); median of
--repeats runs after a warm-up. Guidance adds one forward per denoising step and one per committed
frame (the history-free pass keeps its own cache), so the bar is at most 2.1x the unguided time.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from msc.model import MSCModel, config_from_name
from msc.sampling import sample_video


def median_seconds(model, context, repeats: int, **kw) -> float:
    sample_video(model, context, 4, chunk=4, **{**kw, "steps": 2})  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        sample_video(model, context, 16, chunk=4, **kw)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    torch.manual_seed(0)
    model = MSCModel(config_from_name("small")).eval()
    context = torch.rand(1, 8, 3, 64, 64) * 2 - 1
    rows = [("unguided (w = 1)", dict(history_guidance=1.0)),
            ("vanilla, w = 2", dict(history_guidance=2.0)),
            ("fractional (level 0.5), w = 2", dict(history_guidance=2.0, guidance_mode="fractional")),
            ("vanilla, w = 2, linear in t", dict(history_guidance=2.0, guidance_schedule="linear"))]
    print(f"# {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}; `small` model, "
          f"8 context + 16 new frames, chunks of 4, {args.steps} steps, KV cache; median of {args.repeats}")
    print("| sampler | seconds | vs unguided |")
    print("|---|---|---|")
    base = None
    for name, kw in rows:
        secs = median_seconds(model, context, args.repeats, steps=args.steps, **kw)
        base = base or secs
        print(f"| {name} | {secs:.2f} | {secs / base:.2f}× |", flush=True)


if __name__ == "__main__":
    main()
