"""MSC video diffusion — the Gradio app: ``python app.py`` in the repository, or ``msc-app`` once installed.

    python app.py                      # http://127.0.0.1:7860, offline, the bundled weights/
    python app.py --port 8000 --weights runs/small/final
    python app.py --host 0.0.0.0       # explicit opt-in to listen beyond this machine
    python app.py --share              # explicit opt-in to a public Gradio link (needs internet)

Tabs: *Generate / Extend* (extend a clip chunk by chunk with the KV-cached sampler), *Branch
weights* (the learned noise gates, paper §3), *Windows explained* (the keys one token attends to,
and what the windows cost). Named API endpoints (see docs/app.md): ``/extend``, ``/stream``,
``/generate`` (returns the video's session id), ``/continue`` and ``/undo`` (take it), ``/stop``, ``/light_cone``;
with a world model (``--world-weights``) the *Play* tab and ``/play_start`` / ``/play_step``.
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import signal
import sys
import threading
import time

import gradio as gr
import torch

from msc.api_app import ClipApi
from msc.app_common import (
    CHECKED_KINDS, AppModel, ClientRateLimit, bundled, evict_unread_when_full, refuse_bad_requests_in_one_line,
    report_refusals_as_user_errors,
)
from msc.environment import go_offline, keep_freed_memory
from msc.explain_app import ExplainTabs
from msc.generate_app import SESSION_IDLE_SECONDS, GenerateTab
from msc.model import MSCModel
from msc.sampling import load_presets

DEFAULT_WEIGHTS = bundled("weights")
WORLD_WEIGHTS = os.path.join(DEFAULT_WEIGHTS, "world") if os.path.isdir(os.path.join(DEFAULT_WEIGHTS, "world")) else None
MAX_FILE_SIZE = "64mb"


def load_model(weights: str) -> MSCModel:
    """The model from a local weights folder, with a clear error when it is not there."""
    folder = os.path.abspath(os.path.expanduser(weights))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"weights folder {folder} does not exist; pass --weights FOLDER (config.json + model.safetensors).")
    return MSCModel.from_pretrained(folder).eval()


class MSCApp(AppModel):
    """The app around one video model: its tabs (:class:`~msc.generate_app.GenerateTab`,
    :class:`~msc.explain_app.ExplainTabs`, with a world model :class:`~msc.play_app.PlayTab`) and its plain API
    (:class:`~msc.api_app.ClipApi`)."""

    def __init__(self, model: MSCModel, idle_seconds: float = SESSION_IDLE_SECONDS, world_model: MSCModel | None = None,
                 presets: dict | None = None, world_presets: dict | None = None):
        super().__init__(model, presets)
        self.generate_tab = GenerateTab(self, idle_seconds)
        self.explain = ExplainTabs(self)
        self.api = ClipApi(self)
        self.play = None  # the Play tab, with a world model (msc.play_app)
        if world_model is not None:
            from msc.play_app import PlayTab

            play = {"settings": world_presets["real-time"]} if world_presets else {}  # the world weights' own, for play
            self.play = PlayTab(world_model, out_dir=os.path.join(self.out_dir, "play"), **play)

    def start_sweeper(self, every_seconds: float = 30) -> threading.Thread:
        """Free idle sessions every ``every_seconds`` from now on (a daemon thread; :meth:`GenerateTab.sweep`)."""
        def sweep_forever():
            while True:
                time.sleep(every_seconds)
                self.generate_tab.sweep()

        thread = threading.Thread(target=sweep_forever, name="msc-session-sweeper", daemon=True)
        thread.start()
        return thread

    def build(self) -> gr.Blocks:
        cfg = self.config
        with gr.Blocks(title="MSC video diffusion", delete_cache=(3600, 3600)) as demo:
            gr.Markdown(
                "# MSC video diffusion\n"
                "Multi-scale spatio-temporal causal attention: every layer mixes a **High-Res** branch "
                "(local windows in space and time) and a **Low-Res** branch (pooled frames, far back in "
                "time), weighted by gates that depend on the noise level. Upload a clip or pick an "
                f"example; the model ({cfg.image_size}×{cfg.image_size} pixels, {cfg.grid}×{cfg.grid} tokens) "
                "continues it chunk by chunk with a bounded KV cache. *Continue* extends the result, "
                "*Undo* drops its last chunk."
            )
            controls = self.generate_tab.build(demo)
            self.explain.build(demo, controls)
            if self.play is not None:
                self.play.build()
            self.api.build()
        for block in demo.blocks.values():
            if isinstance(block, CHECKED_KINDS):
                report_refusals_as_user_errors(block)
        refuse_bad_requests_in_one_line(demo)
        self.blocks = demo
        return demo


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default=DEFAULT_WEIGHTS, help="folder with config.json + model.safetensors")
    p.add_argument("--world-weights", default=WORLD_WEIGHTS,
                   help="a world model (python -m msc.train --data world ... --set actions=5): adds the Play tab and the "
                        "/play_start, /play_step API (default: weights/world when it exists)")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (0.0.0.0: every interface, an explicit opt-in)")
    p.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    p.add_argument("--share", action="store_true", help="create a public gradio.live link (needs internet; opt-in)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: all cores)")
    p.add_argument("--queue-size", type=int, default=16, help="requests waiting beyond this are refused")
    return p.parse_args(argv)


def main(argv=None) -> int:
    go_offline()
    keep_freed_memory()
    args = parse_args(argv)
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    try:
        model = load_model(args.weights)
        world_model = load_model(args.world_weights) if args.world_weights else None
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if world_model is not None and not world_model.config.actions:
        print(f"error: {args.world_weights} is not a world model (its config has no actions).", file=sys.stderr)
        return 2
    try:
        presets = load_presets(os.path.abspath(os.path.expanduser(args.weights)))
        world_presets = load_presets(os.path.abspath(os.path.expanduser(args.world_weights))) if args.world_weights else None
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    app = MSCApp(model, world_model=world_model, presets=presets, world_presets=world_presets)
    app.start_sweeper()
    # the generated videos go when the server does: on Ctrl-C and on SIGTERM (which otherwise skips cleanup)
    atexit.register(shutil.rmtree, app.out_dir, ignore_errors=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"outputs in {app.out_dir} (removed at exit)", flush=True)
    demo = app.build()
    demo.queue(default_concurrency_limit=1, max_size=args.queue_size)
    evict_unread_when_full(demo)
    from starlette.middleware import Middleware

    from msc.play_app import KEYBOARD_HEAD

    demo.launch(server_name=args.host, server_port=args.port, share=args.share, max_file_size=MAX_FILE_SIZE,
                app_kwargs={"middleware": [Middleware(ClientRateLimit)]}, show_error=True, footer_links=["api"],
                head=KEYBOARD_HEAD if app.play is not None else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
