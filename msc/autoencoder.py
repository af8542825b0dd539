"""A small convolutional frame autoencoder: the latent space of latent MSC (paper Sec. 3: "after compressing video
into latents"). ``python -m msc.autoencoder`` trains one.

Each frame ``[3, H, W]`` in [-1, 1] is encoded on its own (no temporal compression: frames stay the
autoregressive unit) into ``[C, H/f, W/f]`` latents, normalised per channel to zero mean and unit standard
deviation over the training frames (the statistics are stored with the weights), so the diffusion model's
settings (``frame_std``, ``residual_std``) read in the same units whatever the autoencoder. The decoder is
convolutional: what a linear un-patchify draws as a grid of patches, it draws as one picture.

    python -m msc.autoencoder --data data --minutes 7 --out runs/ae         # train, then report reconstruction PSNR
    python -m msc.autoencoder --data data --minutes 7 --out runs/ae --resume  # continue a stopped run exactly
    python -m msc.train ... --autoencoder runs/ae/final                     # MSC on its latents

Architecture (a compact version of the VAE of Rombach et al. 2022, without the KL term): a 3 × 3 stem, then
per factor of 2 a stride-2 convolution and a residual block, one more residual block and a 1 × 1 projection to
the latent channels; the decoder mirrors it with nearest-neighbour upsampling.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
from huggingface_hub import PyTorchModelHubMixin


@dataclass
class AutoencoderConfig:
    channels: int = 3
    latent_channels: int = 8
    width: int = 32  # channels at full size; doubled at each of the first two downsamplings
    factor: int = 4  # spatial downsampling, a power of 2

    def __post_init__(self):
        if self.factor < 2 or self.factor & (self.factor - 1):
            raise ValueError(f"factor must be a power of 2 of at least 2, got {self.factor}.")


WARMUP = 100  # steps of linear learning-rate warm-up


class ResBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(nn.GroupNorm(8, c), nn.SiLU(), nn.Conv2d(c, c, 3, padding=1),
                                  nn.GroupNorm(8, c), nn.SiLU(), nn.Conv2d(c, c, 3, padding=1))

    def forward(self, x):
        return x + self.body(x)


class FrameAutoencoder(nn.Module, PyTorchModelHubMixin):
    """``encode``: ``[..., 3, H, W]`` -> normalised ``[..., C, H/f, W/f]``; ``decode`` the inverse (any leading dims)."""

    def __init__(self, config: AutoencoderConfig = None, **kwargs):
        super().__init__()
        if config is None:
            config = AutoencoderConfig(**kwargs)
        elif isinstance(config, dict):
            config = AutoencoderConfig(**config)
        self.config = config
        w, levels = config.width, int(math.log2(config.factor))
        widths = [w * 2 ** min(i, 2) for i in range(levels + 1)]  # channels at full size, /2, /4 (doubling twice at most)
        enc = [nn.Conv2d(config.channels, widths[0], 3, padding=1)]
        for i in range(levels):  # no residual block at full size: the cost is there
            enc += [nn.Conv2d(widths[i], widths[i + 1], 3, stride=2, padding=1), ResBlock(widths[i + 1])]
        enc += [ResBlock(widths[-1]), nn.GroupNorm(8, widths[-1]), nn.SiLU(), nn.Conv2d(widths[-1], config.latent_channels, 1)]
        self.encoder = nn.Sequential(*enc)
        dec = [nn.Conv2d(config.latent_channels, widths[-1], 3, padding=1), ResBlock(widths[-1])]
        for i in reversed(range(levels)):
            dec += [ResBlock(widths[i + 1]), nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(widths[i + 1], widths[i], 3, padding=1)]
        dec += [nn.GroupNorm(8, widths[0]), nn.SiLU(), nn.Conv2d(widths[0], config.channels, 3, padding=1)]
        self.decoder = nn.Sequential(*dec)
        # per-channel statistics of the raw latents over training frames (set by fit_statistics)
        self.register_buffer("latent_mean", torch.zeros(config.latent_channels))
        self.register_buffer("latent_std", torch.ones(config.latent_channels))

    def latent_shape(self, frame_size: int):
        return (self.config.latent_channels, frame_size // self.config.factor, frame_size // self.config.factor)

    def _frames(self, x: torch.Tensor, fn) -> torch.Tensor:
        lead = x.shape[:-3]
        y = fn(x.reshape(-1, *x.shape[-3:]))
        return y.reshape(*lead, *y.shape[1:])

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        m, s = self.latent_mean[:, None, None], self.latent_std[:, None, None]
        return self._frames(x, lambda f: (self.encoder(f) - m) / s)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        m, s = self.latent_mean[:, None, None], self.latent_std[:, None, None]
        return self._frames(z, lambda f: self.decoder(f * s + m))

    @torch.no_grad()
    def fit_statistics(self, frames: torch.Tensor) -> None:
        """Set the normalisation from ``[N, 3, H, W]`` training frames."""
        raw = self.encoder(frames)  # [N, C, h, w]
        self.latent_mean.copy_(raw.mean(dim=(0, 2, 3)))
        self.latent_std.copy_(raw.std(dim=(0, 2, 3)).clamp(min=1e-4))


def training_frames(data, count: int, seed: int) -> torch.Tensor:
    """``[count, 3, S, S]`` frames of the training mixture (one random frame of each of ``count`` clips)."""
    from msc.data.mixture import MixedVideos

    clips = MixedVideos(data, frames=4)
    g = torch.Generator().manual_seed(seed)
    picks = torch.randint(0, 2**30, (count,), generator=g).tolist()
    return torch.stack([clips[i][i % 4] for i in picks])


def _save_checkpoint(folder: str, model: FrameAutoencoder, opt: torch.optim.Optimizer, state: dict) -> None:
    """``folder``: model.safetensors, optimizer.safetensors and state.json (step, elapsed, log, the optimizer's
    non-tensor state), written to a temporary folder first so that a kill mid-write leaves the previous one."""
    from safetensors.torch import save_file

    from msc.train import optimizer_to_tensors, save_weights, swap_in

    tmp = folder + ".tmp"
    os.makedirs(tmp, exist_ok=True)
    save_weights(model, os.path.join(tmp, "model.safetensors"))
    tensors, meta = optimizer_to_tensors(opt)
    save_file(tensors, os.path.join(tmp, "optimizer.safetensors"))
    with open(os.path.join(tmp, "state.json"), "w") as f:
        json.dump({**state, "optimizer": meta}, f)
    swap_in(tmp, folder)


def _load_checkpoint(folder: str, model: FrameAutoencoder, opt: torch.optim.Optimizer) -> dict:
    from safetensors.torch import load_file

    from msc.train import optimizer_from_tensors

    with open(os.path.join(folder, "state.json")) as f:
        state = json.load(f)
    model.load_state_dict(load_file(os.path.join(folder, "model.safetensors")))
    optimizer_from_tensors(opt, load_file(os.path.join(folder, "optimizer.safetensors")), state.pop("optimizer"))
    return state


def train_autoencoder(data_folder: str, out: str, minutes: float, config: AutoencoderConfig, batch: int = 32,
                      lr: float = 1e-3, seed: int = 0, threads: int = 0, pool: int = 4096, resume: bool = False,
                      ckpt_every: int = 100, max_steps: int = 0) -> dict:
    """Train on frames of the training mixture for ``minutes`` of wall time (L1 + MSE; the learning rate warms up
    over :data:`WARMUP` steps, then follows a cosine over the budget down to a tenth), fit the latent statistics, and
    save ``out/final`` with a report of reconstruction PSNR on the held-out sets. ``pool`` training frames are drawn
    once (each step a fresh batch of them, mirrored every other step); every ``ckpt_every`` steps ``out/checkpoint``
    is written, from which ``resume`` continues as a run never stopped would (the same batches; the optimizer and the
    budget's elapsed time restored). ``max_steps`` (0: none) ends the run earlier."""
    from msc.data.mixture import PreparedData
    from msc.evaluate import SETS, held_out_set
    from msc.metrics import psnr
    from msc.train import learning_rate

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    data = PreparedData(data_folder)
    model = FrameAutoencoder(config)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    checkpoint = os.path.join(out, "checkpoint")
    state = {"step": 0, "elapsed": 0.0, "log": []}
    if resume and os.path.isdir(checkpoint):
        state = _load_checkpoint(checkpoint, model, opt)
        if state["config"] != asdict(config):
            raise ValueError(f"{checkpoint} holds an autoencoder of {state['config']}, not {asdict(config)}.")
    step, log, start = state["step"], state["log"], time.time() - state["elapsed"]
    frames = training_frames(data, pool, seed)  # [pool, 3, S, S]
    while time.time() - start < 60 * minutes and not (max_steps and step >= max_steps):
        for group in opt.param_groups:
            group["lr"] = learning_rate(step, lr, WARMUP, 1 << 30, (time.time() - start) / (60 * minutes))
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        x = frames[torch.randint(0, frames.shape[0], (batch,), generator=g)]
        if step % 2:
            x = x.flip(-1)
        y = model.decoder(model.encoder(x))
        loss = (y - x).abs().mean() + (y - x).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if step % 50 == 0:
            log.append({"step": step, "loss": float(loss.detach()), "lr": opt.param_groups[0]["lr"], "elapsed": time.time() - start})
            print(json.dumps(log[-1]), flush=True)
        if ckpt_every and step % ckpt_every == 0:
            _save_checkpoint(checkpoint, model, opt, {"step": step, "elapsed": time.time() - start, "log": log,
                                                      "config": asdict(config)})
    model.eval()
    model.fit_statistics(frames[:1024])
    report = {"config": asdict(config), "steps": step, "minutes": (time.time() - start) / 60, "log": log, "psnr": {}}
    with torch.no_grad():
        for name in SETS:
            clips = held_out_set(name, 16, 8, data.size, data)
            report["psnr"][name] = float(psnr(model.decode(model.encode(clips)).clamp(-1, 1), clips).mean())
    os.makedirs(out, exist_ok=True)
    model.save_pretrained(os.path.join(out, "final"))
    with open(os.path.join(out, "report.json"), "w") as f:
        json.dump(report, f, indent=1)
    return report


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="data", help="the prepared data folder (python -m msc.data.prepare)")
    p.add_argument("--out", required=True)
    p.add_argument("--minutes", type=float, default=7.0)
    d = AutoencoderConfig()
    p.add_argument("--latent-channels", type=int, default=d.latent_channels)
    p.add_argument("--width", type=int, default=d.width)
    p.add_argument("--factor", type=int, default=d.factor)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--pool", type=int, default=4096, help="training frames drawn once, each step a batch of them")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--ckpt-every", type=int, default=100, help="steps between checkpoints (out/checkpoint)")
    p.add_argument("--resume", action="store_true", help="continue from out/checkpoint exactly, within the same --minutes")
    p.add_argument("--max-steps", type=int, default=0, help="end after this many steps (0: the time budget alone)")
    args = p.parse_args(argv)
    report = train_autoencoder(args.data, args.out, args.minutes, AutoencoderConfig(3, args.latent_channels, args.width, args.factor),
                               args.batch_size, args.lr, threads=args.threads, pool=args.pool, resume=args.resume,
                               ckpt_every=args.ckpt_every, max_steps=args.max_steps)
    print(json.dumps({k: report[k] for k in ("steps", "minutes", "psnr")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
