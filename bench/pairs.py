"""Changes measured side by side: ``python -m bench.pairs`` (the table in ``bench/results/pairs.md``).

Each kept speed change of the model's code, timed with it and without it in one run, the two alternated round after
round (A B, then B A, ...) so that whatever the machine does meanwhile touches both alike; the table gives both
medians and their ratio. On a 2-core machine whose timings move by 20-30 % from run to run, this is what resolves a
10 % change (a timing of each in separate runs does not):

* **attention tiles**: the tiled kernel's 64-query tiles shaped per grid for the fewest halo keys
  (:func:`msc.attention.query_tile`) against 8 x 8 tiles: the forward of a chunk of 8 frames and a training step;
* **keys-only commit**: the sampler commits a finished frame with a forward that stops at the last block's keys and
  values (``MSCModel.forward(..., keys_only=True)``) against a full forward: a frame generated in chunks of 1;
* **sampling precision**: ``SamplerSettings.precision`` bfloat16 against float32 (:func:`msc.sampling.network_precision`):
  64 frames at the weights' real-time preset, and the forward of a chunk of 8 frames;
* **allocator**: a training step in fresh processes, every program's allocator
  (:func:`msc.environment.keep_freed_memory`) against glibc's default, the processes alternated (an allocator cannot
  be undone inside a process).

Run it on an otherwise idle machine; ``--rounds`` pairs of timings each (medians of ``--repeat`` calls per timing).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
from dataclasses import replace

import torch

from bench import ROOT, write_results
from bench.speed import CHUNK, frame_work, timed, training_work
from msc.model import MSCModel

BATCH, FRAMES, STEPS = 4, 8, 2  # the training step and the sampler's steps, as bench.speed measures them


@contextlib.contextmanager
def fixed_tiles(tile):
    """Every tiled attention call uses ``tile`` ``(T, H, W)`` while the block runs (``None``: :func:`query_tile`'s)."""
    import msc.attention as attention

    chosen = attention.query_tile
    if tile is not None:
        attention.query_tile = lambda spec: tile
    try:
        yield
    finally:
        attention.query_tile = chosen


def in_context(fn, make_context):
    def run():
        with make_context():
            fn()
    return run


def streamed(model: MSCModel, settings, context):
    """64 frames after ``context`` at ``settings`` (the sampler as ``/stream`` runs it)."""
    from msc.sampling import sample_frames

    def run():
        for _ in sample_frames(model, context, 64, settings):
            pass
    return run


def in_process_pairs(model: MSCModel, weights: str) -> list:
    """``(work, change, baseline, fn with the change, fn without)`` of every pair timed inside this process."""
    from msc.sampling import load_presets, network_precision

    cfg = model.config
    preset = load_presets(weights)["real-time"]
    context = torch.rand(1, 8, cfg.channels, cfg.image_size, cfg.image_size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    _, _, chunk_forward = frame_work(model, STEPS)
    train_step = training_work(model, BATCH, FRAMES)
    tiles = ("query_tile's shape", "8 x 8 tiles")
    return [
        (f"forward of a chunk of {CHUNK} frames", *tiles, chunk_forward, in_context(chunk_forward, lambda: fixed_tiles((1, 8, 8)))),
        (f"training step ({BATCH} clips x {FRAMES} frames)", *tiles, train_step,
         in_context(train_step, lambda: fixed_tiles((1, 8, 8)))),
        (f"generated frame ({STEPS} steps, chunks of 1)", "keys-only commit", "full commit",
         frame_work(model, STEPS, keys_only=True)[1], frame_work(model, STEPS, keys_only=False)[1]),
        (f"64 frames at the real-time preset ({preset.steps} steps, chunks of {preset.chunk}, first chunk "
         f"{preset.first_chunk or preset.chunk})", "bfloat16", "float32",
         streamed(model, replace(preset, precision="bfloat16"), context), streamed(model, replace(preset, precision="float32"), context)),
        (f"forward of a chunk of {CHUNK} frames", "bfloat16", "float32",
         in_context(chunk_forward, lambda: network_precision("bfloat16", "cpu")), chunk_forward),
    ]


def alternate(with_change, without, rounds: int, repeat: int) -> tuple:
    """Both functions' timings (:func:`bench.speed.timed`'s medians, each after its warm-up call), ``rounds`` each, in
    the order A B, B A, A B, ..."""
    a, b = [], []
    for r in range(rounds):
        order = ((with_change, a), (without, b)) if r % 2 == 0 else ((without, b), (with_change, a))
        for fn, times in order:
            times.append(timed(fn, repeat)["seconds"])
    return a, b


def allocator_times(weights: str, rounds: int, repeat: int) -> tuple:
    """Training-step timings of fresh processes, every program's allocator against glibc's default, alternated."""
    kept, default = [], []
    for r in range(rounds):
        for kind in (("kept", "default") if r % 2 == 0 else ("default", "kept")):
            out = subprocess.run([sys.executable, "-m", "bench.pairs", "--weights", weights, "--child-allocator", kind,
                                  "--repeat", str(repeat)], cwd=ROOT, capture_output=True, text=True, check=True)
            (kept if kind == "kept" else default).append(json.loads(out.stdout.strip().splitlines()[-1])["seconds"])
    return kept, default


def child_training_step(weights: str, allocator: str, repeat: int) -> None:
    """In a fresh process: the training step's median time with ``allocator``, printed as JSON."""
    if allocator == "kept":
        from msc.environment import keep_freed_memory

        keep_freed_memory()
    step = training_work(MSCModel.from_pretrained(weights), BATCH, FRAMES)
    print(json.dumps({"allocator": allocator, "seconds": timed(step, repeat)["seconds"]}))


def row(work: str, change: str, baseline: str, a: list, b: list) -> dict:
    ma, mb = statistics.median(a), statistics.median(b)
    return {"work": work, "change": change, "baseline": baseline, "with_s": a, "without_s": b,
            "median_with_s": ma, "median_without_s": mb, "speedup": mb / ma}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default=os.path.join(ROOT, "weights"))
    p.add_argument("--rounds", type=int, default=5, help="timings of each side, alternated")
    p.add_argument("--repeat", type=int, default=3, help="calls per timing (their median)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--child-allocator", choices=("kept", "default"), help=argparse.SUPPRESS)
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "pairs"))
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    weights = os.path.abspath(args.weights)
    if args.child_allocator:
        child_training_step(weights, args.child_allocator, args.repeat)
        return 0
    model = MSCModel.from_pretrained(weights).eval()
    machine = f"{platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads, torch {torch.__version__}"
    rows = []
    for work, change, baseline, with_change, without in in_process_pairs(model, weights):
        rows.append(row(work, change, baseline, *alternate(with_change, without, args.rounds, args.repeat)))
        print(f"  {work}: {change} {1000 * rows[-1]['median_with_s']:.0f} ms, {baseline} "
              f"{1000 * rows[-1]['median_without_s']:.0f} ms", flush=True)
    rows.append(row(f"training step ({BATCH} clips x {FRAMES} frames), fresh processes", "every program's allocator",
                    "glibc's default", *allocator_times(weights, args.rounds, args.repeat)))
    lines = [f"Measured by `python -m bench.pairs` on {machine}; {os.path.relpath(weights, ROOT)}; {args.rounds} timings of "
             f"each side, alternated (medians of {args.repeat} calls each).", "",
             "| work | change | time with it (ms) | baseline | time with the baseline (ms) | speed-up |", "|---|---|---:|---|---:|---:|"]
    lines += [f"| {r['work']} | {r['change']} | {1000 * r['median_with_s']:.1f} | {r['baseline']} | "
              f"{1000 * r['median_without_s']:.1f} | {r['speedup']:.2f}× |" for r in rows]
    write_results(args.out, {"machine": machine, "weights": weights, "rounds": args.rounds, "repeat": args.repeat,
                             "rows": rows}, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
