"""The example clips in ``assets/``: ``python -m msc.assets --weights weights --out assets``.

* ``heldout_{i}.mp4``: held-out procedural clips (test seeds, never trained on), the app's examples;
* ``generated_{i}.mp4``: the same clips' first frames extended by the model (context without a
  border, generated frames with the magenta border), for the README.
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from msc.data import ProceduralVideos  # noqa: E402
from msc.video import write_video  # noqa: E402

FPS, SCALE = 8, 4


def write_held_out(out: str, count: int, frames: int, size: int) -> list:
    os.makedirs(out, exist_ok=True)
    clips = ProceduralVideos(frames, size, split="test")
    return [write_video(os.path.join(out, f"heldout_{i}.mp4"), clips[i], FPS, SCALE) for i in range(count)]


def write_generated(out: str, model, count: int, context: int, frames: int, steps: int = 16) -> list:
    from msc.sampling import sample_video

    size = model.config.image_size
    paths = []
    for i in range(count):
        clip = ProceduralVideos(context, size, split="test")[i][None]
        video = sample_video(model, clip, frames, steps=steps, seed=i).video[0]
        paths.append(write_video(os.path.join(out, f"generated_{i}.mp4"), video, FPS, SCALE, mark_from=context))
    return paths


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default="weights")
    p.add_argument("--out", default="assets")
    p.add_argument("--count", type=int, default=3)
    p.add_argument("--frames", type=int, default=24, help="frames per held-out clip")
    p.add_argument("--generate", type=int, default=40, help="frames the model adds to 8 context frames")
    args = p.parse_args(argv)
    from msc.model import MSCModel

    model = MSCModel.from_pretrained(args.weights).eval()
    for path in write_held_out(args.out, args.count, args.frames, model.config.image_size):
        print(path)
    for path in write_generated(args.out, model, args.count, 8, args.generate):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
