"""What one query token sees, and what the window settings cost (paper §3, Fig. 2 and §3.2).

:func:`light_cone` reads the same axis masks the attention kernels use
(:func:`msc.attention.axis_window_mask`, NATTEN's window rule) to list, for a query token at
``(frame, y, x)``, the tokens of the current and previous frames that each branch attends to:

* High-Res: a causal temporal window of ``k_t`` frames × a ``k_s × k_s`` spatial neighbourhood
  (shifted inward at the borders, as NATTEN does);
* Low-Res (layer with factor ``r``): the frame pooled by ``r × r``, every pooled cell of the frames
  ``t, t - d, …`` (at most ``k_lo`` of them), drawn at token resolution.

:func:`cost_table` lays the paper's FLOP formulas beside our exact counts (:mod:`msc.complexity`)
and dense frame-causal attention for a clip of ``frames`` frames, summed over the model's layers.
"""

from __future__ import annotations

from typing import List

import functools
import os

import numpy as np
import torch

from msc.attention import axis_window_mask
from msc.complexity import dense_layer_macs, msc_layer_macs, paper_dense, paper_high_res, paper_low_res


def light_cone(windows, grid: int, frame: int, y: int, x: int, r: int) -> dict:
    """Masks of the keys one query attends to.

    Returns ``frames`` (the frame indices shown: the oldest frame either branch reaches up to
    ``frame``), and ``high`` / ``low``: bool ``[len(frames), grid, grid]`` (Low-Res cells expanded to
    the tokens they pool).
    """
    windows.check_fits(grid)
    if not (0 <= y < grid and 0 <= x < grid):
        raise ValueError(f"the query token ({y}, {x}) is outside the {grid} × {grid} grid.")
    if frame < 0:
        raise ValueError(f"frame must be >= 0, got {frame}.")
    if r < 1 or grid % r:
        raise ValueError(f"the Low-Res factor r={r} must divide the grid size {grid}.")
    length = frame + 1
    t_hi = axis_window_mask(length, windows.k_t, 1, True)[frame]  # [length]
    t_lo = axis_window_mask(length, windows.k_lo, windows.d, True)[frame]
    rows = axis_window_mask(grid, windows.k_s, 1, False)[y]  # [grid]
    cols = axis_window_mask(grid, windows.k_s, 1, False)[x]
    # Low-Res: the spatial window is the whole pooled grid, so every cell is a key
    pooled = grid // r
    cells = axis_window_mask(pooled, pooled, 1, False)[y // r].repeat_interleave(r)  # [grid]
    cells_x = axis_window_mask(pooled, pooled, 1, False)[x // r].repeat_interleave(r)
    first = int(min(torch.nonzero(t_hi)[0], torch.nonzero(t_lo)[0]))
    shown = list(range(first, frame + 1))
    high = t_hi[first:, None, None] & rows[None, :, None] & cols[None, None, :]
    low = t_lo[first:, None, None] & cells[None, :, None] & cells_x[None, None, :]
    return {"frames": shown, "high": high.numpy(), "low": low.numpy(), "query": (frame, y, x), "r": r}


HIGH_RGB, LOW_RGB, QUERY_RGB, EMPTY_RGB = (232, 115, 26), (42, 122, 185), (214, 39, 40), (237, 237, 237)
CELL_PX, GAP_PX, LABEL_PX = 9, 14, 96  # pixels per token, between panels, for the row labels


@functools.lru_cache(maxsize=1)
def _font():
    """DejaVu Sans from matplotlib's own files (always installed with it), else PIL's built-in bitmap font."""
    from PIL import ImageFont

    try:
        import matplotlib

        return ImageFont.truetype(os.path.join(matplotlib.get_data_path(), "fonts", "ttf", "DejaVuSans.ttf"), 11)
    except (ImportError, OSError):
        return ImageFont.load_default()


def light_cone_image(cone: dict) -> np.ndarray:
    """Two rows (High-Res, Low-Res) of token grids, one column per frame, the query token red, the keys coloured:
    ``[H, W, 3]`` uint8. Drawn with numpy and PIL in a few milliseconds (a matplotlib figure of as many axes takes
    half a second, which a flood of light-cone requests would turn into minutes of CPU)."""
    from PIL import Image, ImageDraw

    frames, (q_frame, qy, qx), r = cone["frames"], cone["query"], cone["r"]
    grid = cone["high"].shape[-1]
    side = grid * CELL_PX
    width, row_height = LABEL_PX + len(frames) * (side + GAP_PX), side + 2 * GAP_PX
    canvas = np.full((GAP_PX * 2 + 2 * row_height, width, 3), 255, np.uint8)
    rows = [("High-Res", cone["high"], HIGH_RGB, 1), (f"Low-Res (r={r})", cone["low"], LOW_RGB, r)]
    for row, (_, mask, colour, cell) in enumerate(rows):
        top = GAP_PX * 3 + row * row_height
        for col, f in enumerate(frames):
            tokens = np.where(mask[col][..., None], np.array(colour, np.uint8), np.array(EMPTY_RGB, np.uint8))  # [g, g, 3]
            if f == q_frame:
                tokens[qy, qx] = QUERY_RGB
            panel = tokens.repeat(CELL_PX, 0).repeat(CELL_PX, 1)  # [side, side, 3]
            if cell > 1:  # the pooled cells the Low-Res branch attends to, outlined in white
                panel[np.arange(cell * CELL_PX, side, cell * CELL_PX)] = 255
                panel[:, np.arange(cell * CELL_PX, side, cell * CELL_PX)] = 255
            left = LABEL_PX + col * (side + GAP_PX)
            canvas[top : top + side, left : left + side] = panel
    image = Image.fromarray(canvas)
    draw, font = ImageDraw.Draw(image), _font()
    draw.text((4, 2), f"Keys of the query token (y={qy}, x={qx}) in frame {q_frame} (red)", fill=(0, 0, 0), font=font)
    for row, (name, mask, _, cell) in enumerate(rows):
        top = GAP_PX * 3 + row * row_height
        draw.text((4, top + side // 2 - 12), f"{name}\n{int(mask.sum()) // cell**2} keys", fill=(0, 0, 0), font=font)
        for col, f in enumerate(frames):
            title = f"frame {f}" + (" (query)" if f == q_frame else f" (t-{q_frame - f})")
            draw.text((LABEL_PX + col * (side + GAP_PX), top - 13), title, fill=(0, 0, 0), font=font)
    return np.asarray(image)


def cost_table(config, windows, frames: int) -> List[dict]:
    """GFLOPs of all attention layers for one ``frames``-frame clip (batch 1), as rows
    ``{"what", "gflops", "vs_dense"}``: the paper's formulas as printed (already FLOPs), our exact
    counts inside the windows and what our CPU kernel computes (2 FLOPs per MAC), and dense
    frame-causal attention."""
    windows.check_fits(config.grid)
    g, c = config.grid, config.hidden_size
    s = frames * g * g
    low_fraction = config.low_res_heads / config.num_heads
    paper = sum(paper_high_res(1, s, c, windows.k_s, windows.k_t) + paper_low_res(1, s, c, r, windows.d)
                for r in config.low_res_factors)
    exact = computed = 0.0
    for r in config.low_res_factors:
        for flag in (False, True):
            hi, lo = msc_layer_macs(1, frames, g, g, c, windows.k_s, windows.k_t, r, windows.d, windows.k_lo,
                                    low_fraction, computed=flag)
            if flag:
                computed += 2 * (hi.total + lo.total)
            else:
                exact += 2 * (hi.total + lo.total)
    dense = 2 * config.depth * dense_layer_macs(1, frames, g, g, c, causal=True).total
    dense_paper = config.depth * paper_dense(1, s, c)
    rows = [
        ("MSC, paper's formula (§3.2, as printed)", paper, dense_paper),
        ("MSC, exact count inside the windows", exact, dense),
        ("MSC, what our CPU kernel computes (tile halos included)", computed, dense),
        ("Dense frame-causal attention, exact count", dense, dense),
        ("Dense attention, paper's formula", dense_paper, dense_paper),
    ]
    return [{"what": w, "gflops": v / 1e9, "vs_dense": v / ref} for w, v, ref in rows]


def cost_markdown(rows: List[dict], frames: int) -> str:
    lines = [f"Attention cost of all layers for a {frames}-frame clip (batch 1):", "",
             "| | GFLOPs | vs dense (same counting) |", "|---|---:|---:|"]
    lines += [f"| {r['what']} | {r['gflops']:.3f} | {r['vs_dense']:.3f}× |" for r in rows]
    return "\n".join(lines)
