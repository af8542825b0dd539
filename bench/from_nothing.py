"""Videos from nothing: how many denoising steps the first frame takes (``SamplerSettings.first_frame_steps``).

    python -m bench.from_nothing --data data     # the table in bench/results/from_nothing.md (about 10 minutes)

A video from nothing has no frame to start from. Its first frame is a whole picture drawn from noise, while
every later frame only draws its change from the frame before (the previous-frame prior, docs/design.md §4),
which the sampler's default of a few steps suits. For each value of ``--first-steps`` (0: the first frame is
part of the first chunk, with the default steps), the bundled model samples ``--count`` videos of 16 frames
from nothing per held-out set, every other setting at its default, and they are compared with that many
held-out clips of every set (real video, the camera over photographs, procedural: the kinds the model was
trained on):

* the **Fréchet Video Distance** (:mod:`msc.fvd`; needs ``python -m msc.i3d`` once) of the generated
  clips against the pooled held-out clips;
* their sharpness against the held-out clips' (far above 1: noise; far below: blur or flat colour);
* the model calls a video takes (the seconds, measured in one batch, are in the JSON).

**The rule** (:data:`RULE`): the default is the value with the lowest FVD. A contact sheet (one row per
value, the first video's every other frame) goes beside the table.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from dataclasses import replace

import torch

from bench import write_results
from release.assets import write_contact_sheet
from msc.data.mixture import PreparedData
from msc.evaluate import SETS, held_out_set
from msc.fvd import FVD
from msc.i3d import load_i3d
from msc.metrics import sharpness
from msc.model import MSCModel
from msc.sampling import SamplerSettings, load_presets, sample_video

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FRAMES = 16  # the usual FVD clip length
FIRST_STEPS = (0, 4, 16, 32)
RULE = "the lowest FVD against the pooled held-out clips"


def from_nothing(model, settings: SamplerSettings, count: int) -> dict:
    """``count`` videos of :data:`FRAMES` frames from nothing: ``{"videos": [N, T, 3, S, S], "calls", "seconds"}``."""
    calls = []
    start = time.perf_counter()
    video = sample_video(model, None, FRAMES, settings, batch=count, callback=lambda info: calls.append(info)).video
    return {"videos": video, "calls": len(calls), "seconds": time.perf_counter() - start}



def from_nothing_table(report: dict) -> str:
    """The first-frame study (``python -m bench.from_nothing``, its JSON): one row per ``first_frame_steps`` with
    the FVD of videos from nothing against held-out clips, their sharpness against the clips' and their model calls, the
    rule's choice and the shipped default marked, then the rule in words."""
    n = report["count_per_set"] * len(report["sets"])
    lines = [f"{n} videos of {report['frames']} frames from nothing per value ({report['sampler']['steps']} steps, chunks of "
             f"{report['sampler']['chunk']} after the first frame), FVD against {n} held-out clips ({report['count_per_set']} "
             f"from each of the {', '.join(report['sets'])} sets).", "",
             "| first frame's steps | FVD | sharpness vs held-out | model calls per video |", "|---:|---:|---:|---:|"]
    for r in report["rows"]:
        first = r["first_frame_steps"]
        marks = [name for name, hit in (("chosen", first == report["chosen"]), ("the default", first == report["default"])) if hit]
        name = (str(first) if first else f"0 (in the first chunk: {report['sampler']['steps']})") + (
            f" **({', '.join(marks)})**" if marks else "")
        lines.append(f"| {name} | {r['fvd']:.1f} | {r['sharpness_ratio']:.2f}× | {r['calls']} |")
    lines += ["", f"Rule: {report['rule']} → {report['chosen']}; the default: {report['default']}. The first video of each "
              f"value, every other frame, one row per value in this order: `{report['sheet']}`."]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default=os.path.join(ROOT, "weights"))
    p.add_argument("--data", required=True, help="the prepared data folder (python -m msc.data.prepare): the held-out clips")
    p.add_argument("--first-steps", type=int, nargs="+", default=list(FIRST_STEPS))
    p.add_argument("--count", type=int, default=16, help="held-out clips per set, and videos per value per set")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "from_nothing"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = MSCModel.from_pretrained(os.path.abspath(args.weights)).eval()
    data = PreparedData(args.data)
    size = model.config.image_size
    reference = torch.cat([held_out_set(name, args.count, FRAMES, size, data) for name in SETS])  # [N, T, 3, S, S]
    fvd = FVD(load_i3d(), reference)
    sharp_reference = float(sharpness(reference).mean())
    n = reference.shape[0]
    rows, sheet = [], []
    defaults = load_presets(os.path.abspath(args.weights))["default"]  # the weights' own default settings
    for first in args.first_steps:
        made = from_nothing(model, replace(defaults, first_frame_steps=first), n)
        videos = made["videos"]
        rows.append({"first_frame_steps": first, "fvd": fvd(videos), "sharpness_ratio": float(sharpness(videos).mean()) / sharp_reference,
                     "calls": made["calls"], "seconds_per_video": made["seconds"] / n})
        sheet.append(videos[0])
        print(rows[-1], flush=True)
    best = min(rows, key=lambda r: r["fvd"])
    write_contact_sheet(args.out + ".png", sheet, every=2)
    report = {"rule": RULE, "count_per_set": args.count, "sets": list(SETS), "frames": FRAMES,
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads {args.threads}",
              "weights": os.path.relpath(os.path.abspath(args.weights), ROOT), "sampler": {"steps": defaults.steps, "chunk": defaults.chunk},
              "rows": rows, "chosen": best["first_frame_steps"], "default": defaults.first_frame_steps,
              "sheet": os.path.relpath(os.path.abspath(args.out + ".png"), ROOT)}
    write_results(args.out, report, [f"`python -m bench.from_nothing` ({report['machine']}), the weights in `{report['weights']}`:",
                                     "", from_nothing_table(report)])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
