"""Train an MSC (or dense-baseline) model: ``python -m msc.train``.

    python -m msc.train --config small --out runs/small --steps 20000            # procedural data
    python -m msc.train --config small --data data --out runs/mix                # real footage + photos + procedural
    python -m msc.train --config small --data /path/to/videos --out runs/mine    # your own videos
    python -m msc.train --out runs/small --resume                                # continue exactly
    torchrun --nproc_per_node 2 -m msc.train --config small --out runs/ddp       # data-parallel

AdamW with linear warm-up then cosine decay, gradient clipping, an EMA of the weights, a progress bar
with loss and throughput, a JSON-lines log, periodic checkpoints and sample videos. Everything a
step draws (clips, noise levels, noise) is a function of ``(seed, step, rank)``, so ``--resume``
continues the same loss curve and ``--batch-size`` is the global batch whatever the process count.
DDP runs on gloo on CPU and NCCL on GPUs; a CUDA GPU is used with bf16 autocast when present (``--bf16``: on the
CPU too).

Checkpoints are safetensors (model, EMA, optimizer state flattened to tensors) plus JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import sys
import time
from typing import Dict, Optional

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file

from msc.adversarial import FrameCritic, adaptive_weight, critic_loss, generator_loss, sampled_chunk
from msc.data import FolderVideos, ProceduralVideos
from msc.data.mixture import DEFAULT_MIX, MixedVideos, PreparedData
from msc.diffusion import FRAME_LOSSES, LEVEL_DISTRIBUTIONS, diffusion_loss, sampler_query_levels
from msc.environment import keep_freed_memory
from msc.model import CONFIGS, MSCModel, config_from_name
from msc.sampling import SamplerSettings, sample_video

_SAMPLER = SamplerSettings()  # the library's sampler: its noise schedule gives --sampler-level-steps' levels

OWN_CONTEXT_TRUE_FRAMES = 4  # --own-context-prob: the most true frames its rollouts start from


# --------------------------------------------------------------------------------------------------
# Optimizer state <-> safetensors (no pickle anywhere)
# --------------------------------------------------------------------------------------------------


def optimizer_to_tensors(optimizer: torch.optim.Optimizer, compact: bool = False):
    """Split an optimizer state dict into ``{name: tensor}`` and a JSON-able remainder. ``compact``
    stores the moment estimates in bfloat16 (half the bytes; a resume from it is close, not exact)."""
    state = optimizer.state_dict()
    tensors, meta = {}, {"param_groups": state["param_groups"], "state": {}}
    for pid, pstate in state["state"].items():
        meta["state"][str(pid)] = {}
        for key, value in pstate.items():
            if torch.is_tensor(value):
                shrink = compact and value.is_floating_point() and value.dim() > 0
                tensors[f"{pid}.{key}"] = (value.to(torch.bfloat16) if shrink else value).contiguous()
                meta["state"][str(pid)][key] = "tensor"
            else:
                meta["state"][str(pid)][key] = value
    return tensors, meta


def optimizer_from_tensors(optimizer: torch.optim.Optimizer, tensors: Dict[str, torch.Tensor], meta: dict) -> None:
    def restore(t: torch.Tensor) -> torch.Tensor:
        return t.float() if t.dtype == torch.bfloat16 else t

    state = {}
    for pid, pstate in meta["state"].items():
        state[int(pid)] = {k: (restore(tensors[f"{pid}.{k}"]) if v == "tensor" else v) for k, v in pstate.items()}
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------


def learning_rate(step: int, base: float, warmup: int, total: int, time_progress: float = 0.0) -> float:
    """Linear warm-up to ``base``, then cosine decay to 10 % of it at ``total`` steps, or earlier
    when ``time_progress`` (the fraction of a wall-time budget used) is further along."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = min(1.0, max((step - warmup) / max(1, total - warmup), time_progress))
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


@torch.no_grad()
def update_ema(ema: MSCModel, model: MSCModel, decay: float) -> None:
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p.detach(), 1 - decay)


def batch_for_step(dataset, step: int, global_batch: int, rank: int, world: int):
    """This rank's share of the global batch of ``step``: clips ``step * B + rank * B/world ...`` (a tuple of stacked
    tensors when the items are tuples, e.g. ``(clips, actions)``)."""
    local = global_batch // world
    first = step * global_batch + rank * local
    items = [dataset[(first + i) % len(dataset)] for i in range(local)]
    if isinstance(items[0], tuple):
        return tuple(torch.stack(parts) for parts in zip(*items))
    return torch.stack(items)


def save_weights(module: torch.nn.Module, path: str) -> None:
    """``module``'s state dict as one safetensors file."""
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, path)


def swap_in(tmp: str, folder: str) -> None:
    """Replace ``folder`` by the fully written ``tmp`` folder, atomically enough: a crash mid-save leaves the previous
    ``folder`` intact (a checkpoint's last step)."""
    old = folder + ".old"
    if os.path.isdir(folder):
        os.replace(folder, old)
    os.replace(tmp, folder)
    if os.path.isdir(old):
        for name in os.listdir(old):
            os.remove(os.path.join(old, name))
        os.rmdir(old)


class Checkpoint:
    """``out/checkpoint/``: model.safetensors, ema.safetensors, optimizer.safetensors, state.json; with ``--adversarial``
    also the critic and its optimizer (critic.safetensors, critic_optimizer.safetensors).

    ``compact`` checkpoints (``--keep-resumable``) store the optimizer's moments in bfloat16: a
    resumable copy small enough to keep in the repository."""

    def __init__(self, out: str, folder: str = "checkpoint", compact: bool = False):
        self.dir = os.path.join(out, folder) if folder else out
        self.compact = compact

    def exists(self) -> bool:
        return os.path.isfile(os.path.join(self.dir, "state.json"))

    def save(self, model, ema, optimizer, state: dict, critic=None) -> None:
        """``critic``: ``(FrameCritic, its optimizer)`` or ``None``."""
        tmp = self.dir + ".tmp"
        os.makedirs(tmp, exist_ok=True)
        save_weights(model, os.path.join(tmp, "model.safetensors"))
        save_weights(ema, os.path.join(tmp, "ema.safetensors"))
        tensors, meta = optimizer_to_tensors(optimizer, self.compact)
        save_file(tensors, os.path.join(tmp, "optimizer.safetensors"))
        extra = {}
        if critic is not None:
            save_weights(critic[0], os.path.join(tmp, "critic.safetensors"))
            tensors, extra["critic_optimizer"] = optimizer_to_tensors(critic[1], self.compact)
            save_file(tensors, os.path.join(tmp, "critic_optimizer.safetensors"))
        with open(os.path.join(tmp, "state.json"), "w") as f:
            json.dump({**state, "optimizer": meta, **extra, "config": model.config.to_dict()}, f)
        swap_in(tmp, self.dir)

    def load(self, model, ema, optimizer, critic=None) -> dict:
        """Restores what :meth:`save` wrote; the ``critic`` ``(FrameCritic, its optimizer)`` where the checkpoint has
        one (a run that turns ``--adversarial`` on starts its critic fresh)."""
        with open(os.path.join(self.dir, "state.json")) as f:
            state = json.load(f)
        model.load_state_dict(load_file(os.path.join(self.dir, "model.safetensors")))
        ema.load_state_dict(load_file(os.path.join(self.dir, "ema.safetensors")))
        optimizer_from_tensors(optimizer, load_file(os.path.join(self.dir, "optimizer.safetensors")), state.pop("optimizer"))
        critic_meta = state.pop("critic_optimizer", None)
        if critic is not None and critic_meta is not None:
            critic[0].load_state_dict(load_file(os.path.join(self.dir, "critic.safetensors")))
            optimizer_from_tensors(critic[1], load_file(os.path.join(self.dir, "critic_optimizer.safetensors")), critic_meta)
        return state


def export_checkpoint(out: str, dest: str, weights: str = "ema") -> str:
    """Write the ``weights`` ("ema" or "model") of ``out/checkpoint`` as a weights folder
    (config.json + model.safetensors), e.g. to try a run that is still training."""
    ckpt = Checkpoint(out)
    if not ckpt.exists():
        raise FileNotFoundError(f"no checkpoint in {ckpt.dir}.")
    with open(os.path.join(ckpt.dir, "state.json")) as f:
        config = json.load(f)["config"]
    model = MSCModel(config)
    model.load_state_dict(load_file(os.path.join(ckpt.dir, f"{weights}.safetensors")))
    model.save_pretrained(dest)
    return dest


def initial_weights(folder: str) -> Dict[str, torch.Tensor]:
    """The weights a fine-tune starts from: a checkpoint folder's EMA (``ema.safetensors``), or a
    weights folder's ``model.safetensors``."""
    for name in ("ema.safetensors", "model.safetensors"):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return load_file(path)
    raise FileNotFoundError(f"--init-from: no ema.safetensors or model.safetensors in {folder}.")


def load_initial_weights(model: MSCModel, weights: Dict[str, torch.Tensor]) -> None:
    """``weights`` into ``model`` exactly, except the parameters of ``MSCModel.OPTIONAL_PARAMETERS`` that ``model``'s
    config adds and ``weights`` lack (e.g. ``--set action_keep_mask=true`` on a model trained without it), which keep
    their initial values: a new part of a model starts where a new model would."""
    missing, unexpected = model.load_state_dict(weights, strict=False)
    wrong = [k for k in missing if k not in MSCModel.OPTIONAL_PARAMETERS] + list(unexpected)
    if wrong:
        raise ValueError(f"--init-from: the weights do not fit this model's config (missing or unexpected: {wrong}).")


# --------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------


def add_context_options(p: argparse.ArgumentParser) -> None:
    """The options of what the model sees as context in training: the stand-ins for its own generated frames (noise,
    blur, its own rollouts), clips from nothing, and how frames are weighted."""
    p.add_argument("--context-corruption", type=float, default=0.0, metavar="MAX_STD",
                   help="with the previous_frame prior: Gaussian noise (std drawn per clip in [0, MAX_STD]) on the nearly "
                        "clean prefix frames, which then serve as context and anchors and are not scored (the errors of "
                        "generated frames in long rollouts); 0 disables")
    p.add_argument("--context-blur", type=float, default=0.0, metavar="MAX_SIGMA",
                   help="with a prior: the nearly clean prefix frames are also blurred first (a Gaussian of standard "
                        "deviation drawn per clip in [0, MAX_SIGMA] pixels), the detail generated frames lose, and not "
                        "scored; 0 disables")
    p.add_argument("--from-nothing-prob", type=float, default=0.0,
                   help="with the previous_frame prior: fraction of clips trained as videos from nothing (no clean prefix, "
                        "no anchors: every frame draws a whole picture), where otherwise only the frames before the first "
                        "chunk cut do")
    p.add_argument("--frame-loss", default="mse", choices=FRAME_LOSSES,
                   help="how each frame's error counts: its mean squared error, or its logarithm (every frame's relative "
                        "error alike, as mean PSNR counts it)")
    p.add_argument("--shared-level-prob", type=float, default=0.0,
                   help="fraction of clips whose frames after the clean prefix share one noise level, as the chunk-by-chunk "
                        "sampler denoises a chunk together (the others: an independent level per frame, Diffusion Forcing)")
    p.add_argument("--sampler-level-prob", type=float, default=0.0, metavar="P",
                   help="fraction of the frames after the clean prefix trained at the levels a sampler of "
                        "--sampler-level-steps steps runs the network at, which a continuous draw almost never hits; the "
                        "others keep --level-distribution")
    p.add_argument("--sampler-level-steps", type=int, default=2, metavar="N",
                   help="those levels: the noise schedule of the library's sampler in N steps (2 cosine steps: 1 and 0.5)")
    p.add_argument("--anchor-error-weight", type=float, default=0.0, metavar="STRENGTH",
                   help="with an anchored prior: weight each pixel's error by 1 + STRENGTH x the anchor's error there / its "
                        "frame's mean (normalised per frame), so training goes where the anchor is wrong; 0 disables")
    p.add_argument("--own-context-prob", type=float, default=0.0,
                   help="with a prior: fraction of steps whose clips continue the model's own frames (1..4 true frames, "
                        "then up to --own-context-frames the model generates from them, the context of every clip), "
                        "towards the truth (scheduled sampling / Self Forcing: trained on the errors it makes); 0 disables")
    p.add_argument("--own-context-frames", type=int, default=4,
                   help="the most frames the model generates for --own-context-prob (at least 1)")
    p.add_argument("--own-context-steps", type=int, default=2,
                   help="denoising steps per frame of those generated frames (one frame at a time, as live play samples)")
    p.add_argument("--first-frame-prob", type=float, default=0.0,
                   help="with a prior: fraction of steps that train every frame of the batch as the first frame of a "
                        "video from nothing (each frame a clip of its own, the no-op action): B x T pictures drawn from "
                        "noise where a video step has about one per clip; 0 disables")


def add_adversarial_options(p: argparse.ArgumentParser) -> None:
    """The options of the adversarial term on the sampler's output (:mod:`msc.adversarial`)."""
    p.add_argument("--adversarial", type=float, default=0.0, metavar="WEIGHT",
                   help="with a prior: add a critic's hinge loss on chunks the sampler draws after the clip's frames, "
                        "its gradient at the network's last layer WEIGHT x the diffusion loss's (msc.adversarial); 0 "
                        "disables")
    p.add_argument("--adversarial-chunk", type=int, default=1,
                   help="frames of each chunk the adversarial term samples (the sampler's chunk: 1 for live play)")
    p.add_argument("--adversarial-steps", type=int, default=2, help="denoising steps of those chunks (cosine schedule)")
    p.add_argument("--adversarial-rollout", type=int, default=0, metavar="FRAMES",
                   help="before each adversarial chunk the model continues the true frames by up to FRAMES of its own "
                        "(whole chunks, no gradient): the critic judges what a rollout draws, not only its first chunk")
    p.add_argument("--adversarial-from-nothing", type=float, default=0.0, metavar="PROB",
                   help="fraction of the adversarial draws that are instead the first frame of a video from nothing, "
                        "drawn alone in --adversarial-first-steps steps as the sampler draws it and judged beside a "
                        "blank frame; 0 disables")
    p.add_argument("--adversarial-first-steps", type=int, default=16,
                   help="denoising steps of those first frames (a world model's Play tab draws its first frame in 16)")
    p.add_argument("--adversarial-warmup", type=int, default=0, metavar="STEPS",
                   help="the generator's term ramps up linearly over the run's first STEPS steps while the critic, trained "
                        "from the first, learns to tell (a fresh critic's gradient is noise); 0: at full weight at once")
    p.add_argument("--critic-lr", type=float, default=2e-4, help="the critic's learning rate (Adam, betas 0, 0.99)")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="small", choices=sorted(CONFIGS), help="model size from the registry")
    p.add_argument("--attention", default="msc", choices=["msc", "dense"], help="dense = the frame-causal baseline")
    p.add_argument("--data", default="procedural",
                   help="'procedural', a folder made by 'python -m msc.data.prepare' (the mixture), a folder of videos, or "
                        "'world' / 'world:FOLDER' (episodes of msc.world under random actions, over FOLDER's training "
                        "photographs; the model needs --set actions=5)")
    p.add_argument("--mix", nargs="*", default=[], metavar="KIND=WEIGHT",
                   help=f"mixture weights with prepared data, default {' '.join(f'{k}={v}' for k, v in DEFAULT_MIX.items())}")
    p.add_argument("--level-distribution", default="uniform", choices=LEVEL_DISTRIBUTIONS,
                   help="how training draws per-frame noise levels")
    p.add_argument("--max-chunk", type=int, default=4,
                   help="with the previous_frame prior: training anchors follow chunks of 1..N frames")
    p.add_argument("--out", required=True, help="run folder: checkpoint/, log.jsonl, samples/, final weights")
    p.add_argument("--frames", type=int, default=16, help="frames per training clip")
    p.add_argument("--batch-size", type=int, default=4, help="global batch (split across processes)")
    p.add_argument("--steps", type=int, default=10000)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--clip", type=float, default=1.0, help="gradient-norm clipping")
    p.add_argument("--ema", type=float, default=0.999, help="EMA decay (0 disables)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ckpt-every", type=int, default=200)
    p.add_argument("--sample-every", type=int, default=0, help="write a sample video every N steps (0: only at the end)")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--max-minutes", type=float, default=0, help="stop (with a checkpoint) after this wall time")
    p.add_argument("--budget-minutes", type=float, default=0,
                   help="a wall-time training budget: the learning rate decays over it (or over --steps, whichever "
                        "comes first) and training ends with the final weights when it is used up; counts across --resume")
    p.add_argument("--clean-prefix-prob", type=float, default=0.25,
                   help="fraction of clips whose first frames are nearly clean (the autoregressive situation)")
    add_context_options(p)
    add_adversarial_options(p)
    p.add_argument("--init-from", metavar="FOLDER",
                   help="fine-tune: start from these weights (a weights folder, or a checkpoint folder's EMA) with a "
                        "fresh optimizer and schedule; --config / --set may change settings that keep the shapes")
    p.add_argument("--resume", action="store_true", help="continue from out/checkpoint exactly")
    p.add_argument("--resume-from", metavar="FOLDER",
                   help="start from this checkpoint folder when out/checkpoint does not exist yet (e.g. the compact copy "
                        "kept by --keep-resumable on another machine), then continue as --resume")
    p.add_argument("--keep-resumable", metavar="FOLDER",
                   help="also keep a compact resumable checkpoint here at every checkpoint (e.g. inside the repository)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--autoencoder", metavar="FOLDER",
                   help="diffusion on the latents of this frame autoencoder (python -m msc.autoencoder): the model's channels "
                        "and frame size are the latents'; the autoencoder is saved with the final weights")
    p.add_argument("--bf16", action="store_true",
                   help="bf16 autocast on the CPU too (on a CUDA GPU it is always on): matmuls at bf16's rate, weights, "
                        "optimizer and loss in float32")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override config fields, e.g. depth=4")
    p.add_argument("--export", metavar="FOLDER", help="only write the EMA weights of out/checkpoint to FOLDER, then exit")
    return p.parse_args(argv)


def _overrides(pairs):
    """``["depth=4", "upsample=bilinear"]`` -> ``{"depth": 4, "upsample": "bilinear"}`` (values as JSON when they parse)."""
    out = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def make_dataset(args, size: int):
    """The training clips named by ``--data`` (and ``--mix``). ``world`` (or ``world:FOLDER`` over the prepared data's
    training photographs): episodes of :mod:`msc.world` under random actions, items ``(clip, actions)``."""
    if args.data == "procedural":
        return ProceduralVideos(args.frames, size)
    if args.data == "world" or args.data.startswith("world:"):
        from msc.world import WorldEpisodes

        photos = PreparedData(args.data.split(":", 1)[1]).photos("train") if ":" in args.data else ()
        return WorldEpisodes(args.frames, size, photos)
    if PreparedData.is_prepared(args.data):
        data = PreparedData(args.data)
        if data.size != size:
            raise ValueError(f"{args.data} holds {data.size}-pixel frames; the model needs {size}.")
        mix = {k: float(v) for k, v in _overrides(args.mix).items()} or None
        return MixedVideos(data, args.frames, mix)
    return FolderVideos(args.data, args.frames, size)


def write_sample(model: MSCModel, path: str, step: int, frames: int) -> None:
    """Extend a held-out clip with the sampler and write context + generated frames as mp4."""
    from msc.sampling import sample_video
    from msc.video import write_video

    context = ProceduralVideos(frames=4, size=model.config.image_size, split="test")[step % 997][None]
    video = sample_video(model, context, frames, seed=step).video  # the default sampler settings
    write_video(path, video[0], fps=8, scale=max(1, 256 // model.config.image_size))


def check_recipe(args, config) -> None:
    """``ValueError`` for training options that contradict each other or the model's config."""
    if not args.context_corruption >= 0:
        raise ValueError(f"--context-corruption must be a standard deviation >= 0, got {args.context_corruption}.")
    if args.context_corruption and config.prior == "none":
        raise ValueError("--context-corruption needs the previous_frame prior (--set prior=previous_frame).")
    if not 0 <= args.from_nothing_prob <= 1:
        raise ValueError(f"--from-nothing-prob must be a probability in [0, 1], got {args.from_nothing_prob}.")
    if not args.context_blur >= 0:
        raise ValueError(f"--context-blur must be a blur in pixels >= 0, got {args.context_blur}.")
    if args.context_blur and config.prior == "none":
        raise ValueError("--context-blur needs a prior with anchors (--set prior=...).")
    if not args.anchor_error_weight >= 0:
        raise ValueError(f"--anchor-error-weight must be >= 0, got {args.anchor_error_weight}.")
    if args.anchor_error_weight and config.prior == "none":
        raise ValueError("--anchor-error-weight weights by the anchor's error: it needs a prior with anchors (--set prior=...).")
    if not 0 <= args.sampler_level_prob <= 1:
        raise ValueError(f"--sampler-level-prob must be a probability in [0, 1], got {args.sampler_level_prob}.")
    if args.sampler_level_steps < 1:
        raise ValueError(f"--sampler-level-steps must be at least 1, got {args.sampler_level_steps}.")
    if not 0 <= args.shared_level_prob <= 1:
        raise ValueError(f"--shared-level-prob must be a probability in [0, 1], got {args.shared_level_prob}.")
    if not 0 <= args.own_context_prob <= 1:
        raise ValueError(f"--own-context-prob must be a probability in [0, 1], got {args.own_context_prob}.")
    if args.own_context_prob and config.prior == "none":
        raise ValueError("--own-context-prob continues from the model's own frames through their anchors: it needs a "
                         "prior (--set prior=...).")
    if args.own_context_prob and not 1 <= args.own_context_frames <= args.frames - OWN_CONTEXT_TRUE_FRAMES - 1:
        raise ValueError(f"--own-context-frames must be in 1..{args.frames - OWN_CONTEXT_TRUE_FRAMES - 1} (--frames "
                         f"{args.frames} less up to {OWN_CONTEXT_TRUE_FRAMES} true frames and one frame to learn), got "
                         f"{args.own_context_frames}.")
    if not 0 <= args.first_frame_prob <= 1:
        raise ValueError(f"--first-frame-prob must be a probability in [0, 1], got {args.first_frame_prob}.")
    if args.first_frame_prob and config.prior == "none":
        raise ValueError("--first-frame-prob trains frames without an anchor: without a prior every frame is one already.")
    if args.own_context_prob and args.own_context_steps < 1:
        raise ValueError(f"--own-context-steps must be at least 1, got {args.own_context_steps}.")
    if not args.adversarial >= 0:
        raise ValueError(f"--adversarial must be a weight >= 0, got {args.adversarial}.")
    if args.adversarial and config.prior == "none":
        raise ValueError("--adversarial continues a true context through its anchors: it needs a prior (--set prior=...).")
    if args.adversarial and not (args.adversarial_chunk >= 1 and args.adversarial_rollout >= 0
                                 and args.adversarial_chunk + args.adversarial_rollout <= args.frames - 2):
        raise ValueError(f"--adversarial-chunk (at least 1) and --adversarial-rollout (at least 0) must add up to at most "
                         f"{args.frames - 2} (two context frames before them), got {args.adversarial_chunk} and "
                         f"{args.adversarial_rollout}.")
    if not 0 <= args.adversarial_from_nothing <= 1:
        raise ValueError(f"--adversarial-from-nothing must be a probability in [0, 1], got {args.adversarial_from_nothing}.")
    if args.adversarial and args.adversarial_from_nothing and args.adversarial_first_steps < 1:
        raise ValueError(f"--adversarial-first-steps must be at least 1, got {args.adversarial_first_steps}.")
    if args.adversarial_warmup < 0:
        raise ValueError(f"--adversarial-warmup must be a number of steps >= 0, got {args.adversarial_warmup}.")
    if args.adversarial and args.adversarial_steps < 1:
        raise ValueError(f"--adversarial-steps must be at least 1, got {args.adversarial_steps}.")
    if args.from_nothing_prob and config.prior == "none":
        raise ValueError("--from-nothing-prob needs the previous_frame prior (--set prior=previous_frame); without it every "
                         "frame draws from nothing already.")


def make_optimizer(model, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW with weight decay on the matrices only (not on biases, norms or embeddings' vectors)."""
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr, betas=(0.9, 0.99),
    )


def restore(args, model, ema, optimizer, critic=None):
    """``(checkpoint, kept, source, step, elapsed)``: the run's checkpoint, its compact kept copy (or ``None``), the one
    the run starts from, and where it stands; the weights are loaded from ``--resume`` / ``--resume-from`` (exactly,
    optimizer included) or ``--init-from`` (weights only). Sets ``args.resume`` when the run continues."""
    ckpt = Checkpoint(args.out)
    kept = Checkpoint(args.keep_resumable, folder="", compact=True) if args.keep_resumable else None
    start_step, elapsed_before = 0, 0.0
    source = ckpt
    if args.resume_from:  # the run's own checkpoint, when it has one, is newer than the kept copy
        source = ckpt if ckpt.exists() else Checkpoint(args.resume_from, folder="")
        args.resume = True
    if args.init_from and ckpt.exists():  # an interrupted fine-tune continues from its own checkpoint
        args.resume = True
    if args.resume:
        if not source.exists():
            raise FileNotFoundError(f"--resume: no checkpoint in {source.dir}.")
        state = source.load(model, ema, optimizer, critic)
        start_step, elapsed_before = state["step"], state.get("elapsed", 0.0)
    elif args.init_from:
        weights = initial_weights(args.init_from)
        for net in (model, ema):
            load_initial_weights(net, weights)
    return ckpt, kept, source, start_step, elapsed_before


def write_log(path: str, step: int, losses: list, args, lr: float, grad_norm, rate: float, elapsed: float,
              measures: Optional[dict] = None) -> None:
    """One line of the run's ``log.jsonl``: the step's loss and the mean of the last ``--log-every``, the rate, and the
    step's other ``measures`` (the adversarial term's)."""
    recent = losses[-args.log_every:]
    record = dict(step=step, loss=losses[-1], loss_avg=sum(recent) / len(recent), lr=lr, grad_norm=float(grad_norm),
                  steps_per_s=rate, clips_per_s=rate * args.batch_size, elapsed=elapsed, **(measures or {}))
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def model_config(args, device):
    """``(autoencoder or None, config)``: the model's config from ``--config`` / ``--attention`` / ``--set``; with
    ``--autoencoder`` (frozen, on ``device``) the transformer works on its latents, so their channels and size."""
    autoencoder, latent = None, {}
    if args.autoencoder:
        from msc.autoencoder import FrameAutoencoder

        autoencoder = FrameAutoencoder.from_pretrained(os.path.abspath(args.autoencoder)).eval().requires_grad_(False).to(device)
        frame_size = config_from_name(args.config).image_size
        channels, size, _ = autoencoder.latent_shape(frame_size)
        latent = {"channels": channels, "image_size": size}
    config = config_from_name(args.config, attention=args.attention, **{**latent, **_overrides(args.set)})
    return autoencoder, config


def open_log(args, rank: int, ckpt, source) -> str:
    """The run's ``log.jsonl`` path: a fresh run starts it empty; a run resumed from a kept copy on a new machine
    continues the kept copy's history."""
    os.makedirs(args.out, exist_ok=True)
    log_path = os.path.join(args.out, "log.jsonl")
    if rank == 0 and not args.resume and os.path.exists(log_path):
        os.remove(log_path)
    kept_log = os.path.join(source.dir, "log.jsonl")
    if rank == 0 and source is not ckpt and os.path.isfile(kept_log) and not os.path.exists(log_path):
        shutil.copyfile(kept_log, log_path)
    return log_path


def training_batch(dataset, step: int, batch_size: int, rank: int, world: int, device, autoencoder):
    """``(clips [B, T, C, H, W], actions [B, T] or None)`` of ``step`` on ``device`` (:func:`batch_for_step`); with an
    autoencoder, the clips' latents."""
    clips, actions = batch_for_step(dataset, step, batch_size, rank, world), None
    if isinstance(clips, tuple):  # world episodes: the action that led to each frame
        clips, actions = clips[0], clips[1].to(device)
    clips = clips.to(device)
    if autoencoder is not None:
        with torch.no_grad():
            clips = autoencoder.encode(clips)  # [B, T, C, h, w] latents
    return clips, actions


@torch.no_grad()
def own_rollout(args, model: MSCModel, clips: torch.Tensor, actions, step: int, rank: int) -> Optional[torch.Tensor]:
    """For a fraction ``--own-context-prob`` of the steps, the context the model would have made itself: the first
    ``k`` (1..:data:`OWN_CONTEXT_TRUE_FRAMES`) true frames of ``clips`` ``[B, T, C, H, W]``, then ``r``
    (1..``--own-context-frames``) frames the model generates after them with the clips' own actions, one frame at a
    time as live play does -> ``[B, k + r, C, H, W]`` (:func:`msc.diffusion.diffusion_loss`'s ``own_context``); ``None``
    for the other steps. Its random numbers come from their own generator: the steps without it are unchanged."""
    if not args.own_context_prob:
        return None
    gen = torch.Generator().manual_seed(args.seed * 1_000_033 + step * 2017 + rank)
    if float(torch.rand((), generator=gen)) >= args.own_context_prob:
        return None
    k = int(torch.randint(1, OWN_CONTEXT_TRUE_FRAMES + 1, (), generator=gen))
    r = int(torch.randint(1, args.own_context_frames + 1, (), generator=gen))
    settings = SamplerSettings(steps=args.own_context_steps, chunk=1, seed=int(torch.randint(0, 2**31, (), generator=gen)))
    was_training = model.training
    model.eval()
    try:
        video = sample_video(model, clips[:, :k], r, settings, batch=clips.shape[0],
                             actions=None if actions is None else actions[:, : k + r]).video  # [B, k + r, C, H, W]
    finally:
        model.train(was_training)
    return torch.cat([clips[:, :k], video[:, k:].to(clips.device, clips.dtype)], dim=1)


def first_frames(args, clips: torch.Tensor, actions, step: int, rank: int):
    """For a fraction ``--first-frame-prob`` of the steps, every frame of ``clips`` ``[B, T, C, H, W]`` as a clip of its
    own, ``[B*T, 1, C, H, W]``, with the no-op action (a video from nothing starts with it), to be trained from nothing:
    ``(clips, actions, True)``; else the batch as it is, ``(clips, actions, False)``. A video from nothing must first draw
    a whole picture from noise, which a video step trains on about one frame per clip (the frames before the first chunk
    cut); these steps train on all of them. Its random numbers come from their own generator."""
    if not args.first_frame_prob:
        return clips, actions, False
    gen = torch.Generator().manual_seed(args.seed * 1_000_037 + step * 3001 + rank)
    if float(torch.rand((), generator=gen)) >= args.first_frame_prob:
        return clips, actions, False
    pictures = clips.flatten(0, 1)[:, None]  # [B*T, 1, C, H, W]
    return pictures, None if actions is None else torch.zeros_like(actions.flatten(0, 1)[:, None]), True


def optimisation_step(args, net, model, ema, optimizer, clips, actions, step: int, rank: int, autocast, critic=None):
    """One step on ``clips`` ``[B, T, C, H, W]`` (``actions`` ``[B, T]`` or ``None``): the diffusion loss
    (:func:`msc.diffusion.diffusion_loss`, its noise drawn from the step and rank), with ``critic`` ``(FrameCritic, its
    optimizer)`` the adversarial term (:func:`adversarial_term`), the clipped gradient step, the EMA, then the
    critic's step. ``(loss, gradient norm, {adversarial measures})``: ``loss`` is the diffusion loss alone."""
    gen = torch.Generator().manual_seed(args.seed * 1_000_003 + step * 1009 + rank)
    clips, actions, from_nothing = first_frames(args, clips, actions, step, rank)
    own_context = None if from_nothing else own_rollout(args, model, clips, actions, step, rank)
    with autocast:
        loss = diffusion_loss(net, clips, gen, clean_prefix_prob=args.clean_prefix_prob,
                              level_distribution=args.level_distribution, max_chunk=args.max_chunk,
                              context_corruption=args.context_corruption,
                              from_nothing_prob=1.0 if from_nothing else args.from_nothing_prob,
                              context_blur=args.context_blur,
                              frame_loss=args.frame_loss, shared_level_prob=args.shared_level_prob, actions=actions,
                              anchor_error_strength=args.anchor_error_weight, own_context=own_context,
                              sampler_levels=sampler_query_levels(_SAMPLER.noise_schedule, args.sampler_level_steps,
                                                                  _SAMPLER.shift),
                              sampler_level_prob=args.sampler_level_prob)
        total, measures, judged = loss, {}, None
        if critic is not None and not from_nothing:
            total, measures, judged = adversarial_term(args, net, model, critic[0], clips, actions, loss, step, rank)
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
    optimizer.step()
    if args.ema:
        update_ema(ema, model, args.ema)
    if judged is not None:
        measures["critic_loss"] = critic_step(critic, judged)
    return loss, grad_norm, measures


def adversarial_term(args, net, model, critic: FrameCritic, clips, actions, loss, step: int, rank: int):
    """``(loss + the weighted generator loss, measures, the drawn chunk)``: the sampler continues the clip
    (:func:`msc.adversarial.sampled_chunk`, its randomness from its own generator, so the diffusion loss's draws are
    those of a run without it) and the critic, held fixed, scores it."""
    gen = torch.Generator().manual_seed(args.seed * 1_000_039 + step * 4001 + rank)
    nothing = bool(args.adversarial_from_nothing) and float(torch.rand((), generator=gen)) < args.adversarial_from_nothing
    drawn = sampled_chunk(net, clips, gen, 1 if nothing else args.adversarial_chunk,
                          args.adversarial_first_steps if nothing else args.adversarial_steps, actions=actions,
                          own_frames=args.adversarial_rollout, from_nothing=nothing)
    critic.requires_grad_(False)
    try:
        adversarial = generator_loss(critic, drawn)
    finally:
        critic.requires_grad_(True)
    ramp = min(1.0, (step + 1) / args.adversarial_warmup) if args.adversarial_warmup else 1.0
    weight = ramp * args.adversarial * adaptive_weight(loss, adversarial, model.final.linear.weight)
    measures = {"generator_loss": float(adversarial.detach()), "adversarial_weight": float(weight)}
    return loss + weight * adversarial, measures, drawn._replace(fake=drawn.fake.detach())


def critic_step(critic, drawn) -> float:
    """One step of the critic ``(FrameCritic, its optimizer)`` on a sampled chunk and the true one
    (:class:`msc.adversarial.SampledChunk`); its hinge loss."""
    module, optimizer = critic
    loss = critic_loss(module, drawn)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def make_trained(args, config, device):
    """``(model, its EMA, AdamW, critic or None)``: what a run trains, freshly initialised from ``--seed`` (restored
    afterwards by :func:`restore`)."""
    torch.manual_seed(args.seed)
    model = MSCModel(config).to(device)
    ema = MSCModel(config).to(device)
    ema.load_state_dict(model.state_dict())
    ema.requires_grad_(False)
    return model, ema, make_optimizer(model, args.lr, args.weight_decay), make_critic(args, config, device)


def make_critic(args, config, device):
    """``(FrameCritic, Adam)`` for ``--adversarial``, else ``None``."""
    if not args.adversarial:
        return None
    critic = FrameCritic(config.channels).to(device)
    return critic, torch.optim.Adam(critic.parameters(), lr=args.critic_lr, betas=(0.0, 0.99))


def save_checkpoint(args, ckpt, kept, model, ema, optimizer, step: int, elapsed: float, log_path: str,
                    critic=None) -> None:
    """The run's checkpoint and, with ``--keep-resumable``, its compact copy with the log (so that the run's history
    survives a move to a new machine); ``critic``: ``(FrameCritic, its optimizer)`` or ``None``."""
    state = {"step": step, "elapsed": elapsed, "args": vars(args)}
    ckpt.save(model, ema, optimizer, state, critic)
    if kept is not None:
        kept.save(model, ema, optimizer, state, critic)
        shutil.copyfile(log_path, os.path.join(kept.dir, "log.jsonl"))


def progress_bar(steps: int, start: int):
    """A tqdm bar on stderr over the run's steps."""
    from tqdm import tqdm

    return tqdm(total=steps, initial=start, dynamic_ncols=True, file=sys.stderr)


def start_process(args):
    """``(distributed, rank, world size, device)``: one process of a ``torchrun`` launch (its process group
    started) or the only one; CUDA when there is a GPU."""
    distributed = "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1
    use_cuda = torch.cuda.is_available()
    if distributed:
        dist.init_process_group("nccl" if use_cuda else "gloo")
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if use_cuda else "cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.batch_size % world:
        raise ValueError(f"--batch-size {args.batch_size} must be divisible by the {world} processes.")
    return distributed, rank, world, device


def train(args) -> dict:
    """Train (or fine-tune, or resume) as ``args`` say (see :func:`parse_args`); returns the last step, the losses
    and the wall time spent, earlier sessions included."""
    distributed, rank, world, device = start_process(args)
    use_cuda = device.type == "cuda"

    autoencoder, config = model_config(args, device)
    check_recipe(args, config)
    model, ema, optimizer, critic = make_trained(args, config, device)
    ckpt, kept, source, start_step, elapsed_before = restore(args, model, ema, optimizer, critic)
    net = torch.nn.parallel.DistributedDataParallel(model) if distributed else model

    dataset = make_dataset(args, config.image_size * (autoencoder.config.factor if autoencoder else 1))
    if use_cuda or args.bf16:
        autocast = torch.autocast("cuda" if use_cuda else "cpu", dtype=torch.bfloat16)
    else:
        autocast = contextlib.nullcontext()
    log_path = open_log(args, rank, ckpt, source)
    bar = progress_bar(args.steps, start_step) if rank == 0 and not args.no_progress else None

    t0 = time.time()
    last_log_time, last_log_step = t0, start_step
    losses = []
    step = start_step
    def budget_used() -> float:
        if not args.budget_minutes:
            return 0.0
        return (elapsed_before + time.time() - t0) / (60 * args.budget_minutes)

    while step < args.steps and budget_used() < 1.0:
        lr = learning_rate(step, args.lr, args.warmup, args.steps, budget_used())
        for group in optimizer.param_groups:
            group["lr"] = lr
        clips, actions = training_batch(dataset, step, args.batch_size, rank, world, device, autoencoder)
        loss, grad_norm, measures = optimisation_step(args, net, model, ema, optimizer, clips, actions, step, rank, autocast,
                                                      critic)
        step += 1
        loss_value = loss.detach()
        if distributed:
            dist.all_reduce(loss_value)
            loss_value /= world
        losses.append(loss_value.item())

        if rank == 0:
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{losses[-1]:.4f}", lr=f"{lr:.2e}")
            if step % args.log_every == 0 or step == args.steps or budget_used() >= 1.0:
                now = time.time()
                write_log(log_path, step, losses, args, lr, grad_norm, (step - last_log_step) / max(now - last_log_time, 1e-9),
                          elapsed_before + now - t0, measures)
                last_log_time, last_log_step = now, step
        out_of_time = args.max_minutes and (time.time() - t0) / 60 >= args.max_minutes
        finished = step == args.steps or budget_used() >= 1.0
        if step % args.ckpt_every == 0 or finished or out_of_time:
            if rank == 0:
                save_checkpoint(args, ckpt, kept, model, ema, optimizer, step, elapsed_before + time.time() - t0, log_path,
                                critic)
            if distributed:
                dist.barrier()
        if rank == 0 and args.sample_every and step % args.sample_every == 0:
            write_sample(ema if args.ema else model, os.path.join(args.out, "samples", f"step{step:07d}.mp4"), step, 8)
        if out_of_time:
            break
    if bar is not None:
        bar.close()
    if rank == 0 and (step >= args.steps or budget_used() >= 1.0):  # the run is over: its weights in final/
        (ema if args.ema else model).save_pretrained(os.path.join(args.out, "final"))
        if autoencoder is not None:
            autoencoder.save_pretrained(os.path.join(args.out, "final", "autoencoder"))
    if distributed:
        del net  # the DDP wrapper's reducer holds the process group: released before the group is
        dist.barrier()
        dist.destroy_process_group()
    return {"step": step, "losses": losses, "elapsed": elapsed_before + time.time() - t0}


def main(argv=None):
    keep_freed_memory()
    args = parse_args(argv)
    if args.export:
        print(export_checkpoint(args.out, args.export, "ema" if args.ema else "model"))
        return
    train(args)


if __name__ == "__main__":
    main()
