"""Figures of the learned branch gates (paper §3: the timestep-gated High-Res / Low-Res mixture).

* :func:`gate_heatmap` — the Low-Res share of every layer against the noise level, read from the
  model's own gates (``model.gates(t)``), so one sees whether the coarse branch gains weight as the
  noise rises, as the paper argues.
* :func:`gates_over_generation` — for one sampler run, the Low-Res share of every layer at every
  model call, beside the noise levels of the frames that call denoised.

Figures are plain :class:`matplotlib.figure.Figure` objects (not registered with pyplot, so a
server that makes one per request does not accumulate them), with an opaque white background so
they read the same in light and dark page themes.
"""

from __future__ import annotations

from typing import List, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure

LOW_RES_CMAP = "viridis"


def low_res_share_table(model, levels: int = 21) -> tuple:
    """``(noise levels [N], Low-Res share [depth, N])`` as numpy arrays."""
    t = torch.linspace(0, 1, levels)
    share = model.gates(t)[..., 1].T.cpu().numpy()  # [depth, N]
    return t.numpy(), share


def gate_heatmap(model, levels: int = 41, title: str = "Learned gates: Low-Res share per layer"):
    t, share = low_res_share_table(model, levels)
    depth = share.shape[0]
    fig = Figure(figsize=(6.4, 0.45 * depth + 1.6), facecolor="white", layout="constrained")
    ax = fig.subplots()
    im = ax.imshow(share, aspect="auto", origin="lower", cmap=LOW_RES_CMAP, vmin=0, vmax=1,
                   extent=(-0.5 / (levels - 1), 1 + 0.5 / (levels - 1), -0.5, depth - 0.5))
    ax.set_xlabel("noise level t (0 = clean, 1 = pure noise)")
    ax.set_ylabel("layer")
    ax.set_yticks(range(depth))
    factors = getattr(model.config, "low_res_factors", None)
    if factors:
        ax.set_yticklabels([f"{i}  (r={r})" for i, r in enumerate(factors)])
    ax.set_title(title)
    fig.colorbar(im, ax=ax, label="Low-Res weight")
    return fig


def gates_over_generation(records: Sequence[dict], title: str = "Noise level and gates at every model call"):
    """``records``: :attr:`msc.sampling.SamplingResult.gates` (one dict per model call with ``t``
    ``[n]`` and ``gates`` ``[n, depth, 2]``). Shows, per call, the mean noise level of the frames it
    denoised and the Low-Res share of each layer averaged over those frames."""
    if not records:
        raise ValueError("no model calls to plot.")
    share = np.stack([r["gates"][..., 1].float().mean(0).numpy() for r in records], axis=1)  # [depth, calls]
    t_mean = np.array([float(np.mean(r["t"])) for r in records])
    depth, calls = share.shape
    fig = Figure(figsize=(7.0, 0.3 * depth + 2.6), facecolor="white", layout="constrained")
    ax_t, ax = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [1, max(2, depth // 2)]})
    ax_t.plot(np.arange(calls), t_mean, color="tab:orange", marker=".", lw=1)
    ax_t.set_ylabel("noise t")
    ax_t.set_ylim(-0.05, 1.05)
    ax_t.set_title(title)
    ax_t.grid(alpha=0.3)
    im = ax.imshow(share, aspect="auto", origin="lower", cmap=LOW_RES_CMAP, vmin=0, vmax=1, interpolation="nearest")
    ax.set_xlabel("model call (denoising step of a chunk, in sampling order)")
    ax.set_ylabel("layer")
    ax.set_yticks(range(depth))
    fig.colorbar(im, ax=ax, label="Low-Res weight")
    return fig


def save(fig, path: str, dpi: int = 120) -> str:
    fig.savefig(path, dpi=dpi, facecolor=fig.get_facecolor())
    return path


def gate_summary(model, levels: List[float] = (0.0, 0.25, 0.5, 0.75, 1.0)) -> dict:
    """Low-Res share per layer at a few noise levels, and its mean rise from t=0 to t=1."""
    share = model.gates(torch.tensor(list(levels)))[..., 1].cpu()  # [N, depth]
    return {
        "levels": list(levels),
        "low_res_share": share.T.tolist(),  # [depth][N]
        "mean_low_res_share": share.mean(1).tolist(),  # [N]
        "rise_clean_to_noise": float(share[-1].mean() - share[0].mean()),
    }
