"""Fréchet Video Distance (Unterthiner et al., "Towards Accurate Generative Models of Video: A New
Metric & Challenges", 2018): the Fréchet distance between Gaussians fitted to the Kinetics-400 I3D
logits (:mod:`msc.i3d`) of two sets of clips. Lower is better; 0 for identical statistics.

Preprocessing as in the reference implementation: every frame resized to 224 × 224 (bilinear) in
[-1, 1], the 400 logits (averaged over time) as features, 16-frame clips in the usual protocol. Where
ours differs: our frames are 64 × 64, so the resize is a 3.5 × upsampling, and torch's bilinear uses
half-pixel centres where TF1's ``resize_bilinear`` did not. FVD is biased for small sets: compare
numbers only at the same clip count (reported with every figure); the literature uses 256 or more.
"""

from __future__ import annotations

import hashlib
import os
import time
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from msc.i3d import INPUT_SIZE, I3D

MIN_FRAMES = 9  # I3D halves time three times and then pools 2 frames: shorter clips have no output


@torch.no_grad()
def i3d_logits(model: I3D, videos: torch.Tensor, batch: int = 4) -> torch.Tensor:
    """``[N, T, 3, H, W]`` in [-1, 1] -> ``[N, 400]`` float64 features (T ≥ :data:`MIN_FRAMES`)."""
    n, t = videos.shape[:2]
    if t < MIN_FRAMES:
        raise ValueError(f"FVD needs clips of at least {MIN_FRAMES} frames (16 is usual), got {t}.")
    out = []
    for i in range(0, n, batch):
        clip = videos[i : i + batch].float().clamp(-1, 1)  # [b, T, 3, H, W]
        b = clip.shape[0]
        frames = F.interpolate(clip.flatten(0, 1), size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
        x = frames.view(b, t, 3, INPUT_SIZE, INPUT_SIZE).transpose(1, 2)  # [b, 3, T, 224, 224]
        out.append(model(x.clamp(-1, 1).contiguous(memory_format=torch.channels_last_3d)).double())
    return torch.cat(out)


def _psd_sqrt(m: np.ndarray) -> np.ndarray:
    """The symmetric square root of a symmetric positive semi-definite matrix (eigenvalues clipped at 0)."""
    values, vectors = np.linalg.eigh((m + m.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to features ``a`` ``[N, D]`` and ``b`` ``[M, D]``:
    ``|mu_a - mu_b|² + tr(S_a + S_b - 2 (S_a^½ S_b S_a^½)^½)``, in float64. The last trace is the sum
    of the singular values of ``S_a^½ S_b^½`` (whose product with its transpose is ``S_a^½ S_b S_a^½``):
    no square root of a near-singular product, so a set against itself gives 0 to rounding even with
    fewer clips than feature dimensions."""
    a, b = a.double().cpu().numpy(), b.double().cpu().numpy()
    if a.shape[0] < 2 or b.shape[0] < 2:
        raise ValueError("the Fréchet distance needs at least 2 clips per set.")
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    cross = np.linalg.svd(_psd_sqrt(s_a) @ _psd_sqrt(s_b), compute_uv=False).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * cross)


class FeatureCache:
    """I3D features on disk, keyed by the clips' exact bytes and the I3D weights': the ground truth and the
    deterministic baselines of a held-out set are the same clips in every evaluation of it (a grid of sampler settings,
    the arms of a study), and their features are computed once. safetensors files, one per clip set."""

    def __init__(self, folder: str, model: I3D):
        self.folder = folder
        weights = hashlib.sha256()
        for name, tensor in sorted(model.state_dict().items()):
            weights.update(name.encode())
            weights.update(tensor.detach().float().contiguous().cpu().numpy().tobytes())
        self.weights = weights.hexdigest()
        if os.path.exists(folder) and not os.path.isdir(folder):
            raise ValueError(f"the FVD feature cache {folder} is a file, not a folder.")
        os.makedirs(folder, exist_ok=True)

    def path(self, videos: torch.Tensor) -> str:
        key = hashlib.sha256(self.weights.encode())
        key.update(repr(tuple(videos.shape)).encode())
        key.update(videos.detach().float().contiguous().cpu().numpy().tobytes())
        return os.path.join(self.folder, key.hexdigest() + ".safetensors")

    @staticmethod
    def load(path: str) -> Optional[torch.Tensor]:
        """The features kept at ``path`` (:meth:`path`), or ``None``."""
        return load_file(path)["features"] if os.path.isfile(path) else None

    @staticmethod
    def save(path: str, features: torch.Tensor) -> None:
        save_file({"features": features.contiguous()}, path + ".part")
        os.replace(path + ".part", path)  # whole or absent: an evaluation killed mid-write leaves no half file


class FVD:
    """FVD against one reference set: its I3D features are computed once, each candidate's on demand.
    ``seconds`` accumulates the I3D time. ``cache``: a folder of :class:`FeatureCache` (``None``: none)."""

    def __init__(self, model: I3D, reference: torch.Tensor, batch: int = 4, cache: Optional[str] = None):
        self.model, self.batch, self.seconds = model, batch, 0.0
        self.cache = FeatureCache(cache, model) if cache else None
        self.reference = self.features(reference)

    def features(self, videos: torch.Tensor) -> torch.Tensor:
        path = self.cache.path(videos) if self.cache else None  # the clips' bytes hashed once
        cached = FeatureCache.load(path) if path else None
        if cached is not None:
            return cached
        start = time.perf_counter()
        out = i3d_logits(self.model, videos, self.batch)
        self.seconds += time.perf_counter() - start
        if path:
            FeatureCache.save(path, out)
        return out

    def __call__(self, videos: torch.Tensor) -> float:
        """FVD of ``videos`` ``[N, T, 3, H, W]`` against the reference set."""
        return frechet_distance(self.features(videos), self.reference)
