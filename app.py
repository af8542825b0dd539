"""MSC video diffusion — Gradio app (placeholder until the app issue lands).

Serves on 127.0.0.1 (port from GRADIO_SERVER_PORT, default 7860), offline.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402


def build_app() -> gr.Blocks:
    with gr.Blocks(title="MSC video diffusion") as demo:
        gr.Markdown(
            "# MSC video diffusion\n"
            "Multi-scale spatio-temporal causal attention for autoregressive video diffusion. "
            "The generator is not bundled yet; this page will host it."
        )
    return demo


if __name__ == "__main__":
    build_app().launch(server_name="127.0.0.1", server_port=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
