"""Frame metrics for evaluating video continuation: PSNR, SSIM, motion and sharpness.

All functions take frames in the model's range ``[-1, 1]`` with layout ``[..., C, H, W]`` and compare
them on the ``[0, 1]`` scale, returning one value per frame (every leading dimension kept).

* PSNR: ``10 log10(1 / MSE)`` on ``[0, 1]``; identical frames give ``inf`` (capped by ``max_db``).
* SSIM: Wang et al. 2004, "Image quality assessment: from error visibility to structural
  similarity", with the usual 11 × 11 Gaussian window (σ = 1.5), ``K1 = 0.01``, ``K2 = 0.03``, over
  the valid region (no padding), averaged over channels — the same as scikit-image's
  ``structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
  data_range=1, channel_axis=0)``, which the tests check against.
* Motion: the mean absolute difference between consecutive frames, so a model that freezes motion
  shows a motion far below the ground truth's even when its PSNR looks fine.
* Sharpness: the mean absolute difference between neighbouring pixels, so a rollout that collapses
  to flat colour or blur shows it beside its context's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """``[-1, 1]`` -> ``[0, 1]`` (float32)."""
    return (x.float().clamp(-1, 1) + 1) / 2


def psnr(pred: torch.Tensor, target: torch.Tensor, max_db: float = 100.0) -> torch.Tensor:
    """Peak signal-to-noise ratio per frame. ``[..., C, H, W]`` -> ``[...]`` in dB."""
    mse = (to_unit(pred) - to_unit(target)).pow(2).flatten(-3).mean(-1)
    return (10 * torch.log10(1.0 / mse.clamp(min=10 ** (-max_db / 10)))).clamp(max=max_db)


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).float()  # [size, size]


def ssim(pred: torch.Tensor, target: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Structural similarity per frame (Gaussian window, valid region, mean over channels).
    ``[..., C, H, W]`` -> ``[...]``."""
    lead, (c, h, w) = pred.shape[:-3], pred.shape[-3:]
    if h < window or w < window:
        raise ValueError(f"SSIM needs frames of at least {window} x {window} pixels, got {h} x {w}.")
    x = to_unit(pred).reshape(-1, 1, h, w)  # [N*C, 1, H, W]
    y = to_unit(target).reshape(-1, 1, h, w)
    kernel = _gaussian_window(window, sigma).to(x.device)[None, None]  # [1, 1, k, k]

    def blur(z):
        return F.conv2d(z, kernel)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return s.flatten(1).mean(1).reshape(*lead, c).mean(-1)


def motion(video: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between consecutive frames on ``[0, 1]``.
    ``[..., T, C, H, W]`` -> ``[..., T - 1]``."""
    v = to_unit(video)
    return (v[..., 1:, :, :, :] - v[..., :-1, :, :, :]).abs().flatten(-3).mean(-1)


def sharpness(video: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between horizontally and vertically neighbouring pixels on ``[0, 1]``
    (a flat frame scores 0, blur lowers it). ``[..., C, H, W]`` -> ``[...]``."""
    v = to_unit(video)
    dx = (v[..., :, 1:] - v[..., :, :-1]).abs().mean(dim=(-3, -2, -1))
    dy = (v[..., 1:, :] - v[..., :-1, :]).abs().mean(dim=(-3, -2, -1))
    return (dx + dy) / 2
