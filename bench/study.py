"""A design study as data: ``python -m bench.study studies/NAME.json``.

A study file names its question, the arms (each: what it changes, its ``msc.train`` arguments, and a prediction
written before it ran), the pairs they train in (two at a time, one CPU thread each, the same wall-time budget,
so each pair shares the machine the same way) and the sampler settings they are scored at. This runner trains
what is not trained yet (an interrupted run resumes), scores every finished arm with :mod:`msc.evaluate` on the
held-out sets, and writes ``studies/NAME/results.md`` and ``.json``: per set, copy-last and the flow
extrapolation beside every arm, with PSNR, motion ratio and (procedural) sprite trajectory error.

    python -m bench.study studies/motion1.json                 # train the missing arms, then score them all
    python -m bench.study studies/motion1.json --evaluate-only # score what has finished
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
from typing import Dict, List


REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # msc importable from any working folder


def load_study(path: str) -> dict:
    with open(path) as f:
        study = json.load(f)
    arms = set(study["arms"])
    paired = [a for pair in study["pairs"] for a in pair]
    if sorted(paired) != sorted(set(paired)) or not set(paired) <= arms:
        raise ValueError(f"{path}: every arm of a pair must be one of {sorted(arms)}, and in one pair only.")
    return study


def run_folder(study: dict, arm: str) -> str:
    return os.path.join("runs", study["name"], arm)


def arm_commands(study: dict, arm: str) -> List[List[str]]:
    """The commands that train ``arm``, in order: a latent arm (``"autoencoder": {"minutes": M, "args": [...]}``) first
    trains its autoencoder for M of the study's minutes (``msc.autoencoder``, one thread), then the transformer on its
    latents for the rest; an interrupted transformer run resumes."""
    out, spec, minutes = run_folder(study, arm), study["arms"][arm], study["minutes"]
    commands, extra = [], []
    if "autoencoder" in spec:
        ae_out = os.path.join(out, "autoencoder")
        minutes -= spec["autoencoder"]["minutes"]
        extra = ["--autoencoder", os.path.join(ae_out, "final")]
        if not os.path.isdir(os.path.join(ae_out, "final")):
            commands.append([sys.executable, "-m", "msc.autoencoder", "--data", "data", "--out", ae_out, "--threads", "1",
                             "--minutes", str(spec["autoencoder"]["minutes"]), *spec["autoencoder"]["args"]])
    resume = ["--resume"] if os.path.isfile(os.path.join(out, "checkpoint", "state.json")) else []
    commands.append([sys.executable, "-m", "msc.train", *study["common"], "--budget-minutes", str(minutes), "--out", out,
                     *resume, *extra, *spec["args"]])
    return commands


def train_pair(study: dict, pair: List[str]) -> None:
    """Train the arms of ``pair`` side by side, each for the study's minutes (resuming an interrupted run)."""
    procs = []
    for arm in pair:
        out = run_folder(study, arm)
        if os.path.isdir(os.path.join(out, "final")):
            continue
        os.makedirs(out, exist_ok=True)
        script = " && ".join(shlex.join(c) for c in arm_commands(study, arm))
        log = open(os.path.join(out, "stdout.log"), "a")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [REPOSITORY, os.environ.get("PYTHONPATH")]))}
        procs.append(subprocess.Popen(["bash", "-c", script], stdout=log, stderr=subprocess.STDOUT, env=env))
        print(f"training {arm}: {script}", flush=True)
    for p in procs:
        if p.wait():
            raise RuntimeError(f"a training run failed: {' '.join(p.args)}")


def _slug(sampler: List[str]) -> str:
    return "_".join(a.lstrip("-") for a in sampler)


def score_arm(study: dict, arm: str, results: str) -> Dict[str, dict]:
    """Every sampler setting's evaluation report of ``arm`` by the study's evaluation module (``msc.evaluate``, or
    ``bench.world`` for a world model; kept as ``results/ARM_SETTING.json``, reused while newer than the weights), and
    its training record (``results/ARM_log.jsonl``)."""
    spec = study["evaluate"]
    final = os.path.join(run_folder(study, arm), "final")
    shutil.copyfile(os.path.join(run_folder(study, arm), "log.jsonl"), os.path.join(results, f"{arm}_log.jsonl"))
    reports = {}
    for sampler in spec["sampler"]:
        path = os.path.join(results, f"{arm}_{_slug(sampler)}.json")
        if not (os.path.isfile(path) and os.path.getmtime(path) > os.path.getmtime(os.path.join(final, "model.safetensors"))):
            subprocess.run([sys.executable, "-m", spec["module"], "--weights", final, "--data", "data", "--json", path,
                            "--threads", "2", *spec["args"], *sampler], check=True)
        with open(path) as f:
            reports[_slug(sampler)] = json.load(f)
    return reports


def world_table(scored: Dict[str, Dict[str, dict]], logs: Dict[str, dict]) -> str:
    """A world study: action following of every arm at every sampler setting (:mod:`bench.world`), and its videos from
    nothing where the study asked for them (``--rollout``)."""
    first = next(iter(next(iter(scored.values())).values()))
    rollout, continued, fvd = "from_nothing" in first, "from_context" in first, "from_nothing_fvd" in first
    lines = [f"{first['episodes']} held-out episodes, {first['context']} context frames and {first['frames']} generated under "
             "random actions; PSNR against the engine's rollout"
             + (f"; from nothing: {first['from_nothing']['seeds']} videos of {first['from_nothing']['frames']} frames" if rollout else ""),
             "",
             "| arm | sampler | steps trained | true actions (dB) | other actions (dB) | copy-last (dB) | true - other | true - copy-last |"
             + (" from nothing: colour drift | sharpness ratio | motion kept |" if rollout else "")
             + (" from context: colour drift | sharpness ratio | motion kept |" if continued else "")
             + (" from nothing: FVD (engine, copy-first) |" if fvd else ""),
             "|---|---|---|---|---|---|---|---|" + ("---|---|---|" if rollout else "") + ("---|---|---|" if continued else "")
             + ("---|" if fvd else "")]
    for arm, reports in scored.items():
        for slug, r in reports.items():
            s = r["scores"]
            row = (f"| {arm} | {slug.replace('_', ' ')} | {logs[arm]['step']} | {s['true actions']['psnr']:.2f} | "
                   f"{s['other actions']['psnr']:.2f} | {s['copy-last']['psnr']:.2f} | {r['gap_other_actions_db']:+.2f} | "
                   f"{r['gap_copy_last_db']:+.2f} |")
            if rollout:  # every arm of a study is scored alike
                n = r["from_nothing"]
                row += f" {n['colour_drift']:.3f} | {n['sharpness_ratio']:.2f} | {n['motion_kept']:.2f} |"
            if continued:
                c = r["from_context"]
                row += f" {c['colour_drift']:.3f} | {c['sharpness_ratio']:.2f} | {c['motion_kept']:.2f} |"
            if fvd:
                f = r["from_nothing_fvd"]
                row += f" {f['fvd']:.0f} ({f['fvd_engine']:.0f}, {f['fvd_copy_first']:.0f}) |"
            lines.append(row)
    if rollout and "engine" in first["from_nothing"]:  # the world itself on the same seeds and actions
        cells = [first[kind]["engine"] for kind in ("from_nothing", "from_context") if kind in first]
        lines.append("| the world itself (engine) | | | | | | | |"
                     + "".join(f" {e['colour_drift']:.3f} | {e['sharpness_ratio']:.2f} | {e['motion_kept']:.2f} |" for e in cells)
                     + (" |" if fvd else ""))
    return "\n".join(lines) + "\n"


def results_table(study: dict, scored: Dict[str, Dict[str, dict]], logs: Dict[str, dict]) -> str:
    """Per held-out set: the baselines, then every arm at every sampler setting."""
    from msc.evaluate import BASELINES, model_names

    if study["evaluate"]["module"] == "bench.world":
        return world_table(scored, logs)
    lines = []
    first = next(iter(next(iter(scored.values())).values()))
    for set_name, entry in first["sets"].items():
        tracked = "trajectory_error_floor" in entry
        lines += [f"**{set_name}** ({entry['clips']} held-out clips; PSNR over the 8 generated frames)", "",
                  "| method | sampler | steps trained | PSNR (dB) | SSIM | motion ratio |" + (" sprite err (px) |" if tracked else ""),
                  "|---|---|---|---|---|---|" + ("---|" if tracked else "")]

        def row(name, sampler, steps, m):
            return (f"| {name} | {sampler} | {steps} | {m['psnr_mean']:.2f} | {m['ssim_mean']:.3f} | {m['motion_ratio']:.2f} |"
                    + (f" {m['trajectory_error']:.2f} |" if tracked else ""))

        for baseline, _ in BASELINES:
            if baseline in entry["methods"]:  # records older than a baseline lack it
                lines.append(row(baseline, "–", "–", entry["methods"][baseline]))
        for arm, reports in scored.items():
            for slug, report in reports.items():
                methods = report["sets"][set_name]["methods"]
                method = methods[model_names(methods)[0]]
                lines.append(row(arm, slug.replace("_", " "), logs[arm]["step"], method))
        if tracked:
            lines.append(f"\nsprite err floor (the locator on the true frames): {entry['trajectory_error_floor']:.2f} px")
        lines.append("")
    rollouts = [(arm, slug, r["rollout"]) for arm, reports in scored.items() for slug, r in reports.items() if "rollout" in r]
    if rollouts:
        r0 = rollouts[0][2]
        lines += [f"**rollout** ({r0['frames']} frames from {r0['clips']} {r0['set']} clips; the last 32 frames against the "
                  "context)", "", "| arm | sampler | colour drift | sharpness ratio | motion kept |", "|---|---|---|---|---|"]
        lines += [f"| {arm} | {slug.replace('_', ' ')} | {r['colour_drift_max']:.3f} | {r['sharpness_ratio']:.2f} | "
                  + (f"{r['motion_kept']:.2f} |" if "motion_kept" in r else "– |")  # older reports did not measure it
                  for arm, slug, r in rollouts]
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("study", help="the study file (studies/NAME.json)")
    p.add_argument("--evaluate-only", action="store_true")
    p.add_argument("--only", nargs="*", help="train only the pairs holding these arms")
    args = p.parse_args(argv)
    study = load_study(args.study)
    results = os.path.join(os.path.dirname(args.study), study["name"])
    os.makedirs(results, exist_ok=True)
    if not args.evaluate_only:
        for pair in study["pairs"]:
            if args.only is None or set(pair) & set(args.only):
                train_pair(study, pair)
    finished = [a for pair in study["pairs"] for a in pair if os.path.isdir(os.path.join(run_folder(study, a), "final"))]
    scored = {arm: score_arm(study, arm, results) for arm in finished}
    logs = {}
    for arm in finished:
        with open(os.path.join(results, f"{arm}_log.jsonl")) as f:
            logs[arm] = [json.loads(line) for line in f][-1]
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, one torch thread per run, two runs at a time"
    table = results_table(study, scored, logs)
    with open(os.path.join(results, "results.md"), "w") as f:
        f.write(f"# Study {study['name']}\n\n{study['question']}\n\n{study['minutes']} minutes of training per arm from "
                f"{study['from']}, on {machine}.\n\n")
        f.write("| arm | what it changes | prediction (written before it ran) |\n|---|---|---|\n")
        for arm, spec in study["arms"].items():
            f.write(f"| {arm} | {spec['changes']} | {spec['prediction']} |\n")
        for arm in finished:
            report = os.path.join(run_folder(study, arm), "autoencoder", "report.json")
            if os.path.isfile(report):  # a latent arm: what its autoencoder alone reconstructs
                with open(report) as r:
                    ae = json.load(r)
                shutil.copyfile(report, os.path.join(results, f"{arm}_autoencoder.json"))
                f.write(f"\n{arm}: its autoencoder trained {ae['steps']} steps in {ae['minutes']:.1f} min; reconstruction PSNR "
                        + ", ".join(f"{k} {v:.2f} dB" for k, v in ae["psnr"].items()) + "\n")
        f.write(f"\n{table}\n")
    with open(os.path.join(results, "results.json"), "w") as f:
        json.dump({"study": study, "machine": machine, "trained": logs, "scores": scored}, f, indent=1)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
