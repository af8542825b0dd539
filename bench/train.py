"""Training-step benchmark: MSC vs the frame-causal dense baseline with the same parameter count.

    python -m bench.train              # the table in docs/implementation.md: 8, 16, 32 frames of the `small` model
    python -m bench.train --quick      # 8 and 16 frames, fewer steps

Each row times full training steps (forward, backward, AdamW) on a batch of 2 clips of 64 × 64
pixels (a 16 × 16 token grid), median of --steps after --warmup steps, and the peak resident memory
the step adds (measured in a fresh child process per configuration, so one run cannot inherit
another's allocations). Ratios compare rows measured in this run.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time

import torch

from msc.diffusion import diffusion_loss
from msc.model import MSCModel, config_from_name


def measure(attention: str, frames: int, batch: int, steps: int, warmup: int) -> dict:
    """Run inside a child process: time training steps and read the peak RSS."""
    torch.manual_seed(0)
    model = MSCModel(config_from_name("small", attention=attention))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    clips = torch.rand(batch, frames, 3, 64, 64) * 2 - 1
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        loss = diffusion_loss(model, clips, torch.Generator().manual_seed(i))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "attention": attention,
        "frames": frames,
        "step_s": statistics.median(times),
        "peak_mb": peak / 1024,
        "step_mb": (peak - rss_before) / 1024,
        "params": sum(p.numel() for p in model.parameters()),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--child", nargs=2, metavar=("ATTENTION", "FRAMES"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.child[0], int(args.child[1]), args.batch, args.steps, args.warmup)))
        return
    frame_counts = [8, 16] if args.quick else [8, 16, 32]
    steps = 2 if args.quick else args.steps
    print(f"# {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}; `small` model, "
          f"batch {args.batch} × 64 × 64 px (16 × 16 tokens), median of {steps} steps after {args.warmup} warm-up")
    print("| frames | MSC step (s) | dense step (s) | MSC steps/s | dense steps/s | speed-up | MSC peak MB | dense peak MB | params MSC / dense |")
    print("|---|---|---|---|---|---|---|---|---|")
    for frames in frame_counts:
        rows = {}
        for attention in ("msc", "dense"):
            cmd = [sys.executable, "-m", "bench.train", "--child", attention, str(frames), "--steps", str(steps),
                   "--warmup", str(args.warmup), "--batch", str(args.batch)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            rows[attention] = json.loads(out.strip().splitlines()[-1])
        m, d = rows["msc"], rows["dense"]
        print(f"| {frames} | {m['step_s']:.2f} | {d['step_s']:.2f} | {1 / m['step_s']:.2f} | {1 / d['step_s']:.2f} "
              f"| {d['step_s'] / m['step_s']:.2f}× | {m['peak_mb']:.0f} | {d['peak_mb']:.0f} "
              f"| {m['params'] / 1e6:.2f} M / {d['params'] / 1e6:.2f} M |", flush=True)


if __name__ == "__main__":
    main()
