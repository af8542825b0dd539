"""Evaluate video continuation on held-out procedural clips: ``python -m msc.evaluate``.

    python -m msc.evaluate --weights weights --baseline dense=weights/dense_baseline --json eval.json

For ``--clips`` held-out clips (seeds the training never draws, :data:`msc.data.TEST_SEED_OFFSET`),
the model sees ``--context`` ground-truth frames and generates the next ``--horizon`` frames with the
chunk-by-chunk sampler (:func:`msc.sampling.sample_video`). Reported per horizon (1 = the first new
frame): PSNR and SSIM against the ground truth (:mod:`msc.metrics`), beside

* ``copy-last``: the last context frame repeated — the score of predicting no motion at all;
* ``--baseline``: any other weights folder, e.g. the dense-attention model of the same budget.

and a motion measure (mean absolute frame difference of the generated frames, with the ground
truth's beside it), which shows a model that freezes the scene.

Long-rollout stability: ``--rollout`` frames generated from the first clips' context; the mean and
standard deviation of each frame (on ``[0, 1]``), and those of the last 32 frames compared with the
statistics of the data (all frames of the held-out clips): a relative deviation above 25 % is
reported as divergence.

The same sampler settings are used for every model. A table goes to stdout, everything to ``--json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Dict, Optional, Sequence

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import torch  # noqa: E402

from msc.data import ProceduralVideos  # noqa: E402
from msc.metrics import motion, psnr, ssim, to_unit  # noqa: E402
from msc.model import MSCModel  # noqa: E402
from msc.sampling import sample_video  # noqa: E402

DRIFT_TOLERANCE = 0.25
STABILITY_WINDOW = 32


@dataclass
class EvalSettings:
    clips: int = 8
    context: int = 8
    horizon: int = 8
    steps: int = 16
    chunk: int = 4
    schedule: str = "autoregressive"
    noise_schedule: str = "cosine"
    context_noise: float = 0.0
    seed: int = 0
    rollout: int = 256
    rollout_clips: int = 2
    sampler: Dict = field(default_factory=dict)  # further sample_video keyword arguments

    def sampler_kwargs(self) -> dict:
        return dict(steps=self.steps, chunk=self.chunk, schedule=self.schedule, noise_schedule=self.noise_schedule,
                    context_noise=self.context_noise, seed=self.seed, **self.sampler)


def held_out_clips(count: int, frames: int, size: int) -> torch.Tensor:
    """``[N, T, 3, S, S]`` held-out procedural clips (test seeds)."""
    clips = ProceduralVideos(frames, size, split="test")
    return torch.stack([clips[i] for i in range(count)])


def copy_last(context: torch.Tensor, horizon: int) -> torch.Tensor:
    """The no-motion prediction: ``[N, K, C, H, W]`` -> ``[N, horizon, C, H, W]``."""
    return context[:, -1:].expand(-1, horizon, -1, -1, -1)


def continuation_scores(pred: torch.Tensor, truth: torch.Tensor) -> dict:
    """Per-horizon means over clips of PSNR / SSIM, and the motion of ``pred`` and ``truth``.
    ``pred`` / ``truth`` ``[N, M, C, H, W]``."""
    p, s = psnr(pred, truth), ssim(pred, truth)  # [N, M]
    return {
        "psnr": p.mean(0).tolist(),
        "ssim": s.mean(0).tolist(),
        "psnr_mean": float(p.mean()),
        "ssim_mean": float(s.mean()),
        "motion": float(motion(pred).mean()) if pred.shape[1] > 1 else 0.0,
        "motion_truth": float(motion(truth).mean()) if truth.shape[1] > 1 else 0.0,
    }


def generate_continuations(model, context: torch.Tensor, horizon: int, settings: EvalSettings) -> torch.Tensor:
    """``[N, K, C, H, W]`` context -> ``[N, horizon, C, H, W]`` generated frames (all clips in one batch)."""
    video = sample_video(model, context, horizon, **settings.sampler_kwargs()).video
    return video[:, context.shape[1]:]


def frame_statistics(video: torch.Tensor) -> tuple:
    """Per-frame mean and standard deviation on ``[0, 1]``: ``[..., T, C, H, W]`` -> two ``[..., T]``."""
    v = to_unit(video).flatten(-3)
    return v.mean(-1), v.std(-1)


def rollout_stability(model, context: torch.Tensor, frames: int, settings: EvalSettings, data: torch.Tensor) -> dict:
    """Generate ``frames`` frames after ``context`` and compare the last frames' statistics with ``data``'s."""
    start = time.time()
    video = sample_video(model, context, frames, **settings.sampler_kwargs()).video[:, context.shape[1]:]
    mean, std = frame_statistics(video)  # [N, T]
    data_mean, data_std = frame_statistics(data)
    tail = slice(-min(STABILITY_WINDOW, frames), None)
    m_tail, s_tail = float(mean[:, tail].mean()), float(std[:, tail].mean())
    m_data, s_data = float(data_mean.mean()), float(data_std.mean())
    rel_mean, rel_std = abs(m_tail - m_data) / m_data, abs(s_tail - s_data) / s_data
    return {
        "frames": frames,
        "clips": int(context.shape[0]),
        "frame_mean": mean.mean(0).tolist(),
        "frame_std": std.mean(0).tolist(),
        "last_mean": m_tail, "last_std": s_tail, "data_mean": m_data, "data_std": s_data,
        "relative_mean_drift": rel_mean, "relative_std_drift": rel_std,
        "stable": rel_mean <= DRIFT_TOLERANCE and rel_std <= DRIFT_TOLERANCE and bool(torch.isfinite(video).all()),
        "seconds": time.time() - start,
        "video": video,
    }


def evaluate(models: Dict[str, MSCModel], settings: EvalSettings, rollout_model: Optional[str] = None,
             guidance: Sequence[float] = (1.0,), guidance_mode: str = "vanilla") -> dict:
    """Scores of every model, of copy-last, and the rollout of ``rollout_model`` (default: the first).
    The first model is also sampled at every history-guidance scale in ``guidance`` (named
    ``"msc w=2"``; ``w = 1`` is the plain sampler)."""
    size = next(iter(models.values())).config.image_size
    clips = held_out_clips(settings.clips, settings.context + settings.horizon, size)
    context, truth = clips[:, : settings.context], clips[:, settings.context:]
    report = {"settings": asdict(settings), "methods": {}}
    report["methods"]["copy-last"] = continuation_scores(copy_last(context, settings.horizon), truth)
    runs = [(name, model, 1.0) for name, model in models.items()]
    first = next(iter(models))
    runs[1:1] = [(f"{first} w={w:g}", models[first], float(w)) for w in guidance if float(w) != 1.0]
    for name, model, w in runs:
        run_settings = replace(settings, sampler={**settings.sampler, "history_guidance": w, "guidance_mode": guidance_mode})
        start = time.time()
        generated = generate_continuations(model, context, settings.horizon, run_settings)
        report["methods"][name] = continuation_scores(generated, truth)
        report["methods"][name].update(seconds=time.time() - start, finite=bool(torch.isfinite(generated).all()),
                                       history_guidance=w)
        report.setdefault("videos", {})[name] = torch.cat([context, generated], dim=1)  # [N, K + M, C, H, W]
    if settings.rollout:
        name = rollout_model or next(iter(models))
        n = min(settings.rollout_clips, settings.clips)
        report["rollout"] = rollout_stability(models[name], context[:n], settings.rollout, settings, clips)
        report["rollout"]["model"] = name
    return report


def format_table(report: dict) -> str:
    """One row per method: PSNR per horizon, mean PSNR / SSIM, motion against the ground truth's."""
    methods = report["methods"]
    names = list(methods)
    horizon = len(methods[names[0]]["psnr"])
    width = max(len(n) for n in names)
    head = f"{'method':<{width}} | " + " ".join(f"{f'h={h + 1}':>6}" for h in range(horizon)) + " |   PSNR   SSIM | motion (truth)"
    lines = ["PSNR (dB) per horizon, then means over the horizon", head, "-" * len(head)]
    for n in names:
        m = methods[n]
        lines.append(f"{n:<{width}} | " + " ".join(f"{v:6.2f}" for v in m["psnr"])
                     + f" | {m['psnr_mean']:6.2f}  {m['ssim_mean']:.3f} | {m['motion']:.4f} ({m['motion_truth']:.4f})")
    if "rollout" in report:
        r = report["rollout"]
        lines.append(
            f"rollout ({r['model']}, {r['frames']} frames, {r['clips']} clips): last-{STABILITY_WINDOW} mean {r['last_mean']:.3f} "
            f"(data {r['data_mean']:.3f}, {100 * r['relative_mean_drift']:.1f} %), std {r['last_std']:.3f} "
            f"(data {r['data_std']:.3f}, {100 * r['relative_std_drift']:.1f} %): {'stable' if r['stable'] else 'DIVERGED'}"
        )
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default="weights", help="the model to evaluate (folder with config.json + model.safetensors)")
    p.add_argument("--baseline", action="append", default=[], metavar="[NAME=]FOLDER",
                   help="another model to score beside it, e.g. dense=weights/dense_baseline (repeatable)")
    d = EvalSettings()
    p.add_argument("--clips", type=int, default=d.clips)
    p.add_argument("--context", type=int, default=d.context)
    p.add_argument("--horizon", type=int, default=d.horizon)
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--chunk", type=int, default=d.chunk)
    p.add_argument("--schedule", default=d.schedule)
    p.add_argument("--noise-schedule", default=d.noise_schedule)
    p.add_argument("--context-noise", type=float, default=d.context_noise)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--rollout", type=int, default=d.rollout, help="long-rollout frames (0: skip)")
    p.add_argument("--rollout-clips", type=int, default=d.rollout_clips)
    p.add_argument("--guidance", type=float, nargs="+", default=[1.0], metavar="W",
                   help="history-guidance scales to sweep on the evaluated model, e.g. 1 1.5 2 3")
    p.add_argument("--guidance-mode", default="vanilla", choices=["vanilla", "fractional"])
    p.add_argument("--json", help="write the full report here")
    p.add_argument("--videos", help="write the first clip's context + continuation per model, and the rollout, as mp4 here")
    p.add_argument("--gates-plot", help="write the learned-gates heatmap (PNG) here")
    p.add_argument("--threads", type=int, default=0)
    return p.parse_args(argv)


def _load_models(args) -> Dict[str, MSCModel]:
    """The evaluated model (named by its attention, e.g. ``msc``) first, then the baselines."""
    model = MSCModel.from_pretrained(args.weights).eval()
    models = {model.config.attention: model}
    for spec in args.baseline:
        name, _, folder = spec.rpartition("=")
        baseline = MSCModel.from_pretrained(folder).eval()
        name = name or baseline.config.attention
        models[name if name not in models else f"{name}-{len(models)}"] = baseline
    return models


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = EvalSettings(args.clips, args.context, args.horizon, args.steps, args.chunk, args.schedule,
                            args.noise_schedule, args.context_noise, args.seed, args.rollout, args.rollout_clips)
    try:
        models = _load_models(args)
        report = evaluate(models, settings, guidance=args.guidance, guidance_mode=args.guidance_mode)
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
            write_video(os.path.join(args.videos, f"rollout{settings.rollout}.mp4"), rollout_video[0], fps=8, scale=4)
    print(format_table(report))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
