"""Generate or extend a video from the command line: ``python -m msc.generate`` (DESIGN.md §6).

    python -m msc.generate --weights weights --frames 32 --out out.mp4
    python -m msc.generate --weights weights --input clip.mp4 --context 8 --frames 16 --out more.mp4

``--frames`` counts new frames; the written video is the context frames (the last ``--context``
frames of ``--input``) followed by the new ones.
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import torch  # noqa: E402

from msc.diffusion import SCHEDULES  # noqa: E402
from msc.model import AttentionWindows, MSCModel  # noqa: E402
from msc.sampling import FRAME_SCHEDULES, GUIDANCE_MODES, GUIDANCE_SCHEDULES, sample_video  # noqa: E402
from msc.video import VideoError, read_video, write_video  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default="weights", help="folder with config.json + model.safetensors (or a hub id)")
    p.add_argument("--frames", type=int, required=True, help="new frames to generate")
    p.add_argument("--out", required=True, help="output mp4")
    p.add_argument("--input", help="a video to extend (mp4, webm, mov, gif, avi)")
    p.add_argument("--context", type=int, default=8, help="frames of --input to condition on (its last ones)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=16, help="denoising steps per frame")
    p.add_argument("--chunk", type=int, default=4, help="frames denoised together (autoregressive)")
    p.add_argument("--schedule", default="autoregressive", choices=FRAME_SCHEDULES)
    p.add_argument("--ar-step", type=int, default=2, help="diffusion-forcing: steps between neighbouring frames")
    p.add_argument("--noise-schedule", default="cosine", choices=SCHEDULES)
    p.add_argument("--shift", type=float, default=3.0, help="shift of the 'shifted' noise schedule")
    p.add_argument("--context-noise", type=float, default=0.0, help="noise level given to context frames")
    p.add_argument("--eta", type=float, default=0.0, help="0: deterministic updates, up to 1: stochastic")
    p.add_argument("--history-guidance", type=float, default=1.0, metavar="W",
                   help="history guidance scale (1: off; >1 follows the context more, at one more forward per step)")
    p.add_argument("--guidance-mode", default="vanilla", choices=GUIDANCE_MODES,
                   help="vanilla: the history-free pass sees the history at noise 1; fractional: at --guidance-level")
    p.add_argument("--guidance-level", type=float, default=0.5, help="fractional guidance: the history's noise level")
    p.add_argument("--guidance-schedule", default="constant", choices=GUIDANCE_SCHEDULES,
                   help="constant: W at every level; linear: W at pure noise fading to 1 at clean")
    p.add_argument("--k-s", type=int, help="override the spatial window")
    p.add_argument("--k-t", type=int, help="override the High-Res temporal window")
    p.add_argument("--d", type=int, help="override the Low-Res temporal stride")
    p.add_argument("--k-lo", type=int, help="override the Low-Res temporal reach")
    p.add_argument("--fps", type=float, default=8.0)
    p.add_argument("--scale", type=int, default=4, help="enlarge pixels this many times in the mp4")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        model = MSCModel.from_pretrained(args.weights).eval()
        cfg = model.config
        w = cfg.windows
        windows = AttentionWindows(
            args.k_s or w.k_s, args.k_t or w.k_t, args.d or w.d, args.k_lo or w.k_lo
        )
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

        result = sample_video(
            model, context, args.frames, steps=args.steps, chunk=args.chunk, schedule=args.schedule,
            ar_step=args.ar_step, noise_schedule=args.noise_schedule, shift=args.shift,
            context_noise=args.context_noise, eta=args.eta, seed=args.seed, windows=windows, callback=progress,
            history_guidance=args.history_guidance, guidance_mode=args.guidance_mode,
            guidance_level=args.guidance_level, guidance_schedule=args.guidance_schedule,
        )
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
