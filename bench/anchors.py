"""How far can a classical anchor go? ``python -m bench.anchors --data data`` (about 5 minutes, one thread).

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
sharpness and motion of the last 32 frames against the context. Results: ``bench/results/anchors.md``.
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
from msc.data.procedural import TEST_SEED_OFFSET, procedural_sprites
from msc.evaluate import COLOUR_TOLERANCE, MOTION_KEPT, continuation_scores, copy_last, held_out_set, rollout_measures
from msc.flow import DIS_REFINEMENT_ITERATIONS, FARNEBACK, grey_uint8, extrapolate

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
    report = {"machine": machine, "clips": CLIPS, "copy_last": frozen, "rows": rows}
    write_results(args.out, report, [f"`python -m bench.anchors` on {machine}: the whole-pixel splatting anchor alone, no "
                                     "network, by flow estimator and velocity baseline.", "", *table(report)])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
