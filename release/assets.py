"""The example clips in ``assets/``: ``python -m release.assets --weights weights --data data --out assets``.

* ``heldout_{i}.mp4``: held-out procedural clips (test seeds, never trained on);
* ``heldout_real_{i}.mp4``: windows of the held-out real video files (needs ``--data``, the folder
  of ``python -m msc.data.prepare``), never trained on;
* ``generated_{i}.mp4`` / ``generated_real_{i}.mp4``: the same clips' first 8 frames extended by the
  model (context without a border, generated frames with the magenta border), for the README;
* ``--from-nothing PATH``: a PNG sheet of videos sampled from nothing (one row per seed), for the card.

The ``heldout*`` clips are the app's examples.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from msc.data.mixture import PreparedData, held_out_procedural, held_out_real  # noqa: E402
from msc.video import write_video  # noqa: E402

FPS, SCALE, CONTEXT = 8, 4, 8


def write_clips(out: str, name: str, clips: torch.Tensor) -> list:
    """``clips`` ``[N, T, 3, S, S]`` -> ``out/{name}_{i}.mp4``."""
    os.makedirs(out, exist_ok=True)
    return [write_video(os.path.join(out, f"{name}_{i}.mp4"), clip, FPS, SCALE) for i, clip in enumerate(clips)]


def write_generated(out: str, name: str, model, clips: torch.Tensor, frames: int, settings=None) -> list:
    """Extend the first :data:`CONTEXT` frames of every clip by ``frames`` frames -> ``out/{name}_{i}.mp4``, at
    ``settings`` (a :class:`~msc.sampling.SamplerSettings`; ``None``: the library's defaults) with seed ``i`` for clip ``i``."""
    from msc.sampling import SamplerSettings, sample_video

    settings = settings or SamplerSettings()
    paths = []
    for i, clip in enumerate(clips):
        video = sample_video(model, clip[None, :CONTEXT], frames, replace(settings, seed=i)).video[0]
        paths.append(write_video(os.path.join(out, f"{name}_{i}.mp4"), video, FPS, SCALE, mark_from=CONTEXT))
    return paths


def write_contact_sheet(path: str, videos: list, every: int) -> str:
    """A PNG with one row per video ``[T, 3, S, S]`` in [-1, 1], every ``every``-th frame, pixels doubled."""
    from PIL import Image

    rows = [torch.cat(list(video[::every]), dim=2) for video in videos]  # each [3, S, n*S]
    sheet = ((torch.cat(rows, dim=1).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)  # [3, rows*S, n*S]
    sheet = sheet.repeat_interleave(2, 1).repeat_interleave(2, 2)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    Image.fromarray(sheet.permute(1, 2, 0).numpy()).save(path)
    return path


def write_from_nothing_sheet(path: str, model, seeds: int = 4, frames: int = 24, every: int = 3, settings=None) -> str:
    """A PNG contact sheet of videos sampled from nothing at ``settings`` (``None``: the defaults): one row per
    seed, every ``every``-th frame."""
    from msc.sampling import SamplerSettings, sample_video

    settings = settings or SamplerSettings()
    videos = [sample_video(model, None, frames, replace(settings, seed=seed)).video[0] for seed in range(seeds)]
    return write_contact_sheet(path, videos, every)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default="weights")
    p.add_argument("--data", help="the prepared data folder: adds held-out real clips")
    p.add_argument("--out", default="assets")
    p.add_argument("--count", type=int, default=4)
    p.add_argument("--frames", type=int, default=24, help="frames per held-out clip")
    p.add_argument("--generate", type=int, default=40, help="frames the model adds to 8 context frames")
    p.add_argument("--from-nothing", help="also write a PNG sheet of videos sampled from nothing here")
    args = p.parse_args(argv)
    from msc.model import MSCModel
    from msc.sampling import load_presets

    model = MSCModel.from_pretrained(args.weights).eval()
    settings = load_presets(os.path.abspath(args.weights))["default"]  # the weights' own default settings
    size = model.config.image_size
    sets = {"": held_out_procedural(args.count, args.frames, size)}
    if args.data:
        sets["_real"] = held_out_real(PreparedData(args.data), args.count, args.frames)
    for suffix, clips in sets.items():
        for path in write_clips(args.out, f"heldout{suffix}", clips):
            print(path)
        for path in write_generated(args.out, f"generated{suffix}", model, clips, args.generate, settings):
            print(path)
    if args.from_nothing:
        print(write_from_nothing_sheet(args.from_nothing, model, settings=settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
