"""Write the bundled model's card, ``weights/README.md``, from measured files only:

    python -m release.card --bundled            # the files of BUNDLED; any flag below replaces one
    python -m release.card --bundled --readme   # the tables of docs/results.md

``--run``: the record of the run that made the weights (its checkpoint's ``step``, ``elapsed`` seconds, ``args`` and
``config``, as in its ``state.json``); ``--history``: the folder of the training records of the weights it started from
(``*.state.json``, one per run); ``--eval``: ``python -m msc.evaluate --clips 16 --rollout 256 --rollout-clips 4
--gates-plot …``; ``--fvd-eval``: ``--sets real --clips 256 --rollout 0 --fvd``; ``--settings``: ``python -m
bench.settings`` (which sampler settings the default is); ``--from-nothing``: ``python -m bench.from_nothing``. With
``--readme`` it prints the tables of ``docs/results.md`` instead (a test keeps the page equal to them).
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import sys
from typing import Optional

from msc.evaluate import COLOUR_TOLERANCE, MOTION_KEPT, model_names

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # where the records' paths are relative to
# The measured files the bundled card (weights/README.md) and docs/results.md's tables are written from
# (``--bundled``); tests keep both equal to what these files say. They change when weights or default settings ship
# (docs/training.md, "Shipping a model").
BUNDLED = {"run": "studies/motion-whole/shipped_checkpoint.json", "history": "studies/history",
           "eval": "studies/default-layered/evaluation.json", "fvd_eval": "studies/default-layered/evaluation_fvd.json",
           "settings": "studies/default-layered/settings.json", "from_nothing": "studies/motion-whole/from_nothing.json",
           "equal_time_eval": "studies/equal-time/evaluation_equal_time.json",
           "equal_time_fvd_eval": "studies/equal-time/evaluation_fvd_equal_time.json"}
LABELS = {"copy-last": "copy the last frame", "flow-extrapolation": "flow extrapolation (Farnebäck, warped back)",
          "flow-splatting": "flow splatting (DIS, pushed forward)",
          "flow-splatting-whole": "flow splatting by whole pixels (DIS, pushed forward)",
          "flow-splatting-layered": "flow splatting in layers (DIS, pushed forward, what moves unlike the camera on top)"}
PRIORS = {"previous_frame": "the last finished frame", "flow": "the last finished frame carried along the Farnebäck "
          "flow of the two before it (warped back)", "flow_splat": "the last finished frame pushed forward along the DIS "
          "flow of the two before it (splatted)", "flow_splat_whole": "the last finished frame pushed forward by whole "
          "pixels along the DIS flow of the two before it (splatted, no pixel blended with its neighbours)", "flow_splat_layered":
          "the last finished frame pushed forward along the DIS flow of the two before it by softmax splatting, what moves "
          "unlike the camera drawn over what it lands on", "none": "nothing (plain rectified flow)"}


def _load(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


EQUAL_TIME = {"msc": "MSC, 20 minutes of training", "dense": "dense attention, the same 20 minutes"}


def _label(name: str, labels: Optional[dict] = None) -> str:
    labels = {**LABELS, **(labels or {})}
    return labels.get(name, f"MSC (`{name}`)" if name != "msc" else "MSC (these weights)")


def _motion_ratio(scores: dict) -> str:
    """The motion ratio of a method's scores (reports older than the ratio carry its two motions, or neither)."""
    if "motion_ratio" in scores:
        return f"{scores['motion_ratio']:.2f}"
    return f"{scores['motion'] / scores['motion_truth']:.2f}" if scores.get("motion_truth") else "–"


def continuation_table(report: dict, labels: Optional[dict] = None) -> str:
    """Every method of every held-out set of an evaluation: PSNR / SSIM / motion ratio, and the sprite error where
    the set has one; the best PSNR of each set in bold. ``labels``: names for methods other than :data:`LABELS`."""
    sets = report["sets"]
    methods = [m for m in next(iter(sets.values()))["methods"] if all(m in e["methods"] for e in sets.values())]
    rows = ["| method | " + " | ".join(f"{name} ({entry['clips']} clips)" for name, entry in sets.items()) + " |",
            "|---|" + "---:|" * len(sets)]
    for m in methods:
        cells = []
        for entry in sets.values():
            s = entry["methods"][m]
            best = max(e["psnr_mean"] for e in entry["methods"].values())
            psnr = f"**{s['psnr_mean']:.2f}**" if s["psnr_mean"] == best else f"{s['psnr_mean']:.2f}"
            cells.append(f"{psnr} / {s['ssim_mean']:.3f} / {_motion_ratio(s)}"
                         + (f" / {s['trajectory_error']:.2f} px" if "trajectory_error" in s else ""))
        rows.append(f"| {_label(m, labels)} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def fvd_table(report: dict, labels: Optional[dict] = None) -> str:
    """The sets scored with FVD: every method's PSNR / SSIM / motion ratio / FVD, the lowest FVD in bold."""
    rows = ["| held-out set (clips × frames) | method | PSNR | SSIM | motion ratio | FVD |", "|---|---|---:|---:|---:|---:|"]
    for name, entry in report["sets"].items():
        if not entry.get("fvd"):
            continue
        best = min(m["fvd"] for m in entry["methods"].values())
        for method, m in entry["methods"].items():
            fvd = f"**{m['fvd']:.1f}**" if m["fvd"] == best else f"{m['fvd']:.1f}"
            rows.append(f"| {name} ({entry['fvd']['clips']} × {entry['fvd']['frames']}) | {_label(method, labels)} | "
                        f"{m['psnr_mean']:.2f} | {m['ssim_mean']:.3f} | {_motion_ratio(m)} | {fvd} |")
    return "\n".join(rows)


def best_classical(methods: dict) -> Optional[str]:
    """The classical predictor (of those in a set's ``methods``) with the higher PSNR, or ``None``."""
    present = [n for n in ("flow-extrapolation", "flow-splatting") if n in methods]
    return max(present, key=lambda n: methods[n]["psnr_mean"]) if present else None


def standing(report: dict) -> list:
    """Per held-out set, in words: the model against copy-last and against the better classical predictor."""
    lines = []
    for name, entry in report["sets"].items():
        methods = entry["methods"]
        model = methods[model_names(methods)[0]]
        classical = best_classical(methods)
        gap_copy = model["psnr_mean"] - methods["copy-last"]["psnr_mean"]
        gap_flow = model["psnr_mean"] - methods[classical]["psnr_mean"]
        sprites = (f"; sprites {model['trajectory_error']:.2f} px from their true centres, the frozen frame's "
                   f"{methods['copy-last']['trajectory_error']:.2f}, the {classical.replace('-', ' ')}'s "
                   f"{methods[classical]['trajectory_error']:.2f} (the locator on the truth: {entry['trajectory_error_floor']:.2f})"
                   if "trajectory_error" in model else "")
        lines.append(f"* **{name}**: {gap_copy:+.2f} dB against copy-last, {gap_flow:+.2f} dB against the "
                     f"{classical.replace('-', ' ')}; motion {model['motion_ratio']:.2f}× the truth's{sprites}.")
    return lines


def header(config: dict, params: int, run: dict, history: list, sampler: dict) -> list:
    args = run["args"]
    history_minutes = sum(r["elapsed"] for r in history) / 60
    return [
        "# MSC video model (bundled)", "",
        f"An MSC transformer ({params / 1e6:.2f} M parameters: {config['hidden_size']} wide, {config['depth']} layers, "
        f"{config['num_heads']} heads of which {config['low_res_heads']} Low-Res; {config['image_size']} × "
        f"{config['image_size']} RGB, {config['image_size'] // config['patch_size']} × {config['image_size'] // config['patch_size']} "
        f"tokens a frame) that continues a video chunk by chunk. High-Res heads see a {config['k_s']} × {config['k_s']} "
        f"window of the last {config['k_t']} frames, Low-Res heads whole frames pooled by {config['low_res_factors']} per "
        f"layer over {config['k_lo']} frames {config['d']} apart, mixed by gates of the noise level (paper §3). Each "
        f"frame's noise is centred on its **anchor**, {PRIORS.get(config['prior'], config['prior'])}; the network draws "
        f"the residual (change prior σ {config['residual_std']:g}), so an untrained network predicts the anchor.", "",
        f"Trained by us on this repository's 2-core CPU, on real footage, photographs through a simulated camera and "
        f"procedural clips (`python -m msc.data.prepare`; sources and licences in `docs/data.md`): first "
        f"{history_minutes:.0f} minutes in {len(history)} runs (a run from scratch and its fine-tunes; their records in "
        f"`studies/history/`), then **{run['elapsed'] / 60:.0f} minutes** ({run['step']} steps of {args['batch_size']} "
        f"clips of {args['frames']} frames, learning rate {args['lr']:g}, EMA {args['ema']}, context corruption "
        f"{args['context_corruption']:g}, anchors of chunks up to {args['max_chunk']} frames) with this anchor "
        f"(`docs/training.md`). Sampled by default at {sampler['steps']} denoising steps, chunks of {sampler['chunk']} "
        f"frames{sampling_choices(sampler)} (`sampler.json`).", "",
        "```bash",
        "python app.py                                              # the app serves these weights",
        "python -m msc.generate --weights weights --frames 32 --out video.mp4",
        "python -m msc.evaluate --weights weights --data data --json eval.json",
        "```", ""]


def sampling_choices(sampler: dict) -> str:
    """The default preset's anchor after the context and precision, where they are not the plain ones."""
    said = ""
    if sampler.get("context_anchor", "prior") != "prior":
        said += (f"; the chunk after real frames is anchored on {PRIORS[sampler['context_anchor']]} (the chunks after "
                 "generated frames on the model's own anchor: a sub-pixel blend would compound there)")
    if sampler.get("precision", "float32") == "bfloat16":
        said += "; its matrix multiplies in bf16 where the processor has bf16 units (float32 elsewhere)"
    return said


def own_anchor(prior: str, sampler: dict) -> str:
    """The prior whose anchor the default settings give the frames after the context (``context_anchor``'s or the model's)."""
    return prior if sampler.get("context_anchor", "prior") == "prior" else sampler["context_anchor"]


def evaluation_section(report: dict, fvd: Optional[dict]) -> list:
    s = report["settings"]
    lines = ["## Continuing held-out video", "",
             f"{s['context']} context frames of files the training never saw, {s['horizon']} generated at the default "
             "settings; PSNR (dB) / SSIM / **motion ratio** (the generated frames' mean |frame − previous frame| over the "
             "truth's: a frozen picture scores 0) and, on the procedural clips, whose generator knows every sprite, the "
             "**sprite error** (pixels from each sprite's true centre). Beside it, copy-last and the classical "
             "predictors that carry the last frame along the optical flow of the last two at constant velocity "
             "(`msc/flow.py`), the model's own anchor among them:", "",
             continuation_table(report), ""]
    lines += standing(report) + [""]
    if fvd:
        lines += ["Fréchet Video Distance (Kinetics-400 I3D; lower is better) on all the held-out real windows, 8 context "
                  "+ 8 generated frames:", "", fvd_table(fvd), ""]
    return lines


def sampler_section(settings: Optional[dict], from_nothing: Optional[dict]) -> list:
    from bench.from_nothing import from_nothing_table
    from bench.settings import settings_table

    lines = []
    if settings:
        lines += ["## How the default sampler settings were chosen", "",
                  f"`{settings.get('command', 'python -m bench.settings')}` on {settings['machine']}:", "", settings_table(settings), ""]
    if from_nothing:
        lines += ["## From nothing", "",
                  f"The first frame of a video from nothing is drawn alone with its own steps (`python -m bench.from_nothing` "
                  f"on {from_nothing['machine']}):", "", from_nothing_table(from_nothing), "",
                  "![Videos from nothing](from_nothing.png)", ""]
    return lines


def rollout_section(report: dict) -> list:
    r = report.get("rollout")
    if not r:
        return []
    kept = "kept" if r["colour_drift_max"] <= COLOUR_TOLERANCE else "**not kept**"
    return ["## 256-frame rollout", "",
            f"{r['frames']} frames from the context of {r['clips']} held-out {r['set']} clips: the largest per-channel colour "
            f"drift of the last 32 frames against the context is {r['colour_drift_max']:.3f} on [0, 1] (bar "
            f"{COLOUR_TOLERANCE}: {kept}); their sharpness is {r['sharpness_ratio']:.2f}× the context's "
            f"({'detail fades' if r['sharpness_ratio'] < 0.8 else 'detail kept' if r['sharpness_ratio'] <= 1.25 else 'texture grows'})"
            + (f"; they move {r['motion_kept']:.2f}× as much as the context (bar {MOTION_KEPT:g}: "
               f"{'still moving' if r['motion_kept'] >= MOTION_KEPT else '**slowing to a halt**'})" if "motion_kept" in r else "")
            + ".", ""]


def gates_section(report: dict) -> list:
    gates = report.get("gates")
    if not gates:
        return []
    levels = gates["levels"]
    rows = ["| layer | " + " | ".join(f"t = {t:g}" for t in levels) + " |", "|---|" + "---:|" * len(levels)]
    rows += [f"| {i} | " + " | ".join(f"{v:.2f}" for v in shares) + " |" for i, shares in enumerate(gates["low_res_share"])]
    return ["## What the gates learned", "",
            "The Low-Res branch's share of each layer's attention output against the noise level t (0 clean, 1 noise):", "",
            *rows, "", "![Low-Res share of every layer against the noise level](gates.png)", ""]


ANCHORS = {"flow": "flow-extrapolation", "flow_splat": "flow-splatting",  # prior -> the baseline that is its anchor
           "flow_splat_whole": "flow-splatting-whole", "flow_splat_layered": "flow-splatting-layered"}


def limits_section(report: dict, from_nothing: Optional[dict], prior: str = "") -> list:
    lines, behind, level = ["## What it does not do", ""], [], []
    anchor = ANCHORS.get(prior)
    for name, entry in report["sets"].items():
        methods = entry["methods"]
        model = methods[model_names(methods)[0]]
        if anchor in methods and model["psnr_mean"] <= methods[anchor]["psnr_mean"]:
            level.append(f"{name} {model['psnr_mean'] - methods[anchor]['psnr_mean']:+.2f} dB")
        best = best_classical(methods)
        if best and model["psnr_mean"] < methods[best]["psnr_mean"]:
            behind.append(f"{name} {model['psnr_mean'] - methods[best]['psnr_mean']:+.2f} dB against the "
                          f"{best.replace('-', ' ')}" + (" (its own anchor)" if ANCHORS.get(prior) == best else ""))
        if "trajectory_error" in model and model["trajectory_error"] > 0.5 * methods["copy-last"]["trajectory_error"]:
            lines.append(f"* Its sprites do not go where the true ones go: {model['trajectory_error']:.2f} px from their "
                         f"centres, against {methods['copy-last']['trajectory_error']:.2f} for a frozen frame.")
    if behind:
        lines.insert(2, "* It does not beat a classical predictor that carries the last frame at constant velocity ("
                     + "; ".join(behind) + "): the network adds little to constant-velocity motion yet.")
    if level:
        lines.insert(2, f"* The network does not improve on its own anchor, the {LABELS[anchor]} alone (" + "; ".join(level)
                     + "): what moves in the continuation is the anchor's.")
    r = report.get("rollout")
    if r and r["colour_drift_max"] > COLOUR_TOLERANCE:
        lines.append(f"* Long videos change colour: after {r['frames']} frames a channel's mean has moved by "
                     f"{r['colour_drift_max']:.3f} (bar {COLOUR_TOLERANCE}).")
    if r and r["sharpness_ratio"] < 0.8:
        lines.append(f"* Long videos lose their detail: after {r['frames']} frames the picture is {r['sharpness_ratio']:.2f}× as "
                     "sharp as the context.")
    if from_nothing:
        rows = {row["first_frame_steps"]: row for row in from_nothing["rows"]}
        chosen = rows.get(from_nothing["default"], rows[from_nothing["chosen"]])
        lines.append(f"* From nothing it draws textured scenes in the training data's colours, not objects (FVD "
                     f"{chosen['fvd']:.0f} against held-out clips; the sheet above). It is a demonstration of the method at "
                     "64 × 64, trained for hours on a CPU, not a general video model.")
    return lines + [""]


def readme_tables(report: dict, fvd: Optional[dict] = None, equal_time: Optional[dict] = None,
                  equal_time_fvd: Optional[dict] = None) -> list:
    """The tables of ``docs/results.md``: the bundled model's continuation table (and its FVD table), and MSC against
    dense attention after the same wall time of training (and its FVD table)."""
    return [t for t in (continuation_table(report), fvd and fvd_table(fvd), equal_time and continuation_table(equal_time, EQUAL_TIME),
                        equal_time_fvd and fvd_table(equal_time_fvd, EQUAL_TIME)) if t]


def write_card(weights: str, run_path: str, history: str, eval_path: str, fvd_path: Optional[str] = None,
               settings_path: Optional[str] = None, from_nothing_path: Optional[str] = None) -> str:
    """``weights/README.md`` from the files above (paths of records relative to the repository or absolute)."""
    from safetensors import safe_open

    def at(path):
        return path if os.path.isabs(path) else os.path.join(REPOSITORY, path)

    config, sampler = _load(os.path.join(weights, "config.json")), _load(os.path.join(weights, "sampler.json"))["default"]
    with safe_open(os.path.join(weights, "model.safetensors"), "pt") as f:
        params = sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())
    run = _load(at(run_path))
    records = [_load(p) for p in sorted(glob.glob(os.path.join(at(history), "*.state.json")))]
    report = _load(at(eval_path))
    fvd = _load(at(fvd_path)) if fvd_path else None
    for name, measured in (("--eval", report), ("--fvd-eval", fvd)):
        used = (measured or {}).get("settings", {}).get("sampler", {})
        differ = sorted(k for k in set(used) & set(sampler) if used[k] != sampler[k])
        if differ:
            raise ValueError(f"{name} was measured at other sampler settings than sampler.json's default: {differ}.")
    settings = _load(at(settings_path)) if settings_path else None
    from_nothing = _load(at(from_nothing_path)) if from_nothing_path else None
    lines = (header(config, params, run, records, sampler) + evaluation_section(report, fvd) + rollout_section(report)
             + sampler_section(settings, from_nothing) + gates_section(report)
             + limits_section(report, from_nothing, own_anchor(config["prior"], sampler)))
    path = os.path.join(weights, "README.md")
    with open(path, "w") as f:
        f.write("\n".join(lines))
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default="weights")
    p.add_argument("--run", help="the record of the run that made the weights (step, elapsed, args)")
    p.add_argument("--history", help="the folder of the training records of the weights it started from")
    p.add_argument("--bundled", action="store_true", help="every file not given: the bundled model's (BUNDLED)")
    p.add_argument("--eval", help="msc.evaluate's JSON (16 clips a set, with the rollout and the gates)")
    p.add_argument("--fvd-eval", help="msc.evaluate's JSON with --fvd")
    p.add_argument("--settings", help="bench.settings' JSON")
    p.add_argument("--from-nothing", help="bench.from_nothing's JSON")
    p.add_argument("--equal-time-eval", help="with --readme: MSC and dense attention after the same training time")
    p.add_argument("--equal-time-fvd-eval")
    p.add_argument("--readme", action="store_true", help="print docs/results.md's tables instead of writing the card")
    args = p.parse_args(argv)
    if args.bundled:
        for name, path in BUNDLED.items():
            if getattr(args, name) is None:
                setattr(args, name, os.path.join(REPOSITORY, path))
    if not args.eval:
        p.error("the card needs --eval (or --bundled).")
    if args.readme:
        loaded = [_load(x) if x else None for x in (args.eval, args.fvd_eval, args.equal_time_eval, args.equal_time_fvd_eval)]
        print("\n\n".join(readme_tables(*loaded)))
        return 0
    if not (args.run and args.history):
        p.error("writing the card needs --run and --history.")
    print(write_card(args.weights, args.run, args.history, args.eval, args.fvd_eval, args.settings, args.from_nothing))
    return 0


if __name__ == "__main__":
    sys.exit(main())
