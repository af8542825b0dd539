"""Constant-velocity optical-flow extrapolation: the classical video predictor, and the ``flow`` anchor.

Given the last two frames of a video, OpenCV's dense Farnebäck flow (Farnebäck 2003, "Two-frame motion
estimation based on polynomial expansion"; the parameters of OpenCV's tutorial) measures where every pixel
of the last frame was one frame earlier, ``last(x) ≈ previous(x + f(x))``. Assuming every pixel keeps its
velocity, frame ``h`` after the last one is the last frame warped back by ``h`` times that displacement:

    frame_h(x) = last(x + h · f(x))        (bilinear, the border pixel repeated outside the frame)

It is the predictor that a model of motion must beat (a pan is predicted almost exactly; an object that
stops or turns is not), and with the ``flow`` prior (:mod:`msc.diffusion`) it is the anchor whose
residual the diffusion model learns (residual video diffusion, Yang, Srivastava & Mandt 2022).
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

# OpenCV's tutorial parameters (pyramid scale, levels, window, iterations, polynomial size and sigma)
FARNEBACK = dict(pyr_scale=0.5, levels=3, winsize=15, iterations=3, poly_n=5, poly_sigma=1.2, flags=0)
_LUMA = torch.tensor([0.299, 0.587, 0.114])


def _grey_uint8(frames: torch.Tensor) -> np.ndarray:
    """``[B, 3, H, W]`` in [-1, 1] -> ``[B, H, W]`` uint8 luma (what Farnebäck reads)."""
    unit = (frames.detach().float().cpu().clamp(-1, 1) + 1) / 2
    grey = (unit * _LUMA[:, None, None]).sum(1) if frames.shape[1] == 3 else unit.mean(1)
    return (grey * 255).round().to(torch.uint8).numpy()


def backward_flow(previous: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
    """Where each pixel of ``last`` was in ``previous``: ``[B, C, H, W]`` twice -> ``[B, 2, H, W]`` displacement
    ``(dx, dy)`` in pixels, ``last(x) ≈ previous(x + f(x))``."""
    import cv2  # on use: importing OpenCV changes the process's LD_LIBRARY_PATH

    a, b = _grey_uint8(last), _grey_uint8(previous)
    flows = [cv2.calcOpticalFlowFarneback(a[i], b[i], None, **FARNEBACK) for i in range(a.shape[0])]  # [H, W, 2] each
    return torch.from_numpy(np.stack(flows)).permute(0, 3, 1, 2).to(last.device, torch.float32)


def warp(frames: torch.Tensor, displacement: torch.Tensor) -> torch.Tensor:
    """``frames(x + displacement(x))``: ``[B, C, H, W]`` and ``[B, 2, H, W]`` pixels -> ``[B, C, H, W]`` (bilinear,
    the border repeated)."""
    b, _, h, w = frames.shape
    ys, xs = torch.meshgrid(torch.arange(h, device=frames.device, dtype=torch.float32),
                            torch.arange(w, device=frames.device, dtype=torch.float32), indexing="ij")
    x = xs + displacement[:, 0]  # [B, H, W] source pixel, x
    y = ys + displacement[:, 1]
    grid = torch.stack([(2 * x + 1) / w - 1, (2 * y + 1) / h - 1], dim=-1)  # pixel centres, align_corners=False
    return F.grid_sample(frames.float(), grid, mode="bilinear", padding_mode="border", align_corners=False).to(frames.dtype)


def extrapolate(previous: Optional[torch.Tensor], last: torch.Tensor, horizons, flow: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Frames ``h`` after ``last`` for every ``h`` in ``horizons`` (ints >= 1): ``[B, C, H, W]`` -> ``[B, n, C, H, W]``.
    ``previous`` ``None`` (no frame before the last): the last frame repeated. ``flow``: the backward flow of the
    pair, if it is known already."""
    horizons = [int(h) for h in horizons]
    if previous is None and flow is None:
        return last[:, None].expand(-1, len(horizons), -1, -1, -1)
    flow = backward_flow(previous, last) if flow is None else flow  # [B, 2, H, W]
    return torch.stack([warp(last, h * flow) for h in horizons], dim=1)


def flow_extrapolation(context: torch.Tensor, horizon: int) -> torch.Tensor:
    """The classical baseline of :mod:`msc.evaluate`: ``[N, K, C, H, W]`` context -> ``[N, horizon, C, H, W]``
    (copy-last when ``K = 1``)."""
    previous = context[:, -2] if context.shape[1] >= 2 else None
    return extrapolate(previous, context[:, -1], range(1, horizon + 1))
