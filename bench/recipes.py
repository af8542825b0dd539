"""Training recipes side by side at equal wall time: ``python -m bench.recipes``.

    python -m bench.recipes --minutes 20                       # train every recipe, then evaluate
    python -m bench.recipes --minutes 20 --only plain residual # a subset
    python -m bench.recipes --evaluate-only                    # score finished runs (scores newer than the weights are kept)
    python -m bench.recipes --study finetune --minutes 45      # fine-tunes of the long run
    python -m bench.recipes --study finetune3 --minutes 45     # fine-tunes of the shipped weights

``recipes`` trains each recipe from scratch; ``finetune`` starts every recipe from the long run's
checkpoint (``resume/msc-compact``, its EMA) with a fresh optimizer and schedule, so that a change to
a trained model is measured against continuing it unchanged for the same time; ``finetune2`` and
``finetune3`` do the same from the weights shipped when they ran (``weights/``: fine-tune 1 and
fine-tune 2, see ``SHIPPED_COMMON``), ``finetune5`` and ``finetune7`` from kept, unshipped fine-tunes
(:func:`fine_tunes_of`); each study says what it started from (:data:`STUDIES`).

Every recipe trains the same way except for what it names: on the prepared mixture
(``python -m msc.data.prepare --out data``), clips of 8 frames, batch 4, AdamW with a learning rate
that decays over the same wall-time budget, EMA weights, one CPU thread per run, two runs at a time
on the 2-core machine (so each pair shares the machine the same way). Then each run's final weights
are scored by :mod:`msc.evaluate` on the same held-out sets (real video files, the camera over
held-out photographs, procedural test seeds) with the same sampler settings, and the table goes to
``--out``/recipes.md and .json. A study of videos from nothing (``Study.from_nothing``: ``finetune9``)
also scores each run's videos from nothing with ``bench.from_nothing`` (FVD against the held-out clips).
Each run's training log and arguments are kept beside the table (``STUDY_RECIPE_log.jsonl`` and its
``.state.json``): the model card's record of a fine-tune once its run folder is gone.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from typing import NamedTuple, Optional

from msc.evaluate import model_names

COMMON = ["--config", "small", "--data", "data", "--frames", "8", "--batch-size", "4", "--lr", "4e-4", "--warmup", "100",
          "--ema", "0.995", "--clean-prefix-prob", "0.5", "--steps", "1000000", "--threads", "1", "--no-progress",
          "--ckpt-every", "100"]
PREVIOUS = ["prior=previous_frame"]
SMALLER = ["hidden_size=128", "depth=6", "num_heads=4", "low_res_heads=2", "low_res_factors=[2,2,2,4,4,4]"]

# name -> (what it changes, extra msc.train arguments)
RECIPES = {
    "plain": ("pixel-space rectified flow, noise centred on 0 (the previous bundled recipe)", []),
    "residual": ("noise centred on the previous chunk's last frame, EDM-preconditioned change", ["--set", *PREVIOUS]),
    "residual-logitnormal": ("residual + logit-normal noise levels (SD3)", ["--set", *PREVIOUS, "--level-distribution", "logit-normal"]),
    "residual-smaller": ("residual + a smaller, faster model (128 wide, 6 layers)", ["--set", *PREVIOUS, *SMALLER]),
    "residual-sigma0.1": ("residual with a tighter change prior (σ = 0.1 instead of 0.2)", ["--set", *PREVIOUS, "residual_std=0.1"]),
    "residual-lr8e-4": ("residual with twice the learning rate (8e-4)", ["--set", *PREVIOUS, "--lr", "8e-4"]),
    "residual-dense": ("residual with frame-causal dense attention (the baseline)", ["--set", *PREVIOUS, "--attention", "dense"]),
}


# Fine-tunes of the bundled long run (compact model, previous-frame prior with σ = 0.1)
FINETUNE_COMMON = [*COMMON, "--config", "compact", "--lr", "3e-4", "--warmup", "50", "--init-from", "resume/msc-compact"]
BUNDLED = ["prior=previous_frame", "residual_std=0.1"]



def state_path_of_log(log_path: str) -> str:
    """Where the card keeps a copied training log's steps, wall time and arguments: ``X.jsonl`` -> ``X.state.json``."""
    return log_path[: -len(".jsonl")] + ".state.json"


def run_summary(run: str) -> dict:
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
        model = model_names(r["sets"][sets[0]]["methods"])[0]
        cells = [f"{r['sets'][s]['methods'][model]['psnr_mean']:.2f} / {r['sets'][s]['methods'][model]['ssim_mean']:.3f}" for s in sets]
        if nothing:
            cells.append(f"{r['from_nothing']['fvd']:.0f} ({r['from_nothing']['sharpness_ratio']:.2f}×)")
        rows.append(f"| `{name}`: {r['changes']} | {r['steps']} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def fine_tunes_of(weights: str) -> list:
    """The common arguments of fine-tunes that start from the EMA weights in ``weights`` (a fresh optimizer)."""
    return [*FINETUNE_COMMON, "--init-from", weights]


def context_corruption(std: str, *settings: str) -> list:
    """The bundled recipe (with model ``settings`` changed, if any) and the training context corrupted by noise of
    std up to ``std``."""
    return ["--set", *BUNDLED, *settings, "--context-corruption", std]


FINETUNE_RECIPES = {
    "continue": ("the bundled recipe, continued unchanged", ["--set", *BUNDLED]),
    "noise-scale0.25": ("noise around the anchor with std 0.25 instead of 1", ["--set", *BUNDLED, "noise_scale=0.25"]),
    "context-corruption0.05": ("the context prefix (anchors included) corrupted by noise of std up to 0.05, not scored",
                               context_corruption("0.05")),
}

# Fine-tunes of the weights shipped at the time (weights/: its EMA, a fresh optimizer), the same settings:
# finetune2 started from fine-tune 1 (the long run + context corruption 0.05; weights/ before commit
# "Ship fine-tune 2"), finetune3 from fine-tune 2 (fine-tune 1 + context corruption 0.15)
SHIPPED_COMMON = fine_tunes_of("weights")
FINETUNE2_RECIPES = {
    "context-corruption0.05": ("the shipped recipe, continued unchanged", context_corruption("0.05")),
    "context-corruption0.15": ("context corruption of std up to 0.15 instead of 0.05", context_corruption("0.15")),
}
FINETUNE3_RECIPES = {
    "context-corruption0.15": ("the shipped recipe, continued unchanged", context_corruption("0.15")),
    "context-corruption0.3": ("context corruption of std up to 0.3 instead of 0.15", context_corruption("0.3")),
}


# finetune5 starts from the kept candidate, fine-tune 4 (finetune3's context-corruption0.3 run continued for 85
# minutes; not shipped when it was made): does less noise around the anchor, which broke long rollouts before
# context corruption, keep them now that the training context is corrupted? The folder left the repository when
# this study's continued run shipped as fine-tune 5: `git checkout cb471fa -- resume/finetune4-context-corruption0.3`.
FINETUNE5_RECIPES = {
    "context-corruption0.3": ("the candidate's recipe, continued unchanged", context_corruption("0.3")),
    "noise-scale0.25": ("context corruption 0.3 + noise around the anchor with std 0.25 instead of 1",
                        context_corruption("0.3", "noise_scale=0.25")),
}
# finetune6 starts from fine-tune 5 (the weights shipped when it ran): the model's error floor on frozen frames is its
# predicted change (even one step scores 41 dB on a clip copy-last scores 52 dB on); does a tighter change prior help?
FINETUNE6_RECIPES = {
    "context-corruption0.3": ("the shipped recipe, continued unchanged", context_corruption("0.3")),
    "residual-std0.05": ("a tighter change prior: σ = 0.05 instead of 0.1", context_corruption("0.3", "residual_std=0.05")),
}

# finetune7 starts from the kept candidate of finetune6 (its residual-std0.05 run, 25 minutes from fine-tune 5): continue
# it, against a prior tightened once more (σ = 0.025). The folder left the repository when this study's
# residual-std0.025 run shipped as fine-tune 7: `git checkout 54ab72a -- resume/finetune6-residual-std0.05`.
FINETUNE7_RECIPES = {
    "residual-std0.05": ("the candidate's recipe, continued unchanged", context_corruption("0.3", "residual_std=0.05")),
    "residual-std0.025": ("a tighter change prior still: σ = 0.025 instead of 0.05", context_corruption("0.3", "residual_std=0.025")),
}

# finetune8 starts from fine-tune 7 (the weights shipped when it was set up): its real-footage PSNR has plateaued at
# 31.1-31.2 dB, more than half of the gap to copy-last on one frozen clip; does a longer EMA (0.999: about 1000 steps
# instead of 200) average away more of the predicted change on frozen frames?
FINETUNE8_RECIPES = {
    "residual-std0.025": ("the shipped recipe, continued unchanged", context_corruption("0.3", "residual_std=0.025")),
    "ema0.999": ("EMA decay 0.999 instead of 0.995", [*context_corruption("0.3", "residual_std=0.025"), "--ema", "0.999"]),
}

# finetune9 starts from fine-tune 8 (finetune8's ema0.999 run): its videos from nothing are textured scenes without a
# recognisable sprite, and only the frames before a clip's first chunk cut (about one in seven, fewer of them scored)
# ever draw a whole picture in training. Does training a quarter of the clips as videos from nothing (no prefix, no
# anchors) teach the first frame more, and at what cost to continuations?
FINETUNE9_RECIPES = {
    "ema0.999": ("the shipped recipe, continued unchanged", [*context_corruption("0.3", "residual_std=0.025"), "--ema", "0.999"]),
    "from-nothing0.25": ("a quarter of the clips trained as videos from nothing",
                         [*context_corruption("0.3", "residual_std=0.025"), "--ema", "0.999", "--from-nothing-prob", "0.25"]),
}

# finetune10 starts from fine-tune 8 (finetune9 shipped nothing): the real-footage bar is 0.7 dB short, and the model
# draws a small change on frames that barely change. Real video is 40 % of the training clips (the rest the camera
# over photographs and procedural clips, which move much more): does a video-heavy mix teach the still real footage?
FINETUNE10_RECIPES = {
    "ema0.999": ("the shipped recipe, continued unchanged", [*context_corruption("0.3", "residual_std=0.025"), "--ema", "0.999"]),
    "video0.7": ("real video 70 % of the clips (camera 20 %, procedural 10 %) instead of 40 / 40 / 20",
                 [*context_corruption("0.3", "residual_std=0.025"), "--ema", "0.999", "--mix", "video=0.7", "camera=0.2",
                  "procedural=0.1"]),
}

# finetune11 starts from fine-tune 8 (finetune10 shipped nothing): more time and more real video left the real footage
# where it was. The training loss is a mean of squared errors, so frames that move a lot, whose errors are large, drive
# it; the held-out score is a mean of per-frame PSNRs, a mean of log errors, where a still frame counts as much.
# Does a loss that counts each frame's log error (--frame-loss log) move the still real footage?
# finetune11's log-frames recipe (shipped fine-tune 8's recipe with each frame's log error in the loss)
LOG_FRAMES = [*context_corruption("0.3", "residual_std=0.025"), "--ema", "0.999", "--frame-loss", "log"]
FINETUNE11_RECIPES = {
    "ema0.999": ("the shipped recipe, continued unchanged", [*context_corruption("0.3", "residual_std=0.025"), "--ema", "0.999"]),
    "log-frames": ("each frame's log error in the loss instead of its squared error", LOG_FRAMES),
}

# finetune12 starts from finetune11's log-frames run (it replaced fine-tune 8 by its rule, not yet shipped): the log
# loss was the first lever in many studies to move the real footage (+0.47 dB in 40 minutes). Does more of it keep
# moving it, and does a third of the learning rate (the usual last stage of a schedule) gain more than the same time
# at the rate it had?
FINETUNE12_RECIPES = {
    "log-frames": ("finetune11's log-frames recipe, continued unchanged", LOG_FRAMES),
    "log-frames-lr1e-4": ("the same at a third of the learning rate (1e-4 instead of 3e-4)", [*LOG_FRAMES, "--lr", "1e-4"]),
}


# finetune13 starts from fine-tune 9 (finetune11's log-frames run, shipped): at the default 2 steps, chunks of 8 the
# real footage is 0.09 dB short of copy-last, all of it on the stillest clip, where the model still draws a small change
# on a frame that barely changes. Two levers that the log loss may have changed, side by side: a training context that
# is trusted more (context corruption of std up to 0.15 instead of 0.3: a model that expects a noisy context redraws
# it), and a video-heavy mix (more still real footage, which the log loss now weighs as much as moving clips; under
# squared errors it lost 0.09 dB, finetune10). finetune12 measured the recipe continued unchanged: +0.06 dB in 35 minutes.
FINETUNE13_RECIPES = {
    "log-frames-corruption0.15": ("context corruption of std up to 0.15 instead of 0.3",
                                  [*LOG_FRAMES, "--context-corruption", "0.15"]),
    "log-frames-video0.7": ("real video 70 % of the clips (camera 20 %, procedural 10 %) instead of 40 / 40 / 20",
                            [*LOG_FRAMES, "--mix", "video=0.7", "camera=0.2", "procedural=0.1"]),
}

# finetune14 starts from fine-tune 9 (finetune13 shipped nothing): the default sampler denoises chunks of 8 frames, all
# anchored on the last context frame and all at one noise level (2 steps: 1, then 0.5), but every run so far trained
# anchors of chunks of 1..4 frames (--max-chunk 4) and an independent level per frame: frames 5..8 of a sampled chunk
# are anchored further back than training ever showed, and a chunk at one level is rare in training. Does training
# what the default sampler does move the real footage?
CHUNK8 = [*LOG_FRAMES, "--max-chunk", "8"]
FINETUNE14_RECIPES = {
    "log-frames-chunk8": ("training anchors of chunks of 1..8 frames (`--max-chunk 8`) instead of 1..4", CHUNK8),
    "log-frames-chunk8-shared0.5": ("the same, and half the clips with one noise level on the frames after the context "
                                    "(`--shared-level-prob 0.5`)", [*CHUNK8, "--shared-level-prob", "0.5"]),
}

# finetune15 starts from finetune14's log-frames-chunk8 run (kept in resume/: it gained 0.09 dB on the real footage in
# 40 minutes, 0.005 dB short of its rule, the most of any recipe since the log loss; shared levels lost 0.02): does
# more of it keep gaining, and do longer clips (12 frames: a chunk of 8 after a context of up to 4, as the sampler
# has one, where 8-frame clips leave a chunk of 8 at most one frame before it) gain more in the same time?
CHUNK8_FRAMES12 = [*CHUNK8, "--frames", "12"]
FINETUNE15_RECIPES = {
    "log-frames-chunk8": ("finetune14's log-frames-chunk8 recipe, continued unchanged", CHUNK8),
    "log-frames-chunk8-frames12": ("the same on clips of 12 frames instead of 8 (batch 4 clips)", CHUNK8_FRAMES12),
}

# finetune16 starts from finetune15's log-frames-chunk8-frames12 run (the candidate that replaced fine-tune 9 by its
# rule, with a higher FVD than fine-tune 9's): 12-frame clips gained more in 40 minutes than 8-frame clips with a third
# more steps; do 16-frame clips (a chunk of 8 after a context of up to 8, as the default sampler has one) gain more?
FINETUNE16_RECIPES = {
    "log-frames-chunk8-frames12": ("finetune15's log-frames-chunk8-frames12 recipe, continued unchanged", CHUNK8_FRAMES12),
    "log-frames-chunk8-frames16": ("the same on clips of 16 frames instead of 12 (batch 4 clips)", [*CHUNK8, "--frames", "16"]),
}


class Study(NamedTuple):
    common: list  # msc.train arguments of every recipe; a recipe's own follow them (later flags override earlier ones)
    recipes: dict  # name -> (what it changes, extra msc.train arguments)
    started_from: Optional[str] = None  # a fine-tune study's starting weights, in the model card's words (its JSON says it)
    from_nothing: bool = False  # also score videos from nothing (bench.from_nothing's FVD at the default first-frame steps)


STUDIES = {
    "recipes": Study(COMMON, RECIPES),
    "finetune": Study(FINETUNE_COMMON, FINETUNE_RECIPES, "the long run"),
    "finetune2": Study(SHIPPED_COMMON, FINETUNE2_RECIPES, "fine-tune 1"),
    "finetune3": Study(SHIPPED_COMMON, FINETUNE3_RECIPES, "fine-tune 2"),
    "finetune5": Study(fine_tunes_of("resume/finetune4-context-corruption0.3"), FINETUNE5_RECIPES, "fine-tune 4"),
    "finetune6": Study(SHIPPED_COMMON, FINETUNE6_RECIPES, "fine-tune 5"),
    "finetune7": Study(fine_tunes_of("resume/finetune6-residual-std0.05"), FINETUNE7_RECIPES, "finetune6's residual-std0.05 run"),
    "finetune8": Study(SHIPPED_COMMON, FINETUNE8_RECIPES, "fine-tune 7"),
    "finetune9": Study(SHIPPED_COMMON, FINETUNE9_RECIPES, "fine-tune 8", from_nothing=True),
    "finetune10": Study(SHIPPED_COMMON, FINETUNE10_RECIPES, "fine-tune 8"),
    "finetune11": Study(SHIPPED_COMMON, FINETUNE11_RECIPES, "fine-tune 8"),
    "finetune12": Study(fine_tunes_of("resume/finetune11-log-frames"), FINETUNE12_RECIPES, "finetune11's log-frames run"),
    "finetune13": Study(SHIPPED_COMMON, FINETUNE13_RECIPES, "fine-tune 9"),
    "finetune14": Study(SHIPPED_COMMON, FINETUNE14_RECIPES, "fine-tune 9"),
    "finetune15": Study(fine_tunes_of("resume/finetune14-log-frames-chunk8"), FINETUNE15_RECIPES,
                        "finetune14's log-frames-chunk8 run"),
    "finetune16": Study(fine_tunes_of("resume/finetune15-log-frames-chunk8-frames12"), FINETUNE16_RECIPES,
                        "finetune15's log-frames-chunk8-frames12 run"),
}


def train_pairs(names, minutes: float, runs: str, study: str = "recipes") -> None:
    """Train the recipes two at a time (one thread each), each for ``minutes`` of wall time."""
    common, recipes = STUDIES[study].common, STUDIES[study].recipes
    for i in range(0, len(names), 2):
        procs = []
        for name in names[i : i + 2]:
            out = os.path.join(runs, name)
            resume = ["--resume"] if os.path.isfile(os.path.join(out, "checkpoint", "state.json")) else []
            if os.path.isdir(os.path.join(out, "final")):
                continue
            args = [sys.executable, "-m", "msc.train", *common, "--budget-minutes", str(minutes), "--out", out, *resume,
                    *recipes[name][1]]
            os.makedirs(out, exist_ok=True)
            log = open(os.path.join(out, "stdout.log"), "a")
            procs.append(subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT))
            print(f"training {name}: {' '.join(args[1:])}", flush=True)
        for p in procs:
            if p.wait():
                raise RuntimeError(f"a training run failed: {' '.join(p.args)}")


def keep_run_record(run: str, kept_log: str) -> None:
    """Copy a run's training log to ``kept_log`` (a ``.jsonl`` in the results, which the repository keeps) and its
    steps, wall time and arguments to the ``.state.json`` beside it: what the model card needs of a fine-tune
    (``run_summary(KEPT_LOG)``) once the run folder is gone with its machine."""
    shutil.copyfile(os.path.join(run, "log.jsonl"), kept_log)
    with open(os.path.join(run, "checkpoint", "state.json")) as f:
        state = json.load(f)
    with open(state_path_of_log(kept_log), "w") as f:
        json.dump({k: state[k] for k in ("step", "elapsed", "args")}, f, indent=1)


def evaluate_runs(names, runs: str, out: str, clips: int, study: str = "recipes") -> dict:
    recipes = STUDIES[study].recipes
    prefixes = {name: os.path.join(out, f"{'recipe' if study == 'recipes' else study}_{name}") for name in names}
    for name in names:  # every run's record first: the scoring takes minutes, and a machine may go meanwhile
        keep_run_record(os.path.join(runs, name), prefixes[name] + "_log.jsonl")
    results = {}
    for name in names:
        final = os.path.join(runs, name, "final")
        prefix = prefixes[name]
        path = prefix + ".json"
        weights = os.path.join(final, "model.safetensors")
        if not (os.path.isfile(path) and os.path.getmtime(path) > os.path.getmtime(weights)):  # else: scored already
            args = [sys.executable, "-m", "msc.evaluate", "--weights", final, "--data", "data", "--clips", str(clips),
                    "--rollout", "0", "--json", path, "--threads", "2"]
            subprocess.run(args, check=True)
        with open(path) as f:
            report = json.load(f)
        with open(prefix + "_log.jsonl") as f:  # the record kept above
            log = [json.loads(line) for line in f]
        sampler = {k: report["settings"]["sampler"][k] for k in ("steps", "chunk")}  # the settings it was scored at
        with open(state_path_of_log(prefix + "_log.jsonl")) as f:
            budget = json.load(f)["args"]["budget_minutes"]  # what it was trained for, whatever --minutes says now
        results[name] = {"changes": recipes[name][0], "sampler": sampler, "steps": log[-1]["step"], "minutes": log[-1]["elapsed"] / 60,
                         "budget_minutes": budget, "final_loss": log[-1]["loss_avg"], "sets": report["sets"]}
        if STUDIES[study].from_nothing:
            results[name]["from_nothing"] = score_from_nothing(final, prefix + "_from_nothing")
    return results


def score_from_nothing(final: str, out: str) -> dict:
    """``bench.from_nothing`` on a run's weights at the shipped model's first-frame steps (``out``.json/.md/.png, reused while
    newer than the weights): the FVD of its videos from nothing against the held-out clips, and their sharpness."""
    if not (os.path.isfile(out + ".json") and os.path.getmtime(out + ".json") > os.path.getmtime(os.path.join(final, "model.safetensors"))):
        from msc.sampling import load_presets

        first_steps = load_presets(os.path.abspath("weights"))["default"].first_frame_steps  # the shipped model's
        subprocess.run([sys.executable, "-m", "bench.from_nothing", "--weights", final, "--data", "data", "--first-steps",
                        str(first_steps), "--out", out], check=True)
    with open(out + ".json") as f:
        row = json.load(f)["rows"][0]
    return {"first_frame_steps": row["first_frame_steps"], "fvd": row["fvd"], "sharpness_ratio": row["sharpness_ratio"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=20)
    p.add_argument("--study", default="recipes", choices=sorted(STUDIES), help="from scratch, or fine-tunes of the long run or of the shipped weights")
    p.add_argument("--only", nargs="*", default=None, help="a subset of the study's recipes")
    p.add_argument("--runs", default=None, help="run folders (default: runs/STUDY)")
    p.add_argument("--out", default="bench/results")
    p.add_argument("--clips", type=int, default=16, help="held-out clips per set")
    p.add_argument("--evaluate-only", action="store_true")
    args = p.parse_args(argv)
    recipes = STUDIES[args.study].recipes
    unknown = sorted(set(args.only or []) - set(recipes))
    if unknown:
        p.error(f"not recipes of the {args.study} study: {unknown}; choose from {sorted(recipes)}")
    names = args.only or list(recipes)
    runs = args.runs or os.path.join("runs", args.study)
    os.makedirs(args.out, exist_ok=True)
    start = time.time()
    if not args.evaluate_only:
        train_pairs(names, args.minutes, runs, args.study)
    finished = [name for name in recipes if os.path.isdir(os.path.join(runs, name, "final"))]
    results = evaluate_runs(finished, runs, args.out, args.clips, args.study)  # the table keeps every finished recipe
    table = recipes_table(results)
    budgets = {r["budget_minutes"] for r in results.values()}
    if len(budgets) != 1:
        raise SystemExit(f"the {args.study} runs were trained for different budgets ({sorted(budgets)} minutes): not one study")
    minutes = budgets.pop()  # with --evaluate-only, --minutes is not what they were trained for
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads 1 per run"
    with open(os.path.join(args.out, f"{args.study}.json"), "w") as f:
        json.dump({"study": args.study, "started_from": STUDIES[args.study].started_from, "minutes": minutes, "machine": machine,
                   "results": results}, f, indent=1)
    sampler = next(iter(results.values()))["sampler"]
    with open(os.path.join(args.out, f"{args.study}.md"), "w") as f:
        f.write(f"{minutes:g} minutes of training per recipe, two at a time on {machine}; scored at {sampler['steps']} "
                f"denoising steps, chunks of {sampler['chunk']}.\n\n{table}\n")
    print(table)
    print(f"({(time.time() - start) / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
