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

``--rollout N`` (256 for the issue's bar): videos from nothing under random actions, ``N`` frames each, played as
the Play tab plays (:class:`msc.play.Player`, one frame per action): the colour drift of the last 32 frames
against the first 8 (bar ≤ 0.05), their sharpness against the first 8's (bar 0.8–1.25×), and whether they still
move (mean |Δframe| over the last 32 against the first 32's; bar ≥ half). ``--sheet PATH``: those videos as a
contact sheet (every 8th of the first 64 frames, then every 32nd), for the card. The same rollout from the first
``--context`` frames of held-out episodes is scored beside it (``from_context``): how a video holds up once it has a
world to continue, apart from the first frame it must draw from nothing. ``--rollout-seeds``: videos of each kind.
Beside each, the world itself (``engine``, :func:`engine_rollout`): the engine's own episodes on the same held-out
seeds under the same actions, scored the same way. The camera moves over a picture whose colours differ from place to
place and a camera pushed against the picture's edge stops, so the world itself fails the bar it sets a model (the first
2 held-out seeds over the prepared data's photographs, 256 frames from their first frame: colour drift 0.151, motion
kept 0.16; over 16 seeds, the worst video's drift 0.456, motion kept 0.60).

``--fvd N``: whether the videos from nothing look like the world at all (:func:`from_nothing_fvd`): the FVD of ``N``
of them against ``N`` held-out episodes, with the engine's own episodes and a still world beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace

import torch

from msc.diffusion import SCHEDULES
from msc.evaluate import COLOUR_TOLERANCE, MOTION_KEPT, STABILITY_WINDOW, colour_means
from msc.metrics import motion, psnr
from msc.model import MSCModel
from msc.sampling import SamplerSettings, sample_video
from msc.world import random_actions

ACTION_BAR_DB = 3.0
STILL = 1e-3  # mean |frame - previous frame| on [0, 1] under which a video counts as not moving
# the settings every world model is measured at unless told otherwise (as the Play tab plays: one frame per action, a
# few steps each; the first frame from nothing with more)
PLAYED = SamplerSettings(steps=2, chunk=1, first_frame_steps=16)


def held_out_episodes(count: int, frames: int, size: int, photos=()):
    """``(clips [N, T, 3, S, S], actions [N, T])`` of the held-out seeds."""
    from msc.world import WorldEpisodes

    episodes = WorldEpisodes(frames, size, photos, split="test")
    items = [episodes[i] for i in range(count)]
    return torch.stack([c for c, _ in items]), torch.stack([a for _, a in items])


def action_following(model, episodes: int = 32, context: int = 8, frames: int = 16, sampler: SamplerSettings = None,
                     photos=(), seed: int = 0) -> dict:
    """The scores of the module docstring."""
    sampler = sampler or PLAYED
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
    return {"episodes": episodes, "context": context, "frames": frames, "sampler": {"steps": sampler.steps, "chunk": sampler.chunk,
                                                                          "noise_schedule": sampler.noise_schedule, "shift": sampler.shift},
            "scores": scores, "other_actions_differ": differs, "gap_other_actions_db": gap_actions, "gap_copy_last_db": gap_frozen,
            "met": gap_actions >= ACTION_BAR_DB and gap_frozen >= ACTION_BAR_DB, "seconds": seconds}


def rollout_actions(seed: int, count: int) -> torch.Tensor:
    """``[count]`` long: the random actions the ``seed``-th long rollout plays (the model's and the engine's alike)."""
    return random_actions(count, torch.Generator().manual_seed(seed + 4242))


def rollout_scores(video: torch.Tensor) -> dict:
    """The long-rollout bar's measures of ``video`` ``[N, T, 3, S, S]``: the colour drift of the last 32 frames
    against the first 8, their sharpness against the first 8's, the motion over the last 32 frames against the first
    32's, and whether all three meet the bar."""
    from msc.metrics import sharpness

    first, last = video[:, :8], video[:, -STABILITY_WINDOW:]
    drift = float((colour_means(last) - colour_means(first)).abs().max())
    sharp = float(sharpness(last).mean()) / max(float(sharpness(first).mean()), 1e-8)
    early = float(motion(video[:, :STABILITY_WINDOW]).mean())
    moving = float(motion(last).mean()) / early if early > STILL else 0.0  # a still video from nothing does not move
    return {"colour_drift": drift, "sharpness_ratio": sharp, "motion_kept": moving,
            "met": drift <= COLOUR_TOLERANCE and 0.8 <= sharp <= 1.25 and moving >= MOTION_KEPT}


def long_rollout(model, frames: int = 256, seeds: int = 2, sampler: SamplerSettings = None, start: tuple = None) -> dict:
    """Videos from nothing under random actions, ``frames`` long (see the module docstring); ``videos`` ``[N, T, 3, S, S]``
    is returned for the sheet. ``start`` ``(clips [N, K, 3, S, S], actions [N, K])`` (``N`` ≥ ``seeds``): the videos
    continue those held-out frames instead (:func:`held_out_episodes`), scored against them the same way: the rollout
    alone, without the first frame a video from nothing must draw."""
    from msc.play import Player

    sampler = sampler or PLAYED
    videos = []
    began = time.time()
    for seed in range(seeds):
        if start is None:
            player = Player(model, None, None, replace(sampler, seed=seed))  # its first frame: from nothing, the no-op
        else:
            player = Player(model, start[0][seed : seed + 1], start[1][seed : seed + 1], replace(sampler, seed=seed))
        for action in rollout_actions(seed, frames - len(player.frames)).tolist():
            player.step(action)
        videos.append(player.video()[0].cpu())
    video = torch.stack(videos)  # [N, T, 3, S, S]
    return {"frames": frames, "seeds": seeds, **rollout_scores(video), "seconds": time.time() - began, "videos": video}


def engine_rollout(frames: int, seeds: int, size: int, photos=(), context: int = 1) -> dict:
    """The world itself under the long rollout's protocol: held-out episode ``i`` (:func:`held_out_episodes`) played by
    the engine, its first ``context`` frames under its own actions, then the actions the ``i``-th rollout plays
    (:func:`rollout_actions`), scored as a model's rollout is (:func:`rollout_scores`). What a model that drew the
    world exactly would score: the camera moves over a picture whose colours differ from place to place."""
    from msc.data.procedural import TEST_SEED_OFFSET
    from msc.world import World, episode

    videos = []
    for seed in range(seeds):
        _, own = episode(TEST_SEED_OFFSET + seed, context, size, photos)  # the held-out start's actions
        actions = own[1:].tolist() + rollout_actions(seed, frames - context).tolist()
        videos.append(World(TEST_SEED_OFFSET + seed, size, photos=photos).rollout(actions))
    return {"frames": frames, "seeds": seeds, **rollout_scores(torch.stack(videos))}


FVD_FRAMES = 16  # the usual FVD clip length


def from_nothing_fvd(model, count: int = 32, sampler: SamplerSettings = None, photos=(), seed: int = 0) -> dict:
    """Does a video from nothing look like the world? ``count`` videos of :data:`FVD_FRAMES` frames from nothing under
    random actions (one batch, the first frame drawn alone as the Play tab draws it) against as many held-out
    episodes: their FVD (:mod:`msc.fvd`), beside the FVD of as many other held-out episodes (the engine against itself:
    the floor at this count) and of copy-first (every episode's first frame held: a still world); and the generated
    first frames' sharpness against the episodes' (a mosaic of blocks or a smooth field is far from 1)."""
    from msc.fvd import FVD
    from msc.i3d import load_i3d
    from msc.metrics import sharpness

    sampler = sampler or PLAYED
    clips, _ = held_out_episodes(2 * count, FVD_FRAMES, model.config.image_size, photos)
    reference, engine = clips[:count], clips[count:]
    g = torch.Generator().manual_seed(seed + 777)
    actions = torch.stack([torch.cat([torch.zeros(1, dtype=torch.long), random_actions(FVD_FRAMES - 1, g)])
                           for _ in range(count)])  # [N, T]: the first frame's is the no-op
    start = time.time()
    video = sample_video(model, None, FVD_FRAMES, replace(sampler, seed=seed), batch=count, actions=actions).video
    seconds = time.time() - start
    fvd = FVD(load_i3d(), reference)
    still = engine[:, :1].expand_as(engine)
    return {"count": count, "frames": FVD_FRAMES, "fvd": fvd(video), "fvd_engine": fvd(engine), "fvd_copy_first": fvd(still),
            "first_frame_sharpness": float(sharpness(video[:, 0]).mean() / sharpness(reference[:, 0]).mean()),
            "seconds": seconds, "videos": video}


def write_rollout_sheet(path: str, videos: torch.Tensor) -> str:
    """The rollout videos as a contact sheet: every 8th of the first 64 frames, then every 32nd."""
    from release.assets import write_contact_sheet

    picked = list(range(0, min(64, videos.shape[1]), 8)) + list(range(64, videos.shape[1], 32))
    return write_contact_sheet(path, [v[picked] for v in videos], 1)


def format_table(report: dict) -> str:
    lines = [f"{report['episodes']} held-out episodes, {report['context']} context frames, {report['frames']} generated "
             f"({report['sampler']['steps']} steps, {report['sampler']['noise_schedule']} levels, chunks of "
             f"{report['sampler']['chunk']}); PSNR against the engine's rollout",
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
    p.add_argument("--steps", type=int, default=PLAYED.steps)
    p.add_argument("--chunk", type=int, default=PLAYED.chunk)
    p.add_argument("--noise-schedule", default=PLAYED.noise_schedule, choices=SCHEDULES)
    p.add_argument("--shift", type=float, default=PLAYED.shift, help="the shifted schedule's time shift")
    p.add_argument("--rollout", type=int, default=0, help="frames of the videos from nothing (0: none; the bar: 256)")
    p.add_argument("--rollout-seeds", type=int, default=2, help="with --rollout: videos of each kind")
    p.add_argument("--sheet", help="with --rollout: a contact sheet of those videos (PNG)")
    p.add_argument("--fvd", type=int, default=0, metavar="N",
                   help="FVD of N videos from nothing against N held-out episodes (needs python -m msc.i3d once; 0: none)")
    p.add_argument("--json")
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args(argv)
    if args.rollout_seeds < 1 or args.fvd == 1 or args.fvd < 0:
        p.error("--rollout-seeds must be at least 1, and --fvd 0 (none) or at least 2 videos (a Fréchet distance needs two).")
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
    sampler = replace(PLAYED, steps=args.steps, chunk=args.chunk, noise_schedule=args.noise_schedule, shift=args.shift)
    report = action_following(model, args.episodes, args.context, args.frames, sampler, photos)
    print(format_table(report))
    if args.rollout:
        rollout = long_rollout(model, args.rollout, args.rollout_seeds, sampler)
        videos = rollout.pop("videos")
        if args.sheet:
            rollout["sheet"] = write_rollout_sheet(args.sheet, videos)
        report["from_nothing"] = rollout
        starts = held_out_episodes(args.rollout_seeds, args.context, model.config.image_size, photos)
        report["from_context"] = from_context = long_rollout(model, args.rollout, args.rollout_seeds, sampler, starts)
        from_context.pop("videos")
        for name, r, context in (("from nothing", rollout, 1), (f"from {args.context} held-out frames", from_context,
                                                                 args.context)):
            r["engine"] = e = engine_rollout(args.rollout, args.rollout_seeds, model.config.image_size, photos, context)
            print(f"{name}, {args.rollout} frames under random actions ({r['seeds']} videos): colour drift "
                  f"{r['colour_drift']:.3f} (bar {COLOUR_TOLERANCE:g}), sharpness {r['sharpness_ratio']:.2f}x the first frames' "
                  f"(bar 0.8-1.25), motion kept {r['motion_kept']:.2f} (bar {MOTION_KEPT:g}): {'met' if r['met'] else 'not met'}; "
                  f"the world itself on the same seeds and actions: {e['colour_drift']:.3f}, {e['sharpness_ratio']:.2f}x, "
                  f"{e['motion_kept']:.2f}")
    if args.fvd:
        report["from_nothing_fvd"] = r = from_nothing_fvd(model, args.fvd, sampler, photos)
        r.pop("videos")
        print(f"from nothing, {r['count']} videos of {r['frames']} frames: FVD {r['fvd']:.0f} against held-out episodes "
              f"(other held-out episodes {r['fvd_engine']:.0f}, copy-first {r['fvd_copy_first']:.0f}); first frames' "
              f"sharpness {r['first_frame_sharpness']:.2f}x the episodes'")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
