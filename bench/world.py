"""Action following of a world model: ``python -m bench.world --weights FOLDER``.

Held-out episodes of :mod:`msc.world` (test seeds; over the prepared data's held-out photographs with ``--data``,
else procedural textures) under random actions: the model sees the first ``--context`` frames with their actions
and generates ``--frames`` more, three ways, each scored by PSNR against the engine's own rollout under the true
actions:

* ``true actions``: the actions the engine took;
* ``other actions``: a different random action sequence for the generated frames (the same context): a model
  that ignores its actions scores the same as with the true ones;
* ``copy-last``: the last context frame repeated.

The bar (the world-model issue): true actions at least 3 dB above other actions and above copy-last. With
``--json`` the table's numbers are written too.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

from msc.metrics import motion, psnr
from msc.model import MSCModel
from msc.sampling import SamplerSettings, sample_video
from msc.world import random_actions

ACTION_BAR_DB = 3.0


def held_out_episodes(count: int, frames: int, size: int, photos=()):
    """``(clips [N, T, 3, S, S], actions [N, T])`` of the held-out seeds."""
    from msc.world import WorldEpisodes

    episodes = WorldEpisodes(frames, size, photos, split="test")
    items = [episodes[i] for i in range(count)]
    return torch.stack([c for c, _ in items]), torch.stack([a for _, a in items])


def action_following(model, episodes: int = 32, context: int = 8, frames: int = 16, sampler: SamplerSettings = None,
                     photos=(), seed: int = 0) -> dict:
    """The scores of the module docstring."""
    sampler = sampler or SamplerSettings(steps=2, chunk=1)
    clips, actions = held_out_episodes(episodes, context + frames, model.config.image_size, photos)
    truth = clips[:, context:]
    g = torch.Generator().manual_seed(seed + 12345)
    other = actions.clone()
    other[:, context:] = torch.stack([random_actions(frames, g) for _ in range(episodes)])
    scores = {}
    start = time.time()
    for name, taken in (("true actions", actions), ("other actions", other)):
        video = sample_video(model, clips[:, :context], frames, sampler, batch=episodes, actions=taken).video[:, context:]
        scores[name] = {"psnr": float(psnr(video, truth).mean()), "psnr_per_frame": psnr(video, truth).mean(0).tolist(),
                        "motion_ratio": float(motion(video).mean() / motion(truth).mean())}
    seconds = time.time() - start
    frozen = clips[:, context - 1 : context].expand_as(truth)
    scores["copy-last"] = {"psnr": float(psnr(frozen, truth).mean()), "psnr_per_frame": psnr(frozen, truth).mean(0).tolist(),
                           "motion_ratio": 0.0}
    differs = float((other[:, context:] != actions[:, context:]).float().mean())
    gap_actions = scores["true actions"]["psnr"] - scores["other actions"]["psnr"]
    gap_frozen = scores["true actions"]["psnr"] - scores["copy-last"]["psnr"]
    return {"episodes": episodes, "context": context, "frames": frames, "sampler": {"steps": sampler.steps, "chunk": sampler.chunk},
            "scores": scores, "other_actions_differ": differs, "gap_other_actions_db": gap_actions, "gap_copy_last_db": gap_frozen,
            "met": gap_actions >= ACTION_BAR_DB and gap_frozen >= ACTION_BAR_DB, "seconds": seconds}


def format_table(report: dict) -> str:
    lines = [f"{report['episodes']} held-out episodes, {report['context']} context frames, {report['frames']} generated "
             f"({report['sampler']['steps']} steps, chunks of {report['sampler']['chunk']}); PSNR against the engine's rollout",
             "", "| generated with | PSNR (dB) | motion ratio |", "|---|---|---|"]
    for name, s in report["scores"].items():
        lines.append(f"| {name} | {s['psnr']:.2f} | {s['motion_ratio']:.2f} |")
    lines += ["", f"true actions - other actions: {report['gap_other_actions_db']:+.2f} dB; true actions - copy-last: "
              f"{report['gap_copy_last_db']:+.2f} dB (bar: both >= {ACTION_BAR_DB} dB: {'met' if report['met'] else 'not met'}); "
              f"{100 * report['other_actions_differ']:.0f} % of the other actions differ from the true ones"]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", required=True)
    p.add_argument("--data", help="the prepared data folder: episodes over its held-out photographs")
    p.add_argument("--episodes", type=int, default=32)
    p.add_argument("--context", type=int, default=8)
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--chunk", type=int, default=1)
    p.add_argument("--json")
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = MSCModel.from_pretrained(os.path.abspath(args.weights)).eval()
    if not model.config.actions:
        print(f"error: {args.weights} is not a world model (config.actions is 0).", file=sys.stderr)
        return 2
    photos = ()
    if args.data:
        from msc.data.mixture import PreparedData

        photos = PreparedData(args.data).photos("test")
    report = action_following(model, args.episodes, args.context, args.frames, SamplerSettings(steps=args.steps, chunk=args.chunk),
                              photos)
    print(format_table(report))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
