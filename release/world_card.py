"""Write the world model's card, ``weights/world/README.md``, from measured files only:

    python -m release.world_card --weights weights/world --study studies/world3/results.json --arm world32-kernel \
        --world bench/results/world.json --play bench/results/play.json

``--study``: the study that trained the weights (its steps and minutes); ``--continued``: the runs that continued
them, in order (each checkpoint's record; the bundled weights' chain, :data:`SHIPPED_CONTINUED`, by default); ``--world``: ``python -m bench.world
--rollout 256 --sheet weights/world/from_nothing.png --json …`` (action following and the from-nothing rollout);
``--play``: ``python -m bench.play`` (live play).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from msc.evaluate import MOTION_KEPT

ACTION_BAR_DB, MIN_FPS, MAX_LATENCY_S = 3.0, 10.0, 0.3
REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # where --continued is relative to
# the runs that continued world3's world32-kernel arm into the bundled weights/world, in order (each checkpoint's record)
SHIPPED_CONTINUED = ("studies/world-long/checkpoint_13100.json", "studies/world-blur/shipped_checkpoint.json",
                     "studies/world-hard-long/01_world-long2.json", "studies/world-hard-long/02_world-self_control.json",
                     "studies/world-hard-long/03_world-mask_mask.json", "studies/world-hard-long/04_world-mask-long.json",
                     "studies/world-hard-long/05_world-sharp_hard.json", "studies/world-hard-long/06_world-hard-long.json",
                     "studies/world-hard-long/07_world-hard-long_7800.json",
                     "studies/world-hard-long/08_world-adversarial-long_control.json")


def _load(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def _met(ok: bool) -> str:
    return "met" if ok else "**not met**"


def continued_sentence(run: dict | None, record: str = "") -> str:
    """A run that continued the weights before it (``run``: its checkpoint's step, elapsed seconds and arguments, kept in
    the file ``record``), or nothing."""
    if run is None:
        return ""
    args = run["args"]
    nothing = args.get("from_nothing_prob", 0)
    resumable = f", the run resumable from `{args['keep_resumable']}/`" if args.get("keep_resumable") else ""
    return (f" Then continued from those weights for **{run['elapsed'] / 60:.0f} more minutes** ({run['step']} steps, "
            f"learning rate {args['lr']:g}, EMA {args['ema']}"
            + (f", {nothing:.0%} of the clips trained as videos from nothing" if nothing else "")
            + (f", with the adversarial term (`msc.adversarial`: weight {args['adversarial']:g}, after up to "
               f"{args.get('adversarial_rollout', 0)} frames of its own rollout)" if args.get("adversarial") else "")
            + f"; its checkpoint: `{record}`{resumable}).")


def header(config: dict, sampler: dict, study: dict, arm: str, continued=()) -> list:
    """``continued``: ``(run, record)`` of each run that continued the arm, in order (:func:`continued_sentence`)."""
    trained = study["trained"][arm]
    return [
        "# MSC world model (action-conditioned)", "",
        f"An MSC transformer ({config['hidden_size']} wide, {config['depth']} layers, {config['image_size']} × "
        f"{config['image_size']} RGB, {config['image_size'] // config['patch_size']} × {config['image_size'] // config['patch_size']} "
        f"tokens a frame) that draws the next frame of the world of `msc.world` from the frames before it and the key "
        f"the player pressed: {config['actions']} actions (none, left, right, up, down). Its anchor is the last frame "
        f"through a learned {config['action_kernel_size']} × {config['action_kernel_size']} kernel of the action"
        + (", cut to the kernel's largest tap (a learned whole-pixel move per action: no blur for a rollout to compound)"
           if config.get("action_kernel_hard") else "")
        + (", blended with the frame as it was by a learned keep mask per action and pixel (what the camera does not "
           "move: the player's marker)" if config.get("action_keep_mask") else "")
        + " (`prior=action_kernel`; the kernels started as the identity and learned the camera's step from data); the "
        "network draws the residual, the action also added to its noise embedding.", "",
        f"Trained here from scratch for **{trained['elapsed'] / 60:.0f} minutes on one CPU thread** ({trained['step']} "
        f"steps of 4 clips of 12 frames, another training run sharing the 2-core machine): the `{arm}` arm of study "
        f"`{study['study']['name']}` (`studies/`, `docs/world.md`).{''.join(continued_sentence(r, p) for r, p in continued)} Sampled at "
        f"{sampler['real-time']['steps']} denoising steps, one frame at a time (`sampler.json`).", "",
        "```bash",
        "python app.py                          # the Play tab appears: weights/world is found next to weights/",
        "python -m bench.world --weights weights/world --data data --rollout 256 --sheet weights/world/from_nothing.png",
        "python -m bench.play --world-weights weights/world",
        "```", ""]


def action_section(world: dict) -> list:
    s = world["scores"]
    gap_other, gap_frozen = world["gap_other_actions_db"], world["gap_copy_last_db"]
    return [
        "## Does it follow its actions?", "",
        f"{world['episodes']} held-out episodes (test seeds, held-out photographs), {world['context']} context frames, "
        f"{world['frames']} generated under random actions, PSNR against the engine's own rollout (`bench.world`):", "",
        "| | true actions | other actions | copy the last frame |", "|---|---:|---:|---:|",
        f"| PSNR (dB) | {s['true actions']['psnr']:.2f} | {s['other actions']['psnr']:.2f} | {s['copy-last']['psnr']:.2f} |",
        f"| motion ratio | {s['true actions']['motion_ratio']:.2f} | {s['other actions']['motion_ratio']:.2f} | 0 |", "",
        f"True actions against other actions: **{gap_other:+.2f} dB** (bar ≥ {ACTION_BAR_DB:.0f}: {_met(gap_other >= ACTION_BAR_DB)}); "
        f"against copy-last: **{gap_frozen:+.2f} dB** (bar ≥ {ACTION_BAR_DB:.0f}: {_met(gap_frozen >= ACTION_BAR_DB)}). "
        "Per generated frame (true actions): " + ", ".join(f"{x:.1f}" for x in s["true actions"]["psnr_per_frame"]) + " dB.", ""]


def from_nothing_section(world: dict) -> list:
    r = world["from_nothing"]
    return [
        "## From nothing", "",
        f"{r['seeds']} videos of {r['frames']} frames from nothing under random actions, played as the Play tab plays "
        "(one frame per action): every 8th of the first 64 frames, then every 32nd.", "",
        "![Videos from nothing](from_nothing.png)", "",
        f"Colour drift of the last 32 frames against the first 8: {r['colour_drift']:.3f} (bar ≤ 0.05); sharpness "
        f"{r['sharpness_ratio']:.2f}× the first frames' (bar 0.8–1.25); motion over the last 32 frames "
        f"{r['motion_kept']:.2f}× the first 32's (bar ≥ {MOTION_KEPT:g}): {_met(r['met'])}.", ""] + _engine_line(r)


def _engine_line(rollout: dict) -> list:
    """The world itself under the same protocol (``bench.world.engine_rollout``), where the report has it."""
    if "engine" not in rollout:
        return []
    e = rollout["engine"]
    return [f"The world itself (the engine's episodes on the same held-out seeds, under the same actions, from their first "
            f"frame) scores colour drift {e['colour_drift']:.3f}, sharpness {e['sharpness_ratio']:.2f}× and motion "
            f"{e['motion_kept']:.2f}×: the camera moves over a picture whose colours differ from place to place, so a "
            "model that drew this world exactly would drift as much.", ""]


def play_section(play: dict) -> list:
    rows = ["## Live play", "",
            f"`bench.play` on {play['machine']}, no other work running while it measured; 64 frames with a key held:", "",
            "| path | frames/s (bar ≥ 10) | key to frame, median / worst (s; bar ≤ 0.3) |", "|---|---:|---:|"]
    for name in ("in process", "API, /play_step per frame", "API, /play_stream", "browser"):
        r = play[name]
        rows.append(f"| {name} | skipped | |" if "skipped" in r else
                    f"| {name} | {r['fps']:.1f} | {r['latency_median_s']:.3f} / {r['latency_max_s']:.3f} |")
    rows += ["", f"The bar (the browser, and the API with a key held): {_met(play['met'])}. One `/play_step` call per frame "
             "is a round trip each: a client that holds a key should use `/play_stream`.", ""]
    return rows


def limits_section(minutes: float) -> list:
    return ["## What it does not do", "",
            "* It knows only this world: a camera over a picture, bouncing sprites, the player's marker. It is not a "
            "general video model (that is `weights/`).",
            "* From nothing it draws no world: its first frame is a mosaic of noise, which becomes a field of about one "
            "colour with the player's marker on it (smooth, or streaked where a whole-pixel move repeats the view's edge "
            "into it), and no picture or sprite appears (the sheet above). Start from an example world or a photo: then "
            "it follows the keys.",
            f"* Trained for {minutes:.0f} minutes on one CPU thread: it moves slower than the truth (motion ratio above), its frames lose "
            "detail as they go (the PSNR per frame above), sprites are smudges more than shapes, and what enters at the "
            "edge of the view is guessed, not remembered. Its training runs are in `docs/world.md`.", ""]


def write_card(weights: str, study_path: str, arm: str, world_path: str, play_path: str, continued=()) -> str:
    """``continued``: the records of the runs that continued the arm, in order (each a JSON of its checkpoint's ``step``,
    ``elapsed`` seconds and ``args``, as in its ``state.json``), relative to the repository."""
    config, sampler = _load(os.path.join(weights, "config.json")), _load(os.path.join(weights, "sampler.json"))
    world, play, study = _load(world_path), _load(play_path), _load(study_path)
    runs = [(_load(os.path.join(REPOSITORY, record)), record) for record in continued]
    minutes = (study["trained"][arm]["elapsed"] + sum(run["elapsed"] for run, _ in runs)) / 60
    lines = (header(config, sampler, study, arm, runs) + action_section(world) + from_nothing_section(world)
             + play_section(play) + limits_section(minutes))
    path = os.path.join(weights, "README.md")
    with open(path, "w") as f:
        f.write("\n".join(lines))
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default="weights/world")
    p.add_argument("--study", required=True, help="the study's results.json (its trained steps and minutes)")
    p.add_argument("--arm", required=True, help="the study arm these weights are")
    p.add_argument("--world", required=True, help="bench.world's JSON, with --rollout")
    p.add_argument("--play", required=True, help="bench.play's JSON")
    p.add_argument("--continued", nargs="*", default=list(SHIPPED_CONTINUED), help="the records of the runs that "
                   "continued the arm, in order: each checkpoint's step, elapsed and args (default: the bundled weights')")
    args = p.parse_args(argv)
    print(write_card(args.weights, args.study, args.arm, args.world, args.play, args.continued))
    return 0


if __name__ == "__main__":
    sys.exit(main())
