"""What does the network add to its anchor? ``python -m bench.contribution --weights weights`` (a few minutes).

A model with a prior (:mod:`msc.diffusion`) predicts each frame as its anchor plus a residual that its network draws;
an untrained network (output 0) predicts the anchor. The card compares the sampled model with its anchor alone; this
bench looks one level down, at the one thing the sampler asks of the network: its prediction of the clean frames at a
noise level, in the sampler's situation (8 clean context frames, then 8 frames sharing one level, each anchored on the
last context frame at its horizon, as a chunk of 8 is). At each level it reports, per set, the PSNR of

* the **anchor** alone;
* the network's output taken as **zero** (EDM's skip connection alone, ``c_skip · (x_t − a)`` added to the anchor:
  what the noisy input itself tells at that level, with no learned prediction);
* the **model**'s prediction of the clean frames;

and the **share** of the zero-output error that the network removes (0: it adds nothing it did not read through the
noise). At level 1 the input holds no trace of the truth, so whatever the model gains there over its anchor it
predicted from the context: the sampler's first step. Both on the held-out sets (the card's) and on the same kinds
drawn from the training files: a network that gains nothing on either has learned no prediction, not one that
fails to generalise. Results: ``bench/results/contribution.md``.
"""

from __future__ import annotations

import argparse
import os
import platform

import torch

from bench import ROOT, write_results
from msc.data.mixture import MixedVideos, PreparedData
from msc.diffusion import Denoiser, frame_sigma, preconditioned_velocity
from msc.evaluate import held_out_set, load_model
from msc.metrics import psnr

CLIPS, CONTEXT, CHUNK = 16, 8, 8
LEVELS = (1.0, 0.5, 0.2, 0.05)
SETS = {"real": "video", "camera": "camera", "procedural": "procedural"}  # held-out set -> its kind in the training mix


def clips_of(name: str, split: str, data: PreparedData, count: int) -> torch.Tensor:
    """``[N, CONTEXT + CHUNK, 3, S, S]``: the held-out set ``name``, or the same kind drawn from the training files."""
    if split == "held-out":
        return held_out_set(name, count, CONTEXT + CHUNK, data.size, data)
    drawn = MixedVideos(data, frames=CONTEXT + CHUNK, mix={SETS[name]: 1.0})
    return torch.stack([drawn[i] for i in range(count)])


@torch.no_grad()
def predictions(model, clips: torch.Tensor, level: float, seed: int = 0) -> dict:
    """``{"anchor", "zero", "model"}`` -> ``[N, CHUNK, 3, S, S]`` predictions of the clips' last ``CHUNK`` frames from
    their first ``CONTEXT`` (clean) and the last ones noised to ``level`` around their anchors."""
    denoiser = Denoiser.around(model)
    context, truth = clips[:, :CONTEXT], clips[:, CONTEXT:]
    n = clips.shape[0]
    anchor = denoiser.anchors(context[:, -2], context[:, -1], list(range(1, CHUNK + 1)))  # [N, CHUNK, 3, S, S]
    anchored = torch.ones(n, CHUNK, dtype=torch.bool)
    noise = torch.randn(truth.shape, generator=torch.Generator().manual_seed(seed))
    t = torch.full((n, CHUNK), level)
    xt = denoiser.add_noise(truth, noise, t, anchor, anchored)  # [N, CHUNK, 3, S, S]
    everything = torch.cat([context, xt], 1)
    levels = torch.cat([torch.zeros(n, CONTEXT), t], 1)
    all_anchors = torch.cat([torch.zeros_like(context), anchor], 1)
    all_anchored = torch.cat([torch.zeros(n, CONTEXT, dtype=torch.bool), anchored], 1)
    v = denoiser(everything, levels, anchor=all_anchors, anchored=all_anchored)[:, CONTEXT:]
    sigma = frame_sigma(anchored, model.config.residual_std, model.config.frame_std)
    v_zero = preconditioned_velocity(torch.zeros_like(xt), xt, t, anchor, sigma, denoiser.noise_std(anchored))
    return {"anchor": anchor, "zero": xt - level * v_zero, "model": xt - level * v}


def measure(model, clips: torch.Tensor) -> list:
    """One row per level: the PSNR of each prediction and the share of the zero output's error the model removes."""
    truth = clips[:, CONTEXT:]
    rows = []
    for level in LEVELS:
        pred = predictions(model, clips, level)
        mse = {k: float((p.clamp(-1, 1) - truth).pow(2).mean()) for k, p in pred.items()}
        rows.append({"level": level, **{k: float(psnr(p.clamp(-1, 1), truth).mean()) for k, p in pred.items()},
                     "share": 1 - mse["model"] / mse["zero"] if mse["zero"] > 0 else 0.0})
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default=os.path.join(ROOT, "weights"), help="a weights folder of a model with a prior")
    p.add_argument("--data", default=os.path.join(ROOT, "data"), help="prepared data (python -m msc.data.prepare)")
    p.add_argument("--clips", type=int, default=CLIPS)
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "contribution"))
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = load_model(args.weights)
    if model.config.prior == "none" or model.config.actions:
        raise SystemExit("this bench measures a video model with an anchor (a prior, no actions).")
    data = PreparedData(args.data)
    report = {"weights": args.weights, "clips": args.clips, "context": CONTEXT, "chunk": CHUNK, "results": {}}
    lines = [f"`python -m bench.contribution --weights {os.path.relpath(args.weights, ROOT)}` on {platform.machine()}, "
             f"{os.cpu_count()} cores: {args.clips} clips a set, {CONTEXT} clean context frames, {CHUNK} frames at one "
             "noise level around their anchors; PSNR (dB) of the clean frames as each predicts them.", "",
             "| split | set | level | anchor | network output zero | model | share of the error removed |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for split in ("held-out", "train"):
        for name in SETS:
            rows = measure(model, clips_of(name, split, data, args.clips))
            report["results"][f"{split}/{name}"] = rows
            lines += [f"| {split} | {name} | {r['level']:g} | {r['anchor']:.2f} | {r['zero']:.2f} | {r['model']:.2f} | "
                      f"{100 * r['share']:.1f} % |" for r in rows]
    write_results(args.out, report, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
