"""Generate or extend a video from the command line: ``python -m msc.generate`` (docs/design.md §6).

    python -m msc.generate --weights weights --frames 32 --out out.mp4
    python -m msc.generate --weights weights --input clip.mp4 --context 8 --frames 16 --out more.mp4
    python -m msc.generate --preset real-time --frames 64 --out fast.mp4
    python -m msc.generate --settings-table      # every sampling setting, its flag and default

``--frames`` counts new frames; the written video is the context frames (the last ``--context``
frames of ``--input``) followed by the new ones.
"""

from __future__ import annotations

import argparse
import os
import sys

from msc.environment import go_offline, keep_freed_memory
from msc.model import MSCModel
from msc.sampling import add_settings_arguments, load_presets, sample_video, settings_from_args, settings_table
from msc.video import VideoError, read_video, write_video


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default="weights", help="folder with config.json + model.safetensors (or a hub id)")
    p.add_argument("--frames", type=int, help="new frames to generate (required)")
    p.add_argument("--out", help="output mp4 (required)")
    p.add_argument("--input", help="a video to extend (mp4, webm, mov, gif, avi)")
    p.add_argument("--context", type=int, default=8, help="frames of --input to condition on (its last ones)")
    add_settings_arguments(p)
    p.add_argument("--fps", type=float, default=8.0)
    p.add_argument("--scale", type=int, default=4, help="enlarge pixels this many times in the mp4")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--settings-table", action="store_true", help="print the sampling settings as a markdown table and exit")
    args = p.parse_args(argv)
    if not args.settings_table and (args.frames is None or args.out is None):
        p.error("--frames and --out are required")
    return args


def main(argv=None) -> int:
    go_offline()
    keep_freed_memory()
    args = parse_args(argv)
    if args.settings_table:
        print(settings_table())
        return 0
    try:
        model = MSCModel.from_pretrained(args.weights).eval()
        cfg = model.config
        settings = settings_from_args(args, cfg.windows, load_presets(args.weights if os.path.isdir(args.weights) else None))
        context = None
        if args.input:
            if args.context < 1:
                raise ValueError(f"--context must be at least 1 with --input, got {args.context}.")
            clip = read_video(args.input, size=cfg.image_size, fps=args.fps)
            context = clip[-args.context :][None]
        bar = None
        if not args.no_progress:
            from tqdm import tqdm

            bar = tqdm(total=args.frames, unit="frame", file=sys.stderr)

        def progress(info):
            if bar is not None:
                bar.n = info["finished"]
                bar.set_postfix(call=f"{info['call']}/{info['calls']}")
                bar.refresh()

        result = sample_video(model, context, args.frames, settings, callback=progress)
        if bar is not None:
            bar.close()
        write_video(args.out, result.video[0], fps=args.fps, scale=args.scale)
    except (ValueError, FileNotFoundError, VideoError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: {result.video.shape[1]} frames ({0 if context is None else context.shape[1]} context + {args.frames} new)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
