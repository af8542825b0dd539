"""Sampler benchmark: seconds per generated frame at growing video lengths, with and without the
KV cache, MSC vs the dense-attention baseline (randomly initialised `small` models: speed does not
depend on the weights).

    python -m bench.sampler            # the table in docs/implementation.md
    python -m bench.sampler --quick    # shorter videos

For each video length L the model first commits L - 4 context frames, then the timed part generates
the next 4 frames (one autoregressive chunk, --steps denoising steps): the cost of frame L. Peak
memory is the KV cache's size at frame L (the state that grows with the video; the model's
weights and activations do not depend on L). Ratios compare rows of this run.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from msc.model import KVCache, MSCModel, config_from_name
from msc.sampling import sample_video

CHUNK = 4
DENSE_MAX_LENGTH = 64  # the dense baseline is timed up to this length


def time_frame_at(model, length: int, steps: int, use_cache: bool):
    """Seconds per frame for the chunk ending at frame ``length``, and the cache's bytes."""
    torch.manual_seed(0)
    context = torch.rand(1, length - CHUNK, 3, 64, 64) * 2 - 1
    # the timed chunk's denoising calls: measure through the callback clock
    marks = []
    sample_video(model, context[:, :0], 1, steps=1)  # warm-up of caches and masks
    start = time.perf_counter()

    def mark(info):
        marks.append(time.perf_counter())

    sample_video(model, context, CHUNK, steps=steps, chunk=CHUNK, use_cache=use_cache, callback=mark)
    # the first call's clock also contains committing the context; use the denoising calls after it
    per_call = (marks[-1] - marks[0]) / max(1, len(marks) - 1)
    if not use_cache:
        return per_call * steps / CHUNK, None, time.perf_counter() - start
    cache = KVCache(model.config)
    with torch.no_grad():
        for s in range(0, length, 16):
            part = context[:, s : s + 16] if s < context.shape[1] else torch.zeros(1, 0, 3, 64, 64)
            if part.shape[1]:
                model(part, torch.zeros(part.shape[:2]), cache=cache, commit=True, keys_only=True)
    return per_call * steps / CHUNK, cache.memory_bytes() / 2**20, time.perf_counter() - start


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args(argv)
    lengths = [16, 64] if args.quick else [16, 64, 256]
    print(f"# {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}; `small` model, 64 × 64 px, "
          f"chunks of {CHUNK} frames, {args.steps} steps; seconds per generated frame at frame L")
    print("| model | cache | L = " + " | L = ".join(map(str, lengths)) + f" | frame {lengths[-1]} / frame {lengths[0]} | KV cache MB at L = " + " / ".join(map(str, lengths)) + " |")
    print("|---|---|" + "---|" * len(lengths) + "---|---|")
    for attention in ("msc", "dense"):
        model = MSCModel(config_from_name("small", attention=attention)).eval()
        for use_cache in (True, False):
            if not use_cache and attention == "dense":
                continue  # dense without a cache is quadratic: minutes per frame at 256
            secs, mbs = [], []
            for length in lengths:
                if attention == "dense" and length > DENSE_MAX_LENGTH:
                    break  # the dense cache holds every frame: committing 256 frames takes many minutes
                s, mb, _ = time_frame_at(model, length, args.steps, use_cache)
                secs.append(s)
                mbs.append(mb)
            pad = ["—"] * (len(lengths) - len(secs))
            memory = " / ".join([f"{m:.1f}" for m in mbs] + pad) if use_cache else "— (recomputes all frames)"
            print(f"| {attention} | {'yes' if use_cache else 'no'} | " + " | ".join([f"{s:.3f}" for s in secs] + pad)
                  + f" | {secs[-1] / secs[0]:.2f}× (frame {lengths[len(secs) - 1]}) | {memory} |", flush=True)


if __name__ == "__main__":
    main()
