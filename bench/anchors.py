"""How far can a classical anchor go? ``python -m bench.anchors --data data`` (about a minute, one thread).

The bundled model's noise is centred on its **anchor**, the last frame pushed forward by whole pixels along the DIS
optical flow of the two frames before it (``prior=flow_splat_whole``, :mod:`msc.flow`), and the model scores within a
few hundredths of a dB of that anchor alone on every held-out set (the card). So the anchor bounds what the model
shows today, and two of the motion bars are out of its reach: the sprites (the procedural set's trajectory error must
be at most half the frozen frame's) and the 256-frame rollout that must keep moving. This bench asks whether a better
classical anchor would reach them, with no network at all:

* **flow estimators**: OpenCV's DIS at its ultrafast preset (the anchor's), fast and medium presets, DIS medium on
  frames upsampled 2× (small sprites cover more pixels), and Farnebäck (OpenCV's tutorial parameters);
* **velocity baselines**: the flow of the last frame against the frame ``k`` before it, divided by ``k`` (a whole-pixel
  anchor that re-measures the velocity between frames that moved by whole pixels sees 0 for any motion under half a
  pixel a frame; a longer baseline averages the rounding out).

Each is scored as the card scores a model: 8 generated frames after 8 context frames of 16 held-out clips a set (PSNR,
motion ratio, the sprites' distance from their true centres), and as the card's rollout: 256 frames from the context
of 4 held-out real clips, the anchor re-estimated from its own frames every 8 (the default chunk), colour drift,
sharpness and motion of the last 32 frames against the context.

**The ceiling of any constant-velocity anchor** (the procedural set, whose generator knows the truth): the same anchor
drawn with the generator's exact velocities (:func:`msc.data.procedural.procedural_motion`: the camera's for the
texture, each sprite's own) instead of a flow estimate, by whole pixels (the anchor's drawing), bilinearly, and with
each sprite drawn over what it moves onto (softmax splatting, ``msc.flow.splat``'s ``importance``; the summation
splat averages a sprite with the background it lands on); the practical counterpart, DIS's flow drawn the same way
with each pixel's importance its speed against the frame's median motion (what moves unlike the camera is in front);
and the sprites' true centres moved on at their last velocity with no picture at all (a sprite that bounces off an
edge within the 8 frames is missed by every constant-velocity anchor). Results: ``bench/results/anchors.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import torch

from bench import ROOT, write_results
from msc.data.mixture import PreparedData
from msc.data.procedural import TEST_SEED_OFFSET, procedural_motion, procedural_sprites
from msc.evaluate import COLOUR_TOLERANCE, MOTION_KEPT, continuation_scores, copy_last, held_out_set, rollout_measures
from msc.flow import DIS_REFINEMENT_ITERATIONS, FARNEBACK, extrapolate, grey_uint8, splat_layered
from msc.tracking import MIN_VISIBLE, trajectory_error

CLIPS, CONTEXT, HORIZON = 16, 8, 8
ROLLOUT, ROLLOUT_CLIPS, CHUNK = 256, 4, 8


def _dis(preset: str):
    def estimate(last: np.ndarray, previous: np.ndarray) -> np.ndarray:
        import cv2

        dis = cv2.DISOpticalFlow_create(getattr(cv2, f"DISOPTICAL_FLOW_PRESET_{preset.upper()}"))
        dis.setVariationalRefinementIterations(DIS_REFINEMENT_ITERATIONS)
        return dis.calc(last, previous, None)
    return estimate


def _farneback(last: np.ndarray, previous: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.calcOpticalFlowFarneback(last, previous, None, **FARNEBACK)


def _upsampled(estimate, factor: int):
    """``estimate`` run on frames ``factor``× larger (bicubic), its flow brought back to the frame's pixels."""
    def upsampled(last: np.ndarray, previous: np.ndarray) -> np.ndarray:
        import cv2

        big = [cv2.resize(f, None, fx=factor, fy=factor, interpolation=cv2.INTER_CUBIC) for f in (last, previous)]
        flow = estimate(*big)
        return cv2.resize(flow, (last.shape[1], last.shape[0]), interpolation=cv2.INTER_AREA) / factor
    return upsampled


# name -> how the backward flow of one grey uint8 pair is measured; the first is the bundled model's anchor
ESTIMATORS = {"DIS ultrafast (the anchor's)": _dis("ultrafast"), "DIS fast": _dis("fast"), "DIS medium": _dis("medium"),
              "DIS medium, frames upsampled 2×": _upsampled(_dis("medium"), 2), "Farnebäck": _farneback}
BASELINES = (1, 2, 4, 7)  # frames between the two the velocity is measured on (1: the anchor's)
SPRITE_IMPORTANCE = 5.0  # softmax-splatting importance per layer of the exact motion: a sprite outweighs what it covers e^5×


def velocity_flow(frames: torch.Tensor, estimate, baseline: int) -> torch.Tensor:
    """The backward flow per frame of the last of ``frames`` ``[B, T, C, H, W]`` against the frame ``baseline``
    before it (fewer when there are fewer), divided by that many: ``[B, 2, H, W]`` pixels a frame."""
    k = min(baseline, frames.shape[1] - 1)
    last, before = grey_uint8(frames[:, -1]), grey_uint8(frames[:, -1 - k])
    flows = np.stack([estimate(last[i], before[i]) for i in range(last.shape[0])])  # [B, H, W, 2]
    return torch.from_numpy(flows).permute(0, 3, 1, 2).float() / k


def anchor_frames(frames: torch.Tensor, estimate, baseline: int, count: int) -> torch.Tensor:
    """The whole-pixel splatting anchor of the ``count`` frames after ``frames``: ``[B, count, C, H, W]``."""
    flow = velocity_flow(frames, estimate, baseline)
    return extrapolate(None, frames[:, -1], range(1, count + 1), flow=flow, method="splat_whole")


def continuation_row(sets: dict, sprites: list, estimate, baseline: int) -> dict:
    """PSNR / motion ratio (/ sprite error) of the anchor alone on every held-out set."""
    row = {}
    for name, clips in sets.items():
        context, truth = clips[:, :CONTEXT], clips[:, CONTEXT:]
        scores = continuation_scores(anchor_frames(context, estimate, baseline, HORIZON), truth,
                                     sprites if name == "procedural" else None, CONTEXT)
        row[name] = {k: scores[k] for k in ("psnr_mean", "motion_ratio", "trajectory_error") if k in scores}
    return row


def rollout_row(context: torch.Tensor, estimate, baseline: int) -> dict:
    """The anchor alone rolled out ``ROLLOUT`` frames, re-estimated from its own frames every ``CHUNK``: the card's
    rollout measures."""
    video = context
    while video.shape[1] < context.shape[1] + ROLLOUT:
        video = torch.cat([video, anchor_frames(video, estimate, baseline, CHUNK)], dim=1)
    measures = rollout_measures(context, video[:, context.shape[1]:context.shape[1] + ROLLOUT])
    return {k: measures[k] for k in ("colour_drift_max", "sharpness_ratio", "motion_kept")}


def layered(last: torch.Tensor, flow: torch.Tensor, importance: torch.Tensor, count: int) -> torch.Tensor:
    """The ``count`` frames after ``last`` ``[B, C, H, W]`` pushed forward along ``flow`` (backward flow, ``[B, 2, H, W]``)
    by softmax splatting with ``importance`` ``[B, H, W]`` (:func:`msc.flow.splat_layered`): ``[B, count, C, H, W]``."""
    return torch.stack([splat_layered(last, flow, h, importance) for h in range(1, count + 1)], dim=1)


def constant_velocity_error(sprites: list) -> float:
    """Mean distance (pixels) between each sprite's true centre in the ``HORIZON`` frames after the context and its last
    context centre moved on at its last velocity, over the sprites the trajectory error scores (no picture drawn)."""
    total, count = 0.0, 0
    for record in sprites:
        centre, visible = record["centre"], record["visible"]
        velocity = centre[CONTEXT - 1] - centre[CONTEXT - 2]  # [n, 2]
        for h in range(1, HORIZON + 1):
            miss = (centre[CONTEXT - 1] + h * velocity - centre[CONTEXT - 1 + h]).norm(dim=-1)  # [n]
            scored = visible[CONTEXT - 1 + h] >= MIN_VISIBLE
            total, count = total + float(miss[scored].sum()), count + int(scored.sum())
    return total / max(count, 1)


def ceiling_rows(clips: torch.Tensor, sprites: list) -> list:
    """The procedural set's anchors drawn with the generator's exact velocities, and DIS's flow drawn in layers (see the
    module's docstring): one ``{"anchor", "psnr_mean", "motion_ratio", "trajectory_error"}`` per way of drawing."""
    context, truth = clips[:, :CONTEXT], clips[:, CONTEXT:]
    last, size = context[:, -1], clips.shape[-1]
    motions = [procedural_motion(TEST_SEED_OFFSET + i, CONTEXT - 1, size) for i in range(clips.shape[0])]
    exact = torch.stack([m["flow"] for m in motions])  # [N, 2, S, S]
    layers = torch.stack([m["layer"] for m in motions]).float()  # [N, S, S]
    drawn = {"the generator's exact velocities, by whole pixels (the anchor's drawing)":
             extrapolate(None, last, range(1, HORIZON + 1), flow=exact, method="splat_whole"),
             "the exact velocities, bilinear": extrapolate(None, last, range(1, HORIZON + 1), flow=exact, method="splat"),
             "the exact velocities, each sprite drawn over what it moves onto": layered(last, exact, SPRITE_IMPORTANCE * layers, HORIZON),
             "DIS ultrafast, pixels that move unlike the frame's median drawn on top (`splat_layered`)":
             extrapolate(context[:, -2], last, range(1, HORIZON + 1), method="splat_layered")}
    rows = []
    for name, pred in drawn.items():
        scores = continuation_scores(pred, truth, sprites, CONTEXT)
        rows.append({"anchor": name, **{k: scores[k] for k in ("psnr_mean", "motion_ratio", "trajectory_error")}})
    return rows


def table(report: dict) -> list:
    lines = ["| anchor | velocity baseline (frames) | real PSNR / motion | camera PSNR / motion | procedural PSNR / motion "
             "/ sprite error | rollout drift | sharpness | motion kept |", "|---|---:|---|---|---|---:|---:|---:|"]
    copy = report["copy_last"]
    lines.append(f"| copy the last frame | | {copy['real']:.2f} / 0 | {copy['camera']:.2f} / 0 | {copy['procedural']:.2f} / 0 / "
                 f"{copy['sprites']:.2f} px | 0 | 1× | 0 |")
    for r in report["rows"]:
        c, o = r["continuation"], r["rollout"]
        lines.append(f"| {r['estimator']} | {r['baseline']} | {c['real']['psnr_mean']:.2f} / {c['real']['motion_ratio']:.2f} | "
                     f"{c['camera']['psnr_mean']:.2f} / {c['camera']['motion_ratio']:.2f} | {c['procedural']['psnr_mean']:.2f} / "
                     f"{c['procedural']['motion_ratio']:.2f} / {c['procedural']['trajectory_error']:.2f} px | "
                     f"{o['colour_drift_max']:.3f} | {o['sharpness_ratio']:.2f}× | {o['motion_kept']:.2f} |")
    half = report["copy_last"]["sprites"] / 2
    best = min(report["rows"], key=lambda r: r["continuation"]["procedural"]["trajectory_error"])
    moving = max(report["rows"], key=lambda r: r["rollout"]["motion_kept"])
    lines += ["", f"The sprite bar (half the frozen frame's error, {half:.2f} px): the closest anchor is {best['estimator']} "
              f"(baseline {best['baseline']}) at {best['continuation']['procedural']['trajectory_error']:.2f} px. The rollout "
              f"bar (motion kept ≥ {MOTION_KEPT:g}, drift ≤ {COLOUR_TOLERANCE:g}): the most moving anchor keeps "
              f"{moving['rollout']['motion_kept']:.2f} ({moving['estimator']}, baseline {moving['baseline']}). Measured "
              f"with {report['clips']} clips a set, {ROLLOUT_CLIPS} rollouts of {ROLLOUT} frames."]
    return lines


def ceiling_table(report: dict) -> list:
    """The ceiling section: the procedural set's anchors from the exact motion, and the constant-velocity centres."""
    half = report["copy_last"]["sprites"] / 2
    lines = ["| anchor (procedural set) | PSNR | motion | sprite error |", "|---|---:|---:|---:|",
             f"| copy the last frame | {report['copy_last']['procedural']:.2f} | 0 | {report['copy_last']['sprites']:.2f} px |"]
    lines += [f"| {r['anchor']} | {r['psnr_mean']:.2f} | {r['motion_ratio']:.2f} | {r['trajectory_error']:.2f} px |"
              for r in report["ceiling"]]
    lines += [f"| the true centres moved on at their last velocity, no picture | | | {report['constant_velocity']:.2f} px |",
              "", f"The sprite bar ({half:.2f} px) against the locator's own error on the true frames, "
              f"{report['locator_floor']:.2f} px."]
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=os.path.join(ROOT, "data"), help="prepared data (python -m msc.data.prepare)")
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "anchors"))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    data = PreparedData(args.data)
    sets = {name: held_out_set(name, CLIPS, CONTEXT + HORIZON, data.size, data) for name in ("real", "camera", "procedural")}
    sprites = [procedural_sprites(TEST_SEED_OFFSET + i, CONTEXT + HORIZON, data.size) for i in range(CLIPS)]
    rollout_context = sets["real"][:ROLLOUT_CLIPS, :CONTEXT]
    copy = {name: continuation_scores(copy_last(clips[:, :CONTEXT], HORIZON), clips[:, CONTEXT:],
                                      sprites if name == "procedural" else None, CONTEXT) for name, clips in sets.items()}
    frozen = {name: s["psnr_mean"] for name, s in copy.items()}
    frozen["sprites"] = copy["procedural"]["trajectory_error"]
    variants = [(name, 1) for name in ESTIMATORS] + [(next(iter(ESTIMATORS)), k) for k in BASELINES[1:]]
    rows = []
    for name, baseline in variants:
        start = time.time()
        estimate = ESTIMATORS[name]
        rows.append({"estimator": name, "baseline": baseline, "continuation": continuation_row(sets, sprites, estimate, baseline),
                     "rollout": rollout_row(rollout_context, estimate, baseline)})
        print(f"{name}, baseline {baseline}: {time.time() - start:.0f} s", flush=True)
    machine = f"{platform.machine()}, {os.cpu_count()} cores"
    procedural = sets["procedural"]
    report = {"machine": machine, "clips": CLIPS, "copy_last": frozen, "rows": rows, "ceiling": ceiling_rows(procedural, sprites),
              "constant_velocity": constant_velocity_error(sprites),
              "locator_floor": trajectory_error(procedural[:, CONTEXT:], sprites, CONTEXT)}
    write_results(args.out, report, [f"`python -m bench.anchors` on {machine}: the whole-pixel splatting anchor alone, no "
                                     "network, by flow estimator and velocity baseline.", "", *table(report), "",
                                     "## The ceiling of a constant-velocity anchor", "", *ceiling_table(report)])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
