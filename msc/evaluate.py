"""Evaluate video continuation on held-out data: ``python -m msc.evaluate``.

    python -m msc.evaluate --weights weights --data data --baseline dense=weights/dense_baseline --json eval.json

Held-out **sets**, each reported on its own (whole files the training never saw):

* ``real``: windows of the held-out real video files (needs ``--data``, the folder made by
  ``python -m msc.data.prepare``; :func:`msc.data.mixture.held_out_real`);
* ``camera``: the simulated camera over held-out photographs (needs ``--data``);
* ``procedural``: procedural clips of the test seeds (:data:`msc.data.TEST_SEED_OFFSET`).

For ``--clips`` clips of a set the model sees ``--context`` ground-truth frames and generates the next
``--horizon`` frames with the chunk-by-chunk sampler (:func:`msc.sampling.sample_video`). Reported per
horizon (1 = the first new frame): PSNR and SSIM against the ground truth (:mod:`msc.metrics`), beside

* ``copy-last``: the last context frame repeated — the score of predicting no motion at all;
* ``flow-extrapolation``: the classical predictor, the last frame warped along the optical flow of the
  last two context frames at constant velocity (:mod:`msc.flow`): a model of motion must beat it;
* ``flow-splatting``: the stronger classical predictor, every pixel of the last frame pushed forward along
  its own velocity (DIS flow, forward splatting: :data:`msc.flow.METHODS` ``"splat"``);
* ``--baseline``: any other weights folder, e.g. the dense-attention model of the same budget;

and measures that standing still cannot win: the **motion ratio** (mean absolute frame difference of the
generated frames over the ground truth's: a frozen prediction scores 0, the truth's motion 1) and, on the
procedural set, whose generator knows every sprite's true position, the **sprite trajectory error** (mean
distance in pixels between each sprite found in the prediction and its true centre, :mod:`msc.tracking`;
the same locator on the true frames is the measurement's floor, ``truth``).

With ``--fvd``, each method's clips (context + continuation, 16 frames at the default 8 + 8) also get
their Fréchet Video Distance to the ground-truth clips of the set (:mod:`msc.fvd`; the I3D weights
are converted once by ``python -m msc.i3d``), with the clip count it was computed on and its cost.
The context frames are the same for every method, as in the usual prediction protocol.

**Long rollout** (``--rollout`` frames from the context of the first ``--rollout-clips`` clips of the
first set): the per-channel mean colour (on ``[0, 1]``) of the last 32 frames against the context's
(the bar: within :data:`COLOUR_TOLERANCE`), and the sharpness of the last 32 frames against the
context's (a collapse to flat colour or blur shows as a ratio far below 1), and whether it still moves: the mean
|frame − previous frame| of the last 32 frames against the context's (the bar: at least half).

The same sampler settings are used for every model. A table goes to stdout, everything to ``--json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Callable, Dict, Optional, Sequence

import torch

from msc.data.mixture import PreparedData, held_out_camera, held_out_procedural, held_out_real
from msc.environment import go_offline, keep_freed_memory
from msc.data.procedural import TEST_SEED_OFFSET, procedural_sprites
from msc.flow import flow_extrapolation, flow_splatting, flow_splatting_layered, flow_splatting_whole
from msc.fvd import FVD
from msc.metrics import motion, psnr, sharpness, ssim, to_unit
from msc.model import MSCModel
from msc.sampling import SamplerSettings, add_settings_arguments, load_presets, sample_video, settings_from_args
from msc.tracking import trajectory_error

SETS = ("real", "camera", "procedural")
COLOUR_TOLERANCE = 0.05  # per-channel mean colour of the rollout's last frames vs the context's, on [0, 1]
MOTION_KEPT = 0.5  # the rollout's last frames still move at least this much of the context's motion
STABILITY_WINDOW = 32


@dataclass
class EvalSettings:
    clips: int = 8  # per set
    context: int = 8
    horizon: int = 8
    rollout: int = 256
    rollout_clips: int = 2
    sets: tuple = ("procedural",)
    sampler: SamplerSettings = field(default_factory=SamplerSettings)  # the same for every model
    fvd: bool = False  # Fréchet Video Distance of every method (needs the converted I3D weights)


def held_out_set(name: str, count: int, frames: int, size: int, data: Optional[PreparedData]) -> torch.Tensor:
    """``[N, frames, 3, S, S]`` clips of the held-out set ``name``."""
    if name not in SETS:
        raise ValueError(f"held-out set must be one of {SETS}, got {name!r}.")
    if name == "procedural":
        return held_out_procedural(count, frames, size)
    if data is None:
        raise ValueError(f"the {name!r} set needs the prepared data: --data FOLDER (python -m msc.data.prepare --out FOLDER).")
    if data.size != size:
        raise ValueError(f"the prepared data holds {data.size}-pixel frames; the model needs {size}.")
    return held_out_real(data, count, frames) if name == "real" else held_out_camera(data, count, frames)


def copy_last(context: torch.Tensor, horizon: int) -> torch.Tensor:
    """The no-motion prediction: ``[N, K, C, H, W]`` -> ``[N, horizon, C, H, W]``."""
    return context[:, -1:].expand(-1, horizon, -1, -1, -1)


# the predictors every model is scored beside: no motion, and the classical ones (msc.flow; splatting by whole pixels is
# the flow_splat_whole prior's anchor alone, the layered splatting the flow_splat_layered anchor's)
BASELINES = (("copy-last", copy_last), ("flow-extrapolation", flow_extrapolation), ("flow-splatting", flow_splatting),
             ("flow-splatting-whole", flow_splatting_whole), ("flow-splatting-layered", flow_splatting_layered))


def model_names(methods: dict) -> list:
    """The names in a set's ``methods`` (of a report) that are models, not :data:`BASELINES`, in their order."""
    baselines = {name for name, _ in BASELINES}
    return [name for name in methods if name not in baselines]


def continuation_scores(pred: torch.Tensor, truth: torch.Tensor, sprites=None, first_frame: int = 0) -> dict:
    """Per-horizon means over clips of PSNR / SSIM, each clip's PSNR averaged over the horizon, the
    motion of ``pred`` and ``truth`` and their ratio, and with ``sprites`` (one record of
    :func:`~msc.data.procedural.procedural_sprites` per clip, ``pred``'s first frame being frame ``first_frame``
    of it) the sprite trajectory error. ``pred`` / ``truth`` ``[N, M, C, H, W]``."""
    p, s = psnr(pred, truth), ssim(pred, truth)  # [N, M]
    moved = float(motion(pred).mean()) if pred.shape[1] > 1 else 0.0
    moved_truth = float(motion(truth).mean()) if truth.shape[1] > 1 else 0.0
    scores = {
        "psnr": p.mean(0).tolist(),
        "psnr_clips": p.mean(1).tolist(),
        "ssim": s.mean(0).tolist(),
        "psnr_mean": float(p.mean()),
        "ssim_mean": float(s.mean()),
        "motion": moved,
        "motion_truth": moved_truth,
        "motion_ratio": moved / moved_truth if moved_truth > 0 else float("nan"),
    }
    if sprites is not None:
        scores["trajectory_error"] = trajectory_error(pred, sprites, first_frame)
    return scores


def sample_pixels(model, context: torch.Tensor, frames: int, sampler: SamplerSettings) -> torch.Tensor:
    """``[N, K, C, H, W]`` context -> ``[N, frames, C, H, W]`` new frames; a latent model (one with an ``autoencoder``,
    see :func:`load_model`) samples its latents from the encoded context and decodes them."""
    autoencoder = getattr(model, "autoencoder", None)
    if autoencoder is None:
        return sample_video(model, context, frames, sampler).video[:, context.shape[1]:]
    with torch.no_grad():
        latents = sample_video(model, autoencoder.encode(context), frames, sampler).video[:, context.shape[1]:]
        return autoencoder.decode(latents).clamp(-1, 1)


def load_model(folder: str) -> MSCModel:
    """A weights folder; with an ``autoencoder/`` inside it (``msc.train --autoencoder``), a latent model that carries
    its autoencoder as ``.autoencoder``."""
    model = MSCModel.from_pretrained(folder).eval()
    if os.path.isdir(os.path.join(folder, "autoencoder")):
        from msc.autoencoder import FrameAutoencoder

        model.autoencoder = FrameAutoencoder.from_pretrained(os.path.abspath(os.path.join(folder, "autoencoder"))).eval()
    return model


def generate_continuations(model, context: torch.Tensor, horizon: int, settings: EvalSettings) -> torch.Tensor:
    """``[N, K, C, H, W]`` context -> ``[N, horizon, C, H, W]`` generated frames (all clips in one batch)."""
    return sample_pixels(model, context, horizon, settings.sampler)


def colour_means(video: torch.Tensor) -> torch.Tensor:
    """Per-channel mean colour on ``[0, 1]``: ``[N, T, C, H, W]`` -> ``[N, C]`` (over frames and pixels)."""
    return to_unit(video).mean(dim=(1, 3, 4))


def rollout_measures(context: torch.Tensor, video: torch.Tensor) -> dict:
    """The long-rollout bar's measures of ``video`` ``[N, T, C, H, W]``, the frames after ``context`` ``[N, K, C, H, W]``:
    the last :data:`STABILITY_WINDOW` frames' colour and sharpness against the context's, and how much they still move
    against it (the bar: :data:`MOTION_KEPT`)."""
    tail = video[:, -min(STABILITY_WINDOW, video.shape[1]):]
    colour_tail, colour_context = colour_means(tail), colour_means(context)  # [N, C]
    drift = (colour_tail - colour_context).abs()  # [N, C]
    sharp_tail, sharp_context = float(sharpness(tail).mean()), float(sharpness(context).mean())
    moving_context = float(motion(context).mean())
    return {
        "colour_context": colour_context.tolist(), "colour_last": colour_tail.tolist(),
        "colour_drift_max": float(drift.max()),
        "sharpness_context": sharp_context, "sharpness_last": sharp_tail,
        "sharpness_ratio": sharp_tail / max(sharp_context, 1e-8),
        "motion_kept": float(motion(tail).mean()) / moving_context if moving_context > 0 else float("nan"),
    }


def rollout_stability(model, context: torch.Tensor, frames: int, settings: EvalSettings) -> dict:
    """Generate ``frames`` frames after ``context`` and compare the last frames' colour and sharpness
    with the context's (:func:`rollout_measures`)."""
    start = time.time()
    video = sample_pixels(model, context, frames, settings.sampler)
    measures = rollout_measures(context, video)
    unit = to_unit(video).flatten(-3)
    return {
        "frames": frames,
        "clips": int(context.shape[0]),
        "frame_mean": unit.mean(-1).mean(0).tolist(),
        "frame_std": unit.std(-1).mean(0).tolist(),
        "frame_sharpness": sharpness(video).mean(0).tolist(),
        **measures,
        "colour_kept": measures["colour_drift_max"] <= COLOUR_TOLERANCE and bool(torch.isfinite(video).all()),
        "seconds": time.time() - start,
        "video": video,
    }


def evaluate(models: Dict[str, MSCModel], settings: EvalSettings, data: Optional[PreparedData] = None,
             rollout_model: Optional[str] = None, guidance: Sequence[float] = (1.0,), i3d=None,
             callback: Optional[Callable[[dict], None]] = None, fvd_cache: Optional[str] = None) -> dict:
    """Scores of every model and of copy-last on every held-out set, and the rollout of
    ``rollout_model`` (default: the first model) from the first set. The first model is also sampled
    at every history-guidance scale in ``guidance`` (named ``"msc w=2"``; ``w = 1`` is the plain sampler).
    With ``settings.fvd``, ``i3d`` (default: :func:`msc.i3d.load_i3d`) scores FVD, keeping clip sets' features in the
    folder ``fvd_cache`` (:class:`msc.fvd.FeatureCache`; ``None``: none). ``callback(report)``
    runs after every set (the report so far), so a long evaluation keeps what it finished."""
    if settings.fvd and i3d is None:
        from msc.i3d import load_i3d

        i3d = load_i3d()
    first_model = next(iter(models.values()))
    size = first_model.config.image_size * (first_model.autoencoder.config.factor if hasattr(first_model, "autoencoder") else 1)
    report = {"settings": asdict(settings), "sets": {}, "videos": {}}
    runs = [(name, model, 1.0) for name, model in models.items()]
    first = next(iter(models))
    runs[1:1] = [(f"{first} w={w:g}", models[first], float(w)) for w in guidance if float(w) != 1.0]
    first_context = None
    for set_name in settings.sets:
        clips = held_out_set(set_name, settings.clips, settings.context + settings.horizon, size, data)
        context, truth = clips[:, : settings.context], clips[:, settings.context:]
        first_context = context if first_context is None else first_context
        fvd = FVD(i3d, clips, cache=fvd_cache) if settings.fvd else None
        sprites = None
        if set_name == "procedural":  # the generator knows where every sprite is
            sprites = [procedural_sprites(TEST_SEED_OFFSET + i, clips.shape[1], size) for i in range(clips.shape[0])]

        def scores(pred: torch.Tensor) -> dict:
            return continuation_scores(pred, truth, sprites, settings.context)

        methods = {}
        for name, baseline in BASELINES:
            predicted = baseline(context, settings.horizon)
            methods[name] = scores(predicted)
            if fvd:
                methods[name]["fvd"] = fvd(torch.cat([context, predicted], dim=1))
        report["sets"][set_name] = {"clips": int(clips.shape[0]), "methods": methods}
        if sprites is not None:
            report["sets"][set_name]["trajectory_error_floor"] = trajectory_error(truth, sprites, settings.context)
        for name, model, w in runs:
            run_settings = replace(settings, sampler=replace(settings.sampler, history_guidance=w))
            start = time.time()
            generated = generate_continuations(model, context, settings.horizon, run_settings)
            methods[name] = scores(generated)
            methods[name].update(seconds=time.time() - start, finite=bool(torch.isfinite(generated).all()), history_guidance=w)
            report["videos"][f"{set_name}_{name}"] = torch.cat([context, generated], dim=1)  # [N, K + M, C, H, W]
            if fvd:
                methods[name]["fvd"] = fvd(report["videos"][f"{set_name}_{name}"])
        if fvd:
            report["sets"][set_name]["fvd"] = {"clips": int(clips.shape[0]), "frames": int(clips.shape[1]),
                                               "i3d_seconds": round(fvd.seconds, 1)}
        if callback:
            callback(report)
    if settings.rollout:
        name = rollout_model or first
        n = min(settings.rollout_clips, first_context.shape[0])
        report["rollout"] = rollout_stability(models[name], first_context[:n], settings.rollout, settings)
        report["rollout"].update(model=name, set=settings.sets[0])
    return report


def format_table(report: dict) -> str:
    """Per set, one row per method: PSNR per horizon, mean PSNR / SSIM, motion ratio (motion against the ground
    truth's), and where measured the sprite trajectory error and FVD."""
    lines = []
    for set_name, entry in report["sets"].items():
        methods = entry["methods"]
        names = list(methods)
        horizon = len(methods[names[0]]["psnr"])
        width = max(len(n) for n in names)
        fvd = entry.get("fvd")
        tracked = "trajectory_error_floor" in entry
        head = (f"{'method':<{width}} | " + " ".join(f"{f'h={h + 1}':>6}" for h in range(horizon))
                + " |   PSNR   SSIM | motion ratio" + (" | sprite err px" if tracked else "") + (" |    FVD" if fvd else ""))
        lines += [f"{set_name} ({entry['clips']} held-out clips): PSNR (dB) per horizon, then means over the horizon", head, "-" * len(head)]
        for n in names:
            m = methods[n]
            lines.append(f"{n:<{width}} | " + " ".join(f"{v:6.2f}" for v in m["psnr"])
                         + f" | {m['psnr_mean']:6.2f}  {m['ssim_mean']:.3f} | {m['motion_ratio']:12.2f}"
                         + (f" | {m['trajectory_error']:13.2f}" if tracked else "") + (f" | {m['fvd']:6.1f}" if fvd else ""))
        truth_motion = methods[names[0]]["motion_truth"]
        lines.append(f"motion ratio: generated / true mean |frame - previous frame| (truth {truth_motion:.4f} on [0, 1])")
        if tracked:
            lines.append(f"sprite err: mean distance of each sprite found in the prediction to its true centre (the locator "
                         f"on the true frames: {entry['trajectory_error_floor']:.2f} px)")
        if fvd:
            lines.append(f"FVD: {fvd['clips']} clips of {fvd['frames']} frames against the ground truth's; I3D time {fvd['i3d_seconds']} s")
        lines.append("")
    if "rollout" in report:
        r = report["rollout"]
        lines.append(
            f"rollout ({r['model']}, {r['frames']} frames from {r['clips']} {r['set']} clips): last-{STABILITY_WINDOW} colour "
            f"drift {r['colour_drift_max']:.3f} (bar {COLOUR_TOLERANCE}): {'kept' if r['colour_kept'] else 'DRIFTED'}; "
            f"sharpness {r['sharpness_last']:.4f} vs context {r['sharpness_context']:.4f} ({r['sharpness_ratio']:.2f}x); "
            f"motion {r['motion_kept']:.2f}x the context's (bar {MOTION_KEPT:g})"
        )
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default="weights", help="the model to evaluate (folder with config.json + model.safetensors)")
    p.add_argument("--baseline", action="append", default=[], metavar="[NAME=]FOLDER",
                   help="another model to score beside it, e.g. dense=weights/dense_baseline (repeatable)")
    p.add_argument("--data", help="the prepared data folder (python -m msc.data.prepare): adds the real and camera sets")
    p.add_argument("--sets", nargs="+", choices=SETS, help="held-out sets (default: all the data allows)")
    d = EvalSettings()
    p.add_argument("--clips", type=int, default=d.clips, help="clips per set")
    p.add_argument("--context", type=int, default=d.context)
    p.add_argument("--horizon", type=int, default=d.horizon)
    p.add_argument("--rollout", type=int, default=d.rollout, help="long-rollout frames (0: skip)")
    p.add_argument("--rollout-clips", type=int, default=d.rollout_clips)
    p.add_argument("--guidance", type=float, nargs="+", default=[1.0], metavar="W",
                   help="history-guidance scales to sweep on the evaluated model, e.g. 1 1.5 2 3 (overrides --history-guidance)")
    add_settings_arguments(p)
    p.add_argument("--fvd", action="store_true",
                   help="also score Fréchet Video Distance (converted I3D weights needed: python -m msc.i3d, once)")
    p.add_argument("--fvd-cache", metavar="FOLDER",
                   help="keep the I3D features of every clip set here, keyed by the clips' bytes: the ground truth and "
                        "the baselines, the same in every evaluation of the same data, are computed once")
    p.add_argument("--json", help="write the full report here")
    p.add_argument("--videos", help="write the first clip's context + continuation per set and model, and the rollout, as mp4 here")
    p.add_argument("--gates-plot", help="write the learned-gates heatmap (PNG) here")
    p.add_argument("--threads", type=int, default=0)
    return p.parse_args(argv)


def _load_models(args) -> Dict[str, MSCModel]:
    """The evaluated model (named by its attention, e.g. ``msc``) first, then the baselines."""
    model = load_model(args.weights)
    models = {model.config.attention: model}
    for spec in args.baseline:
        name, _, folder = spec.rpartition("=")
        baseline = load_model(folder)
        name = name or baseline.config.attention
        models[name if name not in models else f"{name}-{len(models)}"] = baseline
    return models


def _write_json(report: dict, path: Optional[str]) -> None:
    """The report without its videos, to ``path`` (nothing when ``None``)."""
    if path:
        with open(path, "w") as f:
            json.dump({k: v for k, v in report.items() if k != "videos"}, f, indent=1)


def main(argv=None) -> int:
    go_offline()
    keep_freed_memory()
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    sets = tuple(args.sets or (SETS if args.data else ("procedural",)))
    try:
        data = PreparedData(args.data) if args.data else None
        models = _load_models(args)
        sampler = settings_from_args(args, next(iter(models.values())).config.windows,
                                     load_presets(args.weights if os.path.isdir(args.weights) else None))
        settings = EvalSettings(args.clips, args.context, args.horizon, args.rollout, args.rollout_clips, sets, sampler, args.fvd)
        report = evaluate(models, settings, data, guidance=args.guidance, callback=lambda r: _write_json(r, args.json),
                          fvd_cache=args.fvd_cache)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    first = next(iter(models.values()))
    report["gates"] = {}
    if first.config.attention == "msc":
        from msc.plots import gate_heatmap, gate_summary, save

        report["gates"] = gate_summary(first)
        if args.gates_plot:
            save(gate_heatmap(first), args.gates_plot)
    videos = report.pop("videos", {})
    rollout_video = report.get("rollout", {}).pop("video", None)
    if args.videos:
        from msc.video import write_video

        os.makedirs(args.videos, exist_ok=True)
        for name, video in videos.items():
            slug = name.replace(" ", "_").replace("=", "")
            write_video(os.path.join(args.videos, f"continuation_{slug}.mp4"), video[0], fps=8, scale=4, mark_from=settings.context)
        if rollout_video is not None:
            write_video(os.path.join(args.videos, f"rollout{settings.rollout}.mp4"), rollout_video[0], fps=8, scale=4,
                        mark_from=0)
    print(format_table(report))
    _write_json(report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
