"""The work bound of one app request, measured: ``python -m bench.work_bound`` (about 15 minutes, on an idle machine).

The app refuses a request whose time, estimated from its model calls, tokens and frames (:func:`msc.studio.check_work`),
exceeds :data:`msc.studio.MAX_REQUEST_SECONDS`. This bench checks that estimate twice:

1. **The sampler's part**: the bundled model's sampler, in process, over :data:`SHAPES` (chunk sizes, the three frame
   schedules, history guidance, from nothing, wide windows); each run's time beside the estimate with the app's
   constants, and the constants a least-squares fit of these runs gives.
2. **The worst accepted requests**: every combination of steps, chunk, schedule, ``ar_step``, guidance, source (from
   nothing with 100 first-frame steps, or 64 frames of context) and windows (the model's, or every window at its
   largest) at the most frames the bound accepts; for each schedule, windows and guidance the one with the largest
   estimate is sent to ``python app.py``'s ``/generate`` through ``gradio_client`` and timed end to end (decoding,
   sampling, the frames shown live and the mp4), and the app's own part (per call and per frame) is fitted on them.
   The bar: every one finishes within 60 s.
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import time
from dataclasses import replace

import numpy as np
import torch

from bench import ROOT, app_server, write_results

CLIP = os.path.join(ROOT, "assets", "rollout256.mp4")  # long enough for 64 frames of context
WIDEST = dict(k_s=16, k_t=16, k_lo=16, d=8)
SHAPES = [  # (name, sampler changes, context frames, new frames): short in-process runs for the fit
    ("chunks of 1, 2 steps", dict(steps=2, chunk=1), 8, 32),
    ("chunks of 1, 8 steps, guided", dict(steps=8, chunk=1, history_guidance=2.0), 8, 16),
    ("chunks of 8, 8 steps", dict(steps=8, chunk=8), 8, 32),
    ("diffusion forcing, ar_step 1, 16 steps", dict(steps=16, schedule="diffusion-forcing", ar_step=1), 8, 32),
    ("full sequence, 4 steps", dict(steps=4, schedule="full-sequence"), 8, 64),
    ("from nothing, chunks of 1, 4 steps", dict(steps=4, chunk=1), 0, 32),
    ("chunks of 2, 16 steps, guided", dict(steps=16, chunk=2, history_guidance=2.0), 8, 16),
    ("widest windows, chunks of 1", dict(steps=4, chunk=1, windows=WIDEST), 16, 24),
    ("widest windows, chunks of 8", dict(steps=4, chunk=8, windows=WIDEST), 16, 24),
    ("k_t 16, diffusion forcing", dict(steps=8, schedule="diffusion-forcing", ar_step=1, windows=dict(k_t=16)), 16, 24),
    ("k_t 8, k_lo 8, chunks of 4, guided", dict(steps=4, chunk=4, history_guidance=2.0, windows=dict(k_t=8, k_lo=8)), 16, 24),
    ("widest windows, full sequence", dict(steps=2, schedule="full-sequence", windows=WIDEST), 16, 48),
]


def _sampler(base, changes: dict):
    from msc.model import AttentionWindows

    changes = dict(changes)
    windows = replace(base.windows or AttentionWindows(), **changes.pop("windows", {}))
    return replace(base, windows=windows, **changes)


def fit(model, base) -> dict:
    """Time every shape in process; the app's estimate beside it, and the least-squares constants."""
    from msc.sampling import sample_frames, sampling_work
    from msc.studio import model_seconds, work_terms

    grid, rows = model.config.grid, []
    clip = torch.rand(1, 16, model.config.channels, model.config.image_size, model.config.image_size,
                      generator=torch.Generator().manual_seed(0)) * 2 - 1
    for name, changes, context, frames in SHAPES:
        s = _sampler(base, changes)
        start = time.perf_counter()
        for _ in sample_frames(model, clip[:, :context] if context else None, frames, s):
            pass
        seconds = time.perf_counter() - start
        work = sampling_work(s, context, frames)
        rows.append({"shape": name, "calls": work.calls, "frame_passes": work.frame_passes, "seconds": seconds,
                     "estimate": model_seconds(work, grid, s.windows), "features": list(work_terms(work, grid, s.windows))})
        print(f"{name}: {seconds:.2f} s, estimate {rows[-1]['estimate']:.2f} s", flush=True)
    a = np.array([r["features"] for r in rows])
    y = np.array([r["seconds"] for r in rows])
    constants, *_ = np.linalg.lstsq(a, y, rcond=None)
    return {"rows": rows, "fitted": dict(zip(("CALL_SECONDS", "TOKEN_SECONDS", "KEY_SECONDS"), constants.tolist()))}


def _most_frames(s, context: int, grid: int) -> int:
    """The most new frames (≤ 256) the bound accepts at these settings (0: none)."""
    from msc.studio import UserError, check_work

    def fits(frames):
        try:
            check_work(s, context, frames, grid)
            return True
        except UserError:
            return False

    lo, hi = 0, 256
    while lo < hi:  # the estimate grows with the frames
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
    return lo


def worst_accepted(base, grid: int) -> list:
    """Per schedule, windows and guidance: the accepted request with the largest estimate, as app controls."""
    from msc.sampling import sampling_work
    from msc.studio import model_seconds, request_seconds

    best = {}
    schedules = [("autoregressive", c, 2) for c in (1, 2, 4, 8, 16)] + \
                [("diffusion-forcing", 1, a) for a in (1, 2, 4, 16)] + [("full-sequence", 1, 2)]
    for (schedule, chunk, ar_step), steps, guided, context, wide in itertools.product(
            schedules, (1, 2, 4, 8, 16, 32, 64, 100), (False, True), (0, 64), (False, True)):
        changes = dict(steps=steps, chunk=chunk, schedule=schedule, ar_step=ar_step, first_frame_steps=100,
                       history_guidance=2.0 if guided else 1.0, windows=WIDEST if wide else {})
        s = _sampler(base, changes)
        frames = _most_frames(s, context, grid)
        if not frames:
            continue
        work = sampling_work(s, context, frames)
        estimate = request_seconds(work, frames, grid, s.windows)
        key = (schedule, wide, guided)  # ties (within half a second) go to the smaller chunk: more calls per token
        rank = (round(2 * estimate), -chunk)
        if key not in best or rank > best[key]["rank"]:
            controls = {**{k: v for k, v in changes.items() if k != "windows"}, **(WIDEST if wide else {}),
                        "frames": frames, "context": max(context, 1)}
            best[key] = {"controls": controls, "from_nothing": not context, "estimate": estimate, "rank": rank,
                         "calls": work.calls, "model_estimate": model_seconds(work, grid, s.windows)}
    return [{k: v for k, v in r.items() if k != "rank"} for r in best.values()]


def end_to_end(weights: str, requests: list) -> list:
    from gradio_client import Client, handle_file

    with app_server("--weights", weights) as url:
        client = Client(url, verbose=False)
        client.predict(clip=handle_file(CLIP), frames=2, api_name="/generate")  # warm-up
        for r in requests:
            clip = None if r["from_nothing"] else handle_file(CLIP)
            start = time.perf_counter()
            client.predict(clip=clip, **r["controls"], api_name="/generate")
            r["seconds"] = time.perf_counter() - start
            print(f"{r['controls']}: {r['seconds']:.1f} s (estimate {r['estimate']:.1f} s)", flush=True)
    return requests


def fit_shown(requests: list) -> dict:
    """Least squares of the app's own time (end to end minus the sampler's estimate) on calls and frames."""
    a = np.array([[r["calls"], r["controls"]["frames"]] for r in requests], dtype=float)
    y = np.array([r["seconds"] - r["model_estimate"] for r in requests])
    constants, *_ = np.linalg.lstsq(a, y, rcond=None)
    return dict(zip(("SHOWN_CALL_SECONDS", "SHOWN_FRAME_SECONDS"), constants.tolist()))


def describe(controls: dict, from_nothing: bool) -> str:
    c = controls
    shape = {"autoregressive": f"chunks of {c['chunk']}", "diffusion-forcing": f"diffusion forcing, ar_step {c['ar_step']}",
             "full-sequence": "full sequence"}[c["schedule"]]
    source = "from nothing (100 first-frame steps)" if from_nothing else f"{c['context']} context frames"
    windows = ", widest windows" if c.get("k_t") == WIDEST["k_t"] else ""
    guided = ", history guidance" if c["history_guidance"] != 1 else ""
    return f"{c['frames']} frames × {c['steps']} steps, {shape}{guided}{windows}, {source}"


def main(argv=None) -> int:
    from msc.model import MSCModel
    from msc.sampling import load_presets
    from msc import studio

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default=os.path.join(ROOT, "weights"))
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "work_bound"))
    args = p.parse_args(argv)
    torch.set_num_threads(os.cpu_count() or 1)  # as the app runs
    model = MSCModel.from_pretrained(args.weights).eval()
    base = load_presets(args.weights)["default"]
    fitted = fit(model, base)
    requests = end_to_end(args.weights, worst_accepted(base, model.config.grid))
    machine = f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"
    lines = [f"`python -m bench.work_bound` on {machine}: the app refuses a request whose estimated time exceeds "
             f"{studio.MAX_REQUEST_SECONDS} s.", "",
             "The sampler's part of the estimate against its time in process (the app's constants: "
             f"{studio.CALL_SECONDS * 1e3:.1f} ms per call, {studio.TOKEN_SECONDS * 1e6:.1f} µs per token, "
             f"{studio.KEY_SECONDS * 1e9:.0f} ns per token and key; this run fits "
             + ", ".join(f"{v:.3g}" for v in fitted["fitted"].values()) + "):", "",
             "| shape | model calls | frame passes | measured (s) | estimate (s) |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {r['shape']} | {r['calls']} | {r['frame_passes']} | {r['seconds']:.2f} | {r['estimate']:.2f} |"
              for r in fitted["rows"]]
    lines += ["", "The worst request the bound accepts, per schedule, windows and guidance, through `/generate` end to end:", "",
              "| request | estimate (s) | end to end (s) |", "|---|---:|---:|"]
    lines += [f"| {describe(r['controls'], r['from_nothing'])} | {r['estimate']:.1f} | {r['seconds']:.1f} |" for r in requests]
    shown = fit_shown(requests)
    worst = max(r["seconds"] for r in requests)
    lines += ["", f"The app's own time per request (its constants: {studio.SHOWN_CALL_SECONDS * 1e3:.1f} ms per call, "
              f"{studio.SHOWN_FRAME_SECONDS * 1e3:.0f} ms per frame shown) fitted on these requests: "
              f"{shown['SHOWN_CALL_SECONDS'] * 1e3:.1f} ms per call, {shown['SHOWN_FRAME_SECONDS'] * 1e3:.0f} ms per frame.",
              "", f"Worst accepted request: {worst:.1f} s end to end (bar: 60 s)."]
    write_results(args.out, {"machine": machine, "fit": fitted, "shown_fit": shown, "worst_accepted": requests,
                             "worst_s": worst}, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
