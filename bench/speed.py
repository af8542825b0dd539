"""Speed against the FLOP bound, measured in one run: ``python -m bench.speed``.

For a weights folder (the bundled model by default) this counts the FLOPs of four pieces of work with
``torch.utils.flop_counter.FlopCounterMode`` and times them on this machine:

* **one-frame forward**: one new 64 × 64 frame after a full attention window of cached frames (the steady state of
  generation, chunks of one frame);
* **generated frame**: what a frame costs the sampler at ``--steps`` denoising steps, chunks of 1: ``steps`` forwards
  of the frame and the one that commits it to the KV cache;
* **forward of a chunk of 8 frames** after the same window (the default preset's model call);
* **training step**: forward and backward of the loss on ``--batch`` clips of ``--frames`` frames; and the same under
  bf16 autocast (``msc.train --bf16``: matmuls in bf16, attention and the action kernels in float32).

The **bound** of each is its FLOPs over the machine's matrix-multiply rate at the model's own matmul shapes
(``[tokens, D] @ [D, 3D]``, ``[D, 4D]``, ``[4D, D]``), measured in the same process in float32 and bfloat16; each
timing is reported as "× over bound" (1 would be a CPU that spends all its time in matmuls at full rate). A profile
table (``torch.profiler``) of the one-frame forward and the training step shows where the rest goes, and the
**floor** of each row (the same work in the model's narrow twin, :func:`narrow_twin`) what no faster matmul removes.
Timings are medians of ``--repeat`` runs after a warm-up; run it on an otherwise idle machine.

Each row also counts what the kernel did for it (page faults, kernel CPU time), and the whole measurement is made a
second time in a child process with glibc's default allocator instead of the one every program of this repository
sets (:func:`msc.environment.keep_freed_memory`): the table of the two side by side is the allocator's effect.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from bench import ROOT
from msc.diffusion import diffusion_loss
from msc.environment import keep_freed_memory
from msc.model import KVCache, MSCConfig, MSCModel
from msc.rotary import MIN_HEAD_DIM

CHUNK = 8  # frames in the chunk-forward row: the default preset's chunk


def count_flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def timed(fn, repeat: int) -> dict:
    """``fn``'s median time over ``repeat`` calls after a warm-up (caches of masks and tilings, allocator), and what
    the same calls cost the kernel a call, counted by it (``getrusage``; steadier than a timing on a shared machine):
    the pages faulted in afresh and the CPU time spent in the kernel on the process's behalf."""
    fn()
    times, before = [], resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    after = resource.getrusage(resource.RUSAGE_SELF)
    return {"seconds": statistics.median(times), "page_faults": (after.ru_minflt - before.ru_minflt) / repeat,
            "kernel_cpu_s": (after.ru_stime - before.ru_stime) / repeat}


def matmul_rate(tokens: int, width: int, dtype: torch.dtype, repeat: int) -> float:
    """FLOP/s of the model's three matmul shapes at ``tokens`` rows, FLOP-weighted (total FLOPs / total time)."""
    g = torch.Generator().manual_seed(0)
    flops = seconds = 0.0
    for k, n in ((width, 3 * width), (width, 4 * width), (4 * width, width)):
        a = torch.randn(tokens, k, generator=g).to(dtype)
        b = torch.randn(k, n, generator=g).to(dtype)
        seconds += timed(lambda: torch.mm(a, b), repeat)["seconds"]
        flops += 2 * tokens * k * n
    return flops / seconds


def frame_work(model: MSCModel, steps: int, chunk: int = CHUNK, keys_only: bool = True):
    """``(one_forward, generated_frame, chunk_forward)`` closures at the steady state (a full window of committed
    frames): one frame's forward, a frame generated in chunks of 1, and the forward of a chunk of ``chunk`` frames
    (the default preset's model call). ``keys_only``: the generated frame's commit computes keys and values only, as the
    sampler commits (False: a full forward, the baseline ``bench.pairs`` times it against)."""
    cfg = model.config
    window = max(model.config.windows.history())
    g = torch.Generator().manual_seed(0)
    shape = (1, 1, cfg.channels, cfg.image_size, cfg.image_size)
    cache = KVCache(cfg)
    actions = (lambda n: {"actions": torch.zeros(1, n, dtype=torch.long)}) if cfg.actions else (lambda n: {})  # the no-op
    with torch.no_grad():
        model(torch.randn(1, window, *shape[2:], generator=g), torch.zeros(1, window), cache=cache, commit=True, **actions(window))
    x, t = torch.randn(shape, generator=g), torch.full((1, 1), 0.5)
    xs, ts = torch.randn(1, chunk, *shape[2:], generator=g), torch.full((1, chunk), 0.5)

    @torch.no_grad()
    def one_forward():
        model(x, t, cache=cache, **actions(1))

    @torch.no_grad()
    def chunk_forward():
        model(xs, ts, cache=cache, **actions(chunk))

    @torch.no_grad()
    def generated_frame():
        for _ in range(steps):
            model(x, t, cache=cache, **actions(1))
        keep = [(b.k, b.v) for pair in cache.layers for b in pair]
        model(x, torch.zeros(1, 1), cache=cache, commit=True, keys_only=keys_only, **actions(1))
        for (k, v), b in zip(keep, (b for pair in cache.layers for b in pair)):  # the window stays the same length
            b.k, b.v = k, v
        cache.frames -= 1

    return one_forward, generated_frame, chunk_forward


def training_work(model: MSCModel, batch: int, frames: int, bf16: bool = False):
    """A training step's forward and backward; ``bf16``: under bf16 autocast, as ``msc.train --bf16`` trains."""
    cfg = model.config
    clips = torch.rand(batch, frames, cfg.channels, cfg.image_size, cfg.image_size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    actions = torch.zeros(batch, frames, dtype=torch.long) if cfg.actions else None

    def step():
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            loss = diffusion_loss(model, clips, torch.Generator().manual_seed(1), max_chunk=8, frame_loss="log", actions=actions)
        loss.backward()

    return step


def profile_table(fn, rows: int = 12) -> str:
    from torch.profiler import ProfilerActivity, profile

    fn()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1
    lines = ["| operator | self CPU (ms) | share | calls |", "|---|---:|---:|---:|"]
    for e in events[:rows]:
        lines.append(f"| `{e.key}` | {e.self_cpu_time_total / 1000:.1f} | {100 * e.self_cpu_time_total / total:.0f} % | {e.count} |")
    return "\n".join(lines)


def works(model: MSCModel, steps: int, batch: int, frames: int, repeat: int) -> list:
    """``(name, closure, matmul-shape scale, runs)`` of every row, in the order they are measured."""
    one_forward, generated_frame, chunk_forward = frame_work(model, steps)
    return [("one-frame forward", one_forward, "frame", repeat),
            (f"generated frame ({steps} steps, chunks of 1)", generated_frame, "frame", repeat),
            (f"forward of a chunk of {CHUNK} frames", chunk_forward, "chunk", max(3, repeat // 3)),
            (f"training step ({batch} clips x {frames} frames)", training_work(model, batch, frames), "training",
             max(3, repeat // 5)),
            ("the same, bf16 autocast (msc.train --bf16)", training_work(model, batch, frames, bf16=True), "training",
             max(3, repeat // 5))]


def narrow_twin(model: MSCModel) -> MSCModel:
    """The model at the narrowest width its heads allow (6 channels a head, the rotary embedding's least), everything
    else the same: every operator, attention window and tensor count of the model, with a small fraction of its matmul
    FLOPs. Its time is the **floor**: what a faster matmul would not remove (dispatch, the attention's softmax over its
    windows, gathers, allocation)."""
    width = MIN_HEAD_DIM * model.config.num_heads
    config = MSCConfig(**{**model.config.to_dict(), "hidden_size": width})
    return MSCModel(config).train(model.training)


def measure(model: MSCModel, steps: int, batch: int, frames: int, repeat: int, profile: bool = True) -> dict:
    """Every row's FLOPs, time and kernel work, its floor (the same work of :func:`narrow_twin`), then the matmul rates
    that bound them. The frame work comes first, as in the app's process, whose allocator has seen no larger block than
    a generation's (the matmul rates' and the training step's blocks would change what a fresh process pays).
    ``profile``: with the two profile tables."""
    cfg = model.config
    tokens_frame = cfg.grid**2
    rows, scales = {}, {}
    measured = works(model, steps, batch, frames, repeat)
    for name, fn, scale, runs in measured:
        rows[name] = {"gflop": count_flops(fn) / 1e9, **timed(fn, runs)}
        scales[name] = scale
    twin = narrow_twin(model)
    for name, fn, _, runs in works(twin, steps, batch, frames, repeat):
        rows[name].update(floor_width=twin.config.hidden_size, floor_gflop=count_flops(fn) / 1e9,
                          floor_seconds=timed(fn, runs)["seconds"])
    rates = {name: {"frame": matmul_rate(tokens_frame, cfg.hidden_size, dtype, repeat),
                    "chunk": matmul_rate(tokens_frame * CHUNK, cfg.hidden_size, dtype, max(3, repeat // 3)),
                    "training": matmul_rate(tokens_frame * batch * frames, cfg.hidden_size, dtype, max(3, repeat // 3))}
             for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))}
    for name, row in rows.items():
        bound = {p: row["gflop"] * 1e9 / rates[p][scales[name]] for p in rates}
        row.update(gflop_per_s=row["gflop"] / row["seconds"], bound_fp32_s=bound["fp32"], bound_bf16_s=bound["bf16"],
                   over_fp32_bound=row["seconds"] / bound["fp32"], over_bf16_bound=row["seconds"] / bound["bf16"],
                   floor_over_fp32_bound=row["floor_seconds"] / bound["fp32"],
                   least_over_fp32_bound=(row["floor_seconds"] + bound["fp32"]) / bound["fp32"])
    one_forward, train_step = measured[0][1], measured[3][1]
    profiles = {"profile_forward": profile_table(one_forward), "profile_training": profile_table(train_step)} if profile else {}
    return {"rates_gflop_per_s": {p: {k: v / 1e9 for k, v in r.items()} for p, r in rates.items()}, "rows": rows, **profiles}


def format_report(report: dict, machine: str, system_allocator: dict | None = None) -> str:
    """The report as markdown; ``system_allocator``: the same measurement made with glibc's default allocator (a
    column of its times beside this one's, with the speed-up of :func:`msc.environment.keep_freed_memory`)."""
    r = report["rates_gflop_per_s"]
    lines = [f"Machine: {machine}.", "",
             f"Matmul rate at the model's shapes: fp32 {r['fp32']['frame']:.0f} GFLOP/s (one frame's tokens), "
             f"{r['fp32']['chunk']:.0f} ({CHUNK} frames'), {r['fp32']['training']:.0f} (a training batch's); "
             f"bf16 {r['bf16']['frame']:.0f} / {r['bf16']['chunk']:.0f} / {r['bf16']['training']:.0f}.", "",
             "| work | GFLOP | time (ms) | GFLOP/s | × over fp32 bound | × over bf16 bound |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, row in report["rows"].items():
        lines.append(f"| {name} | {row['gflop']:.2f} | {1000 * row['seconds']:.1f} | {row['gflop_per_s']:.1f} | "
                     f"{row['over_fp32_bound']:.1f} | {row['over_bf16_bound']:.1f} |")
    lines += floor_table(report)
    if system_allocator:
        lines += ["", "These timings run with the allocator setting every program of this repository applies "
                  "(`msc.environment.keep_freed_memory`: freed memory stays mapped in the process). The same work in a "
                  "child process with glibc's default allocator, in the same run (page faults and kernel time are "
                  "counted by the kernel; timings on a shared machine vary by ±20 % from run to run):", "",
                  "| work | page faults a call: default / kept | kernel CPU a call (ms): default / kept | "
                  "time (ms): default / kept |", "|---|---:|---:|---:|"]
        for name, row in report["rows"].items():
            other = system_allocator["rows"][name]
            lines.append(f"| {name} | {other['page_faults']:.0f} / {row['page_faults']:.0f} | "
                         f"{1000 * other['kernel_cpu_s']:.1f} / {1000 * row['kernel_cpu_s']:.1f} | "
                         f"{1000 * other['seconds']:.1f} / {1000 * row['seconds']:.1f} |")
    lines += ["", "Where the one-frame forward's time goes:", "", report["profile_forward"], "",
              "Where the training step's time goes:", "", report["profile_training"]]
    return "\n".join(lines)


def floor_table(report: dict) -> list:
    """The floor of every row (:func:`narrow_twin`) against its fp32 bound, as markdown lines."""
    any_row = next(iter(report["rows"].values()))
    width = any_row["floor_width"]
    lines = ["", f"**The floor**: the same work in a model {width} wide ({MIN_HEAD_DIM} channels a head; every operator, "
             "window and tensor count the same; the transformer's matmul FLOPs shrink with the width, work on pixels such "
             "as an anchor's does not). What it takes is what a faster matmul would not remove: dispatch, the attention's "
             "softmax over its windows, gathers, allocation. At best a row takes about its floor plus its matmuls at the "
             "measured rate (about: the twin's own small matmuls are in its floor, and timings move by ±20 %), so "
             "(floor + bound) / bound is about the least × over its fp32 bound that PyTorch's eager operators reach on "
             "this machine.", "",
             f"| work | GFLOP at width {width} | floor (ms) | floor over fp32 bound | floor + bound, × over fp32 bound |",
             "|---|---:|---:|---:|---:|"]
    for name, row in report["rows"].items():
        lines.append(f"| {name} | {row['floor_gflop']:.3f} | {1000 * row['floor_seconds']:.1f} | "
                     f"{row['floor_over_fp32_bound']:.1f} | {row['least_over_fp32_bound']:.1f} |")
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default="weights")
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--repeat", type=int, default=15)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="bench/results/speed", help="writes OUT.md and OUT.json")
    p.add_argument("--system-allocator", action="store_true",
                   help="measure with glibc's default allocator (the comparison column; OUT.json only)")
    args = p.parse_args(argv)
    if not args.system_allocator:
        keep_freed_memory()
    torch.set_num_threads(args.threads)
    model = MSCModel.from_pretrained(os.path.abspath(args.weights)).train()
    report = measure(model, args.steps, args.batch, args.frames, args.repeat, profile=not args.system_allocator)
    if args.system_allocator:
        with open(args.out + ".json", "w") as f:
            json.dump(report, f)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        options = ["--weights", args.weights, "--steps", str(args.steps), "--batch", str(args.batch), "--frames",
                   str(args.frames), "--repeat", str(args.repeat), "--threads", str(args.threads)]
        subprocess.run([sys.executable, "-m", "bench.speed", *options, "--system-allocator", "--out",
                        os.path.join(tmp, "system")], check=True, cwd=ROOT)
        with open(os.path.join(tmp, "system.json")) as f:
            system = json.load(f)
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {args.threads} threads"
    text = format_report(report, machine, system)
    print(text)
    if args.out:
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out + ".md", "w") as f:
            f.write(f"`python -m bench.speed --weights {args.weights}`\n\n{text}\n")
        with open(args.out + ".json", "w") as f:
            json.dump({**report, "machine": machine, "weights": args.weights, "system_allocator": system}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
