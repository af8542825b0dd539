"""Which sampler settings make the best continuations: the evidence for the default settings.

    python -m bench.settings --data data        # the table in bench/results/settings.md (about 50 minutes)

For every pair of denoising steps × chunk size in ``--grid`` (and every anchor after the context in
``--context-anchors``: ``SamplerSettings.context_anchor``), the bundled model is scored by
:mod:`msc.evaluate` exactly as its card scores it (one subprocess per setting, ``--jobs`` at a
time with one torch thread each):

* all the held-out real windows (8 context frames, 8 generated): PSNR / SSIM, the motion of the
  generated frames against the truth's, and the **Fréchet Video Distance** of the 16-frame clips
  against the ground truth's (:mod:`msc.fvd`; needs ``python -m msc.i3d`` once);
* a 256-frame rollout from the first ``--rollout-clips`` real clips (default :data:`ROLLOUT_CLIPS`, the model card's;
  the worst clip counts, so more clips make a stricter and steadier measure): the colour drift of the last
  32 frames (the card's bar: 0.05), their sharpness against the context's and how much they still move against the
  context (the bar: 0.5; a rollout that slows to a halt is a frozen picture).

**The rule** (:data:`RULE`): among the settings whose rollout keeps its colour and keeps moving (when none does both,
among those that keep their colour; when none keeps its colour, no setting), the lowest FVD. FVD
compares the distribution of whole continuations with the truth's, so it punishes both blur and
made-up motion, where PSNR rewards a blurred average; but it sees 16 frames, and the app extends
videos for as long as one asks, so a setting whose colour drifts away over 256 frames does not
qualify. FVD is itself a measurement with noise (the sampler's noise changes with the seed), so
every qualifying setting is scored at :data:`SEEDS` seeds: the settings whose mean FVD is within
two standard errors of the lowest are tied, and of those the one whose rollout's sharpness is
closest to the context's wins (the bar: objects neither dissolve into patch texture, which raises
the sharpness, nor collapse to flat colour, which lowers it). The speed of each setting is
``bench.stream``'s table.

**When no setting keeps its colour, none qualifies** (decided after study 32, ``docs/training.md``, before the rule's
next run): the report says so and the weights keep their default. Over 16 rollout clips no setting keeps its colour (the
default's worst clip drifts 0.079); the two ways to rank failures both defeat the rule's purpose: the least drift
rewards the stillest rollout (a frozen picture drifts 0), and the lowest FVD ignores the colour altogether (it took
chunks of 4 whose worst clip drifts 0.284). A default is ruled over the card's 4 rollout clips (:data:`ROLLOUT_CLIPS`).

Each setting's report is kept in ``--runs`` and reused while it is complete and newer than the weights.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
from typing import Optional

from bench import write_results
from msc.evaluate import COLOUR_TOLERANCE, MOTION_KEPT, model_names

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GRID = ((1, 4), (1, 8), (2, 4), (2, 8), (4, 4), (4, 8), (8, 8), (16, 4), (16, 8))
ROLLOUT_CLIPS = 4  # as the model card's rollout
SEEDS = 3  # FVD seeds per setting whose rollout keeps its colour (seed 0 is the grid's own evaluation)
RULE = ("among the settings whose 256-frame rollout keeps the colour within "
        f"{COLOUR_TOLERANCE} and still moves at least {MOTION_KEPT:g}× as much as its context (those that keep the colour "
        "when none does both, and none when no setting keeps its colour; FVD sees 16 frames, and the app extends videos "
        "as long as one asks), the lowest FVD (mean over "
        f"{SEEDS} seeds; it compares whole continuations with the truth's, so it punishes blur and made-up motion alike, "
        "where PSNR rewards a blurred average); settings within two standard errors of it are tied, and of those the one "
        "whose rollout's sharpness is closest to the context's (objects neither dissolve into texture nor collapse to flat colour)")


def fvd_mean_and_error(row: dict) -> tuple:
    """The mean of a setting's FVDs over its seeds and the standard error of that mean (0 with one seed)."""
    values = row["fvd_seeds"]
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    variance = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, math.sqrt(variance / len(values))


def qualifying(rows: list) -> list:
    """The settings whose rollout keeps its colour and keeps moving; else those that keep the colour; else none."""
    coloured = [r for r in rows if r["drift"] <= COLOUR_TOLERANCE]
    return [r for r in coloured if r.get("motion_kept", 0.0) >= MOTION_KEPT] or coloured


def choose(rows: list) -> Optional[dict]:
    """The row :data:`RULE` picks: of the :func:`qualifying` settings, those whose mean FVD is within two standard
    errors (of the difference) of the lowest mean are tied; of those, the rollout sharpness closest to the context's.
    None when no setting qualifies."""
    kept = qualifying(rows)
    if not kept:
        return None
    best_mean, best_error = fvd_mean_and_error(min(kept, key=lambda r: fvd_mean_and_error(r)[0]))

    def tied(row: dict) -> bool:
        mean, error = fvd_mean_and_error(row)
        return mean - best_mean <= 2 * math.sqrt(error**2 + best_error**2)

    return min((r for r in kept if tied(r)), key=lambda r: (abs(math.log(max(r["sharpness_ratio"], 1e-9))), fvd_mean_and_error(r)[0]))


def report_path(runs: str, steps: int, chunk: int, seed: int = 0, anchor: str = "prior") -> str:
    return os.path.join(runs, f"steps{steps}_chunk{chunk}" + (f"_{anchor}" if anchor != "prior" else "")
                        + (f"_seed{seed}" if seed else "") + ".json")


def setting(entry: tuple) -> tuple:
    """A grid entry ``(steps, chunk)`` or ``(steps, chunk, context_anchor)`` as the triple."""
    return (*entry, "prior") if len(entry) == 2 else tuple(entry)


def evaluate_settings(weights: str, data: str, grid, runs: str, jobs: int, seeds=(0,),
                      rollout_clips: int = ROLLOUT_CLIPS) -> None:
    """Run ``msc.evaluate`` for every setting of ``grid`` at every one of ``seeds`` whose report is missing,
    unfinished or older than the weights: at seed 0 with the 256-frame rollout, at other seeds the FVD alone."""
    os.makedirs(runs, exist_ok=True)
    weights_time = os.path.getmtime(os.path.join(weights, "model.safetensors"))

    def finished(path: str) -> bool:  # msc.evaluate writes its report after every part; "gates" comes with the last
        return os.path.isfile(path) and os.path.getmtime(path) > weights_time and "gates" in json.load(open(path))

    todo = [(s, c, a, seed) for seed in seeds for s, c, a in map(setting, grid)
            if not finished(report_path(runs, s, c, seed, a))]
    running = []
    for steps, chunk, anchor, seed in todo:
        if len(running) == jobs:
            _wait(running.pop(0))
        path = report_path(runs, steps, chunk, seed, anchor)
        rollout = ["--rollout", "256", "--rollout-clips", str(rollout_clips)] if seed == 0 else ["--rollout", "0"]
        args = [sys.executable, "-m", "msc.evaluate", "--weights", weights, "--data", data, "--sets", "real", "--clips", "256",
                *rollout, "--fvd", "--steps", str(steps), "--chunk", str(chunk), "--seed", str(seed), "--context-anchor", anchor,
                "--threads", "1", "--json", path,
                "--fvd-cache", os.path.join(runs, "i3d-features")]
        print(f"evaluating steps {steps}, chunk {chunk}, anchor {anchor}, seed {seed}", flush=True)
        running.append(subprocess.Popen(args, stdout=open(path[: -len(".json")] + ".log", "w"), stderr=subprocess.STDOUT))
    for p in running:
        _wait(p)


def _wait(process: subprocess.Popen) -> None:
    if process.wait():
        raise RuntimeError(f"an evaluation failed (its log is beside its report): {' '.join(process.args)}")


def _model_fvd(report: dict) -> float:
    real = next(iter(report["sets"].values()))
    return real["methods"][model_names(real["methods"])[0]]["fvd"]


def summarise(runs: str, grid) -> tuple:
    """One row per setting (the numbers of its report that the table shows; ``fvd_seeds``: the FVD at seed 0 and at
    every further seed whose report is in ``runs``; ``fvd_mean``, ``fvd_error``: their mean and its standard error),
    and copy-last's scores."""
    rows = []
    for steps, chunk, anchor in map(setting, grid):
        with open(report_path(runs, steps, chunk, anchor=anchor)) as f:
            report = json.load(f)
        real = next(iter(report["sets"].values()))  # the one set scored: the held-out real windows
        model = model_names(real["methods"])[0]
        m, r = real["methods"][model], report["rollout"]
        rows.append({"steps": steps, "chunk": chunk, "context_anchor": anchor, "clips": real["clips"], "psnr": m["psnr_mean"], "ssim": m["ssim_mean"],
                     "motion": m["motion"], "motion_truth": m["motion_truth"], "fvd": m["fvd"],
                     "drift": r["colour_drift_max"], "sharpness_ratio": r["sharpness_ratio"], "rollout_clips": r["clips"],
                     "motion_kept": r.get("motion_kept", float("nan")),
                     "fvd_seeds": [m["fvd"]]})
        for seed in range(1, SEEDS):
            path = report_path(runs, steps, chunk, seed, anchor)
            if os.path.isfile(path):
                rows[-1]["fvd_seeds"].append(_model_fvd(json.load(open(path))))
        rows[-1]["fvd_mean"], rows[-1]["fvd_error"] = fvd_mean_and_error(rows[-1])
    copy = real["methods"]["copy-last"]
    return rows, {"psnr": copy["psnr_mean"], "ssim": copy["ssim_mean"], "fvd": copy["fvd"]}



def settings_table(report: dict) -> str:
    """The sampler-settings study (``python -m bench.settings``, its JSON): one row per denoising steps × chunk
    with the real windows' PSNR / SSIM, motion (truth), FVD (at seed 0, and ``fvd_mean`` ± ``fvd_error`` over the
    seeds where the rule measured more) and the 256-frame rollout's colour drift, sharpness and motion kept, the rule's
    choice and the shipped default marked, then the rule in words."""
    rows = report["grid"]
    copy = report["copy_last"]
    def key(r):  # (steps, chunk, anchor after the context); reports before the anchor was a setting: the prior
        return r["steps"], r["chunk"], r.get("context_anchor", "prior")

    choice = key(report["choice"]) if report["choice"] else None  # None: no setting qualified
    default = key(report["default"])
    anchors = any(key(r)[2] != "prior" for r in rows)  # a column for the anchor only where the grid varies it
    seeds = report.get("seeds", 1)
    lines = [f"Held-out real windows ({rows[0]['clips']} × 16 frames) and a 256-frame rollout from {rows[0]['rollout_clips']} "
             "real clips; other settings as the sampler's defaults."
             + (f" The settings the rule qualifies are also scored at {seeds - 1} more seeds." if seeds > 1 else ""),
             "",
             "| steps | chunk | " + ("anchor after the context | " if anchors else "") + "real PSNR / SSIM | motion (truth) | FVD | "
             + (f"FVD over {seeds} seeds | " if seeds > 1 else "") + "rollout colour drift | rollout sharpness | rollout motion kept |",
             "|---:|---:|" + ("---|" if anchors else "") + "---|---|---:|" + ("---:|" if seeds > 1 else "") + "---:|---:|---:|",
             f"| copy the last frame | | {'| ' if anchors else ''}{copy['psnr']:.2f} / {copy['ssim']:.3f} | 0 | {copy['fvd']:.1f} | "
             + ("– | " if seeds > 1 else "") + "0 | 1× | 0 |"]
    for r in rows:
        marks = [name for name, hit in (("chosen", key(r) == choice), ("the default", key(r) == default)) if hit]
        tag = f" **({', '.join(marks)})**" if marks else ""
        over_seeds = ""
        if seeds > 1:
            over_seeds = f"{r['fvd_mean']:.1f} ± {r['fvd_error']:.1f} | " if len(r.get("fvd_seeds", ())) > 1 else "– | "
        lines.append(f"| {r['steps']} | {r['chunk']}{tag} | " + (f"{key(r)[2]} | " if anchors else "")
                     + f"{r['psnr']:.2f} / {r['ssim']:.3f} | {r['motion']:.4f} "
                     f"({r['motion_truth']:.4f}) | {r['fvd']:.1f} | {over_seeds}{r['drift']:.3f} | {r['sharpness_ratio']:.2f}× | "
                     f"{r.get('motion_kept', float('nan')):.2f} |")
    def said(k):
        return f"steps {k[0]}, chunk {k[1]}" + (f", anchor after the context {k[2]}" if anchors else "")

    chosen = said(choice) if choice else f"no setting qualifies (every rollout's colour drifts past {COLOUR_TOLERANCE})"
    lines += ["", f"Rule: {report['rule']} → {chosen}; the default: {said(default)}."]
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default=os.path.join(ROOT, "weights"))
    p.add_argument("--data", default=os.path.join(ROOT, "data"), help="prepared data (python -m msc.data.prepare)")
    p.add_argument("--grid", nargs="+", default=[f"{s}x{c}" for s, c in GRID], help="STEPSxCHUNK pairs")
    p.add_argument("--runs", default=os.path.join(ROOT, "runs", "settings"), help="where each setting's report is kept")
    p.add_argument("--jobs", type=int, default=2, help="evaluations at a time (one torch thread each)")
    p.add_argument("--context-anchors", nargs="+", default=["prior"],
                   help="anchors after the context to try with every steps x chunk (SamplerSettings.context_anchor)")
    p.add_argument("--rollout-clips", type=int, default=ROLLOUT_CLIPS, help="clips of the 256-frame rollout (the worst counts)")
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "settings"))
    args = p.parse_args(argv)
    grid = [(*(int(v) for v in pair.split("x")), anchor) for anchor in args.context_anchors for pair in args.grid]

    from msc.sampling import load_presets

    evaluate_settings(args.weights, args.data, grid, args.runs, args.jobs, rollout_clips=args.rollout_clips)
    rows, _ = summarise(args.runs, grid)
    kept = [(r["steps"], r["chunk"], r["context_anchor"]) for r in qualifying(rows)]
    evaluate_settings(args.weights, args.data, kept, args.runs, args.jobs, seeds=range(1, SEEDS))
    rows, copy_last = summarise(args.runs, grid)
    choice = choose(rows)
    default = load_presets(os.path.abspath(args.weights))["default"]  # the weights' own default settings
    machine = f"{platform.machine()}, {os.cpu_count()} cores"
    command = ("python -m bench.settings" + ("" if [tuple(map(int, g.split("x"))) for g in args.grid] == list(GRID) else
                                             " --grid " + " ".join(args.grid))
               + ("" if args.context_anchors == ["prior"] else " --context-anchors " + " ".join(args.context_anchors))
               + ("" if args.rollout_clips == ROLLOUT_CLIPS else f" --rollout-clips {args.rollout_clips}"))
    report = {"machine": machine, "command": command, "jobs": args.jobs, "grid": rows, "copy_last": copy_last,
              "rule": RULE, "seeds": SEEDS,
              "choice": choice and {"steps": choice["steps"], "chunk": choice["chunk"], "context_anchor": choice["context_anchor"]},
              "default": {"steps": default.steps, "chunk": default.chunk, "context_anchor": default.context_anchor}}
    lines = [f"Measured by `{command}` on {machine} ({args.jobs} evaluation{'s' * (args.jobs != 1)} at a time, one torch thread each).", "",
             settings_table(report)]
    write_results(args.out, report, lines)


if __name__ == "__main__":
    main()
