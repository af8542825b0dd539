"""The app's explanatory tabs: *Branch weights* (the learned noise gates, paper §3) and *Windows explained* (the keys
one token attends to in each branch, from the kernels' own masks, and what the windows cost); ``/light_cone``."""

from __future__ import annotations

import gradio as gr

from msc.app_common import AppModel, user_error
from msc.lightcone import cost_markdown, cost_table, light_cone, light_cone_image
from msc.plots import gate_heatmap

WINDOW_CONTROLS = ("k_s", "k_t", "d", "k_lo")


class ExplainTabs:
    """Handlers and layout of the Branch weights and Windows explained tabs."""

    def __init__(self, app: AppModel):
        self.app = app
        self.gates_figure = gate_heatmap(app.model) if app.config.attention == "msc" else None

    def cone(self, k_s, k_t, d, k_lo, frames, context, frame, y, x, layer):
        """The light cone of the query token ``(frame, y, x)`` in ``layer`` under the windows, and the cost table of a
        video of ``context + frames`` frames."""
        cfg = self.app.config
        settings = self.app.settings(dict(frames=frames, context=context, k_s=k_s, k_t=k_t, d=d, k_lo=k_lo))
        try:  # the API describes the layer as text ('0' … ), older clients send a number: both are read
            index = int(str(layer).strip())
        except ValueError:
            index = -1
        if not 0 <= index < cfg.depth:
            raise user_error(f"layer must be one of 0 … {cfg.depth - 1}, got {layer!r}.")
        r = cfg.low_res_factors[index] if cfg.low_res_factors else 1
        grid = cfg.grid
        with self.app.limited("cone"):
            try:
                cone = light_cone(settings.sampler.windows, grid, int(frame), int(min(y, grid - 1)), int(min(x, grid - 1)), r)
            except ValueError as err:
                raise user_error(str(err)) from None
            total = settings.context + settings.frames
            return light_cone_image(cone), cost_markdown(cost_table(cfg, settings.sampler.windows, total), total)

    def build(self, demo: gr.Blocks, controls: dict) -> None:
        """The two tabs (inside the app's ``gr.Blocks`` ``demo``); the light cone follows the Generate tab's
        ``controls`` (its windows, frames and context)."""
        cfg, grid = self.app.config, self.app.config.grid
        with gr.Tab("Branch weights"):
            gr.Markdown(
                "The Low-Res share of every layer's gate against the noise level, read from the trained "
                "weights. The paper argues that the coarse branch should matter more when frames are noisy. "
                "The plot under *Generate* shows the gates of the calls that made the current video."
            )
            gr.Plot(value=self.gates_figure, label="Learned gates", show_label=False, format="png")
        with gr.Tab("Windows explained"):
            gr.Markdown(
                "Pick a query token: the coloured tokens are the keys each branch attends to in the current "
                "and previous frames, from the same masks the attention kernels use. The window sliders are "
                "the ones under *Generate › Attention windows*."
            )
            with gr.Row():
                q_frame = gr.Slider(0, 32, value=8, step=1, label="Query frame")
                q_y = gr.Slider(0, grid - 1, value=grid // 2, step=1, label="Query row")
                q_x = gr.Slider(0, grid - 1, value=grid // 2, step=1, label="Query column")
                layer = gr.Dropdown([(f"layer {i} (r={r})", str(i)) for i, r in enumerate(cfg.low_res_factors)], value="0",
                                    label="Layer (Low-Res factor)", allow_custom_value=True)  # checked in cone()
            cone_plot = gr.Image(label="Light cone", show_label=False, type="numpy", format="png", interactive=False)
            cost = gr.Markdown()
        cone_inputs = [*(controls[n] for n in WINDOW_CONTROLS), controls["frames"], controls["context"], q_frame, q_y, q_x,
                       layer]
        for control in cone_inputs:
            control.change(self.cone, cone_inputs, [cone_plot, cost], api_visibility="private", trigger_mode="always_last",
                           queue=False)
        demo.load(self.cone, cone_inputs, [cone_plot, cost], api_name="light_cone", queue=False)
