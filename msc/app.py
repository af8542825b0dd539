"""MSC video diffusion — the Gradio app: ``python app.py`` in the repository, or ``msc-app`` once installed.

    python app.py                      # http://127.0.0.1:7860, offline, the bundled weights/
    python app.py --port 8000 --weights runs/small/final
    python app.py --host 0.0.0.0       # explicit opt-in to listen beyond this machine
    python app.py --share              # explicit opt-in to a public Gradio link (needs internet)

Tabs: *Generate / Extend* (extend a clip chunk by chunk with the KV-cached sampler), *Branch
weights* (the learned noise gates, paper §3), *Windows explained* (the keys one token attends to,
and what the windows cost). Named API endpoints (see the README): ``/extend``, ``/stream``,
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
import tempfile
import threading
import time
import traceback
import uuid
from collections import Counter
from contextlib import contextmanager
from dataclasses import replace

import gradio as gr
import torch

from msc.environment import go_offline
from msc.lightcone import cost_markdown, cost_table, light_cone, light_cone_figure
from msc.model import MSCModel
from msc.plots import gate_heatmap, gates_over_generation
from msc.sampling import PRESETS, settings_fields, window_fields
from msc.studio import (
    CONTROLS, MAX_SESSION_FRAMES, REQUEST_RANGES, Session, SessionStore, Settings, UserError, control_range, frame_strip,
    decode_clip, live_frame, load_clip, model_frame_shape, prune_old_files, run_generation,
)
from msc.video import write_video

CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository, when run from it


def bundled(folder: str) -> str:
    """A folder the repository ships (``weights``, ``assets``): ``$MSC_WEIGHTS`` for the weights if set,
    else the one in the current folder, else the one next to the ``msc`` package (a checkout or an
    editable install). Absolute, so that ``from_pretrained`` reads it from disk."""
    if folder == "weights" and os.environ.get("MSC_WEIGHTS"):
        return os.path.abspath(os.environ["MSC_WEIGHTS"])
    here = os.path.abspath(folder)
    return here if os.path.isdir(here) else os.path.join(CHECKOUT, folder)


DEFAULT_WEIGHTS = bundled("weights")
WORLD_WEIGHTS = os.path.join(DEFAULT_WEIGHTS, "world") if os.path.isdir(os.path.join(DEFAULT_WEIGHTS, "world")) else None
ASSETS = bundled("assets")
CLIP_TYPES = [".mp4", ".webm", ".mov", ".gif", ".avi", ".mkv"]
FPS, DISPLAY_SCALE = 8, 4
SESSION_IDLE_SECONDS = 30 * 60
MAX_FILE_SIZE = "64mb"
GENERATE_LABELS = {False: "Generate from nothing", True: "Extend the clip"}  # by whether a clip is given


def status_only(status: str) -> tuple:
    """Outputs of /generate and /continue that change only the status line (video, strip, status,
    gates plot, live frame, session id)."""
    return gr.skip(), gr.skip(), status, gr.skip(), gr.skip(), gr.skip()


STOPPED_WHILE_WAITING = status_only("Stopped before it started: nothing was generated.")
STOPPED_WHILE_READING = status_only("Stopped while reading the clip: nothing was generated.")
DECODE_REPORT_SECONDS = 0.05  # while a clip decodes, a handler yields this often: where Gradio can cancel it


def load_model(weights: str) -> MSCModel:
    """The model from a local weights folder, with a clear error when it is not there."""
    folder = os.path.abspath(os.path.expanduser(weights))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"weights folder {folder} does not exist; pass --weights FOLDER (config.json + model.safetensors).")
    return MSCModel.from_pretrained(folder).eval()


def example_clips() -> list:
    if not os.path.isdir(ASSETS):
        return []
    return sorted(os.path.join(ASSETS, n) for n in os.listdir(ASSETS) if n.startswith("heldout") and n.endswith(".mp4"))


def user_error(message: str) -> gr.Error:
    """An error the user caused: shown to them, not logged as a traceback."""
    return gr.Error(message, print_exception=False)


def generation_failed(error: BaseException) -> gr.Error:
    """A failure inside the sampler: one line for the user, the traceback once in the server log."""
    traceback.print_exception(error)
    return gr.Error(f"generation failed ({type(error).__name__}); the server log has the details.", print_exception=False)


CHECKED_KINDS = (gr.Slider, gr.Number, gr.Radio, gr.Dropdown)


def report_refusals_as_user_errors(component) -> None:
    """Gradio refuses a value outside a control's range or choices with a logged traceback; this makes
    that refusal a user error naming the control. (A wrapper on the instance: subclassing a Gradio
    component would make Gradio write a ``.pyi`` file next to this module at import.)"""
    preprocess = component.preprocess

    def checked(payload):
        try:
            return preprocess(payload)
        except gr.Error as err:
            raise user_error(f"{component.label or 'a setting'}: {err.message}") from None

    component.preprocess = checked


def setting_control(f, value, grid: int):
    """The control of one settings field (:class:`~msc.sampling.SamplerSettings` or a window), made
    from its metadata: a radio for choices, a number box for the seed, else a slider over its range."""
    label = f"{f.name}: {f.metadata['help']}"
    if "choices" in f.metadata:
        return gr.Radio(list(f.metadata["choices"]), value=value, label=label)
    lo, hi, step = control_range(f.name, grid)
    if f.name == "seed":
        return gr.Number(value=value, precision=None, minimum=lo, maximum=hi, label=label)
    return gr.Slider(lo, hi, value=value, step=step, label=label)


class MSCApp:
    """The model, the per-tab sessions, the figures that do not change, and the event handlers."""

    def __init__(self, model: MSCModel, idle_seconds: float = SESSION_IDLE_SECONDS, world_model: MSCModel | None = None):
        self.model = model
        self.config = model.config
        self.out_dir = tempfile.mkdtemp(prefix="msc-app-")  # removed at exit (main)
        self.sessions = SessionStore(idle_seconds=idle_seconds)
        self.cancel_flags = {}  # session key -> threading.Event of its running generation
        self.stops = {}  # session key -> how many times Stop was pressed (a request waiting with an older count is dropped)
        self.queued = {}  # session key -> Counter: the ticket (Stop count when made) of each request waiting in the queue
        self.running = set()  # session ids with a generation running
        self.generating = set()  # Gradio session hashes (tabs, API clients) with a generation running
        self.tab_sessions = {}  # browser tab (Gradio's session hash) -> the id of its video's session
        self.gates_figure = gate_heatmap(model) if self.config.attention == "msc" else None
        self.defaults = Settings(sampler=replace(PRESETS["default"], windows=self.config.windows))
        self.play = None  # the Play tab, with a world model (msc.play_app)
        if world_model is not None:
            from msc.play_app import PlayTab

            self.play = PlayTab(world_model, out_dir=os.path.join(self.out_dir, "play"))
        threading.Thread(target=self._sweep_forever, name="msc-session-sweeper", daemon=True).start()

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def _key(request: gr.Request | None) -> str:
        return getattr(request, "session_hash", None) or "api"

    def _write(self, video: torch.Tensor, mark_from) -> str:
        prune_old_files(self.out_dir)
        path = os.path.join(self.out_dir, f"{uuid.uuid4().hex[:12]}.mp4")
        return write_video(path, video, fps=FPS, scale=DISPLAY_SCALE, mark_from=mark_from)

    def _cancel_flag(self, request: gr.Request | None) -> threading.Event:
        flag = self.cancel_flags.setdefault(self._key(request), threading.Event())
        flag.clear()
        return flag

    @contextmanager
    def _generating(self, request: gr.Request | None):
        """While this block runs the tab counts as generating: its Stop sets the flag this yields."""
        cancel, tab = self._cancel_flag(request), self._key(request)
        self.generating.add(tab)
        try:
            yield cancel
        finally:
            self.generating.discard(tab)

    def _decoding(self, clip, context: int, cancel: threading.Event | None, reading):
        """Decode ``clip``'s last ``context`` frames (:func:`msc.studio.decode_clip`), yielding the
        outputs ``reading(frames decoded so far)`` every :data:`DECODE_REPORT_SECONDS`: the points where
        Gradio can cancel (a closed tab, a client's ``job.cancel()``). Stop sets ``cancel``, looked at
        after every decoded frame. Returns the frames ``[K, C, H, W]``, or ``None`` when stopped."""
        steps = decode_clip(clip, self.config, context)
        reported = time.monotonic()
        try:
            while True:
                try:
                    decoded = next(steps)
                except StopIteration as done:
                    return done.value
                if cancel is not None and cancel.is_set():
                    return None
                if time.monotonic() - reported >= DECODE_REPORT_SECONDS:
                    reported = time.monotonic()
                    yield reading(decoded)
        except UserError as err:
            raise user_error(str(err)) from None
        finally:
            steps.close()  # stops ffmpeg at once

    def _settings(self, values: dict) -> Settings:
        """Checked settings from controls by name (the others keep the defaults)."""
        try:
            return Settings.from_controls(values, self.defaults, self.config.grid)
        except UserError as err:
            raise user_error(str(err)) from None

    def _show(self, session: Session, status: str, mark: bool = True):
        """Outputs of a finished request: video, frame strip, status, gates plot."""
        if session.video is None or session.frames == 0:  # nothing yet, or every frame undone
            return None, None, status, None
        mark_from = session.first_generated if mark else None
        path = self._write(session.video, mark_from)
        strip = frame_strip(session.video, session.first_generated, mark=mark)
        plot = gates_over_generation(session.gates) if session.gates and self.config.attention == "msc" else None
        return path, strip, status, plot

    # ------------------------------------------------------------------ handlers

    def preview_clip(self, clip, context):
        """Show the frames the model will be conditioned on, as it sees them, and what Generate will do."""
        if not clip:
            return None, "No clip: **Generate** samples a video from nothing.", gr.update(value=GENERATE_LABELS[False])
        try:
            frames = load_clip(clip, self.config, int(context or 1))
        except UserError as err:
            raise user_error(str(err)) from None
        path = self._write(frames, None)
        size = self.config.image_size
        return (path, f"{frames.shape[0]} context frames at {size}×{size} (the clip's last ones, centre-cropped): "
                f"**{GENERATE_LABELS[True]}** continues them.", gr.update(value=GENERATE_LABELS[True]))

    # Gradio injects ``request`` and ``progress`` into the leading positional parameters; the
    # controls follow as ``*values`` in the order of :data:`msc.studio.CONTROLS` and are read by name.

    def take_ticket(self, request: gr.Request = None) -> int:
        """Runs (unqueued) when Generate / Continue is clicked: the tab's Stop count at that moment."""
        key = self._key(request)
        ticket = self.stops.get(key, 0)
        self.queued.setdefault(key, Counter())[ticket] += 1
        return ticket

    def _stopped_while_waiting(self, ticket, request) -> bool:
        """Whether Stop was pressed after this request was made and before it started (``ticket``:
        from :meth:`take_ticket`; ``None`` for API calls, which cancel with their client)."""
        if ticket is None:
            return False
        key = self._key(request)
        tickets = self.queued.get(key, Counter())
        tickets[ticket] -= 1
        if tickets[ticket] <= 0:
            del tickets[ticket]
        return ticket != self.stops.get(key, 0)

    def generate(self, request: gr.Request = None, progress=gr.Progress(), ticket=None, clip=None, *values):
        """Start a video from ``clip`` (or from nothing without one) and extend it, showing every frame
        as it is finished. Outputs end with the video's session id (for /continue and /undo); a browser
        tab keeps one session, restarted by each Generate."""
        if self._stopped_while_waiting(ticket, request):
            yield STOPPED_WHILE_WAITING
            return
        settings = self._settings(dict(zip(CONTROLS, values)))
        with self._generating(request) as cancel:
            context = torch.zeros(0, *model_frame_shape(self.model))
            if clip:
                context = yield from self._decoding(clip, settings.context, cancel,
                                                    lambda n: status_only(f"Reading the clip: {n} frames decoded…"))
                if context is None:
                    yield STOPPED_WHILE_READING
                    return
            from_tab = ticket is not None
            key = self.tab_sessions.get(self._key(request)) if from_tab else None
            if key not in self.sessions:
                key = self.sessions.create("tab" if from_tab else "api")
                if from_tab:
                    self.tab_sessions[self._key(request)] = key
            session = self.sessions.get(key)
            session.start(context)
            yield from self._extend(key, session, settings, "Generated", progress, cancel)

    def continue_(self, request: gr.Request = None, progress=gr.Progress(), ticket=None, session_id="", *values):
        """Extend the video of ``session_id`` (its last ``context`` frames condition the new ones)."""
        if self._stopped_while_waiting(ticket, request):
            yield STOPPED_WHILE_WAITING
            return
        settings = self._settings(dict(zip(CONTROLS, values)))
        if not session_id:
            raise user_error("nothing to continue yet: press Generate first (no session id: pass the one /generate returned).")
        session = self._session(session_id)
        if session.video is None:
            raise user_error("nothing to continue yet: press Generate first.")
        with self._generating(request) as cancel:
            yield from self._extend(session_id, session, settings, "Continued with", progress, cancel)

    def undo(self, session_id="", mark=True):
        """Drop the last generated chunk of the video of ``session_id``."""
        if session_id in self.running:
            raise user_error("a generation is running: wait for it or press Stop, then Undo.")
        session = self._session(session_id)
        try:
            removed = session.undo()
        except UserError as err:
            raise user_error(str(err)) from None
        left = session.frames - session.first_generated
        return (*self._show(session, f"Undid the last chunk ({removed} frames); {left} generated frames left.", bool(mark)),
                gr.skip(), session_id)

    def _session(self, session_id):
        try:
            return self.sessions.get(session_id)
        except UserError as err:
            raise user_error(str(err)) from None

    def _extend(self, key: str, session: Session, settings: Settings, verb: str, progress, cancel: threading.Event):
        try:
            context, offset = session.context(settings.context)
            if session.frames + settings.frames > MAX_SESSION_FRAMES:
                raise UserError(f"the video would exceed {MAX_SESSION_FRAMES} frames; Undo, or start again with Generate.")
        except UserError as err:
            raise user_error(str(err)) from None
        self.running.add(key)
        try:
            for outputs in self._run(session, settings, verb, progress, context, offset, cancel):
                yield (*outputs, key)
        finally:
            self.running.discard(key)

    def _run(self, session: Session, settings: Settings, verb: str, progress, context, offset, cancel):
        k, before = context.shape[0], session.frames
        progress(0, desc="starting")
        start, first_frame_s = time.perf_counter(), None
        for update in run_generation(self.model, context if k else None, settings, cancel, frame_offset=offset):
            if update.kind == "step":
                progress((update.call, update.calls), desc=update.describe(settings, k), unit="model calls")
            elif update.kind == "frame":
                elapsed = time.perf_counter() - start
                first_frame_s = elapsed if first_frame_s is None else first_frame_s
                status = (f"Live: frame {offset + update.index + 1} ({update.finished}/{settings.frames} new) · "
                          f"{update.finished / elapsed:.1f} frames/s · first frame after {first_frame_s:.1f} s")
                yield gr.skip(), gr.skip(), status, gr.skip(), live_frame(update.frame, DISPLAY_SCALE, settings.mark)
            elif update.kind == "frames":
                session.add_chunk(update.video[k + session.frames - before:])
                strip = frame_strip(session.video, session.first_generated, mark=settings.mark)
                yield gr.skip(), strip, gr.skip(), gr.skip(), gr.skip()
            elif update.kind == "error":
                raise generation_failed(update.error)
            else:
                new = session.frames - before
                if update.kind == "done":
                    session.add_gates(update.result.gates, offset)
                    status = (f"{verb} {new} frames after {k} context frames ({update.result.model_calls} model calls); "
                              f"the video has {session.frames} frames.")
                else:
                    status = f"Stopped: kept the {new} frames finished before Stop."
                if new:
                    elapsed = time.perf_counter() - start
                    status += f" {new / elapsed:.1f} frames/s, first frame after {first_frame_s:.1f} s."
                yield (*self._show(session, status, settings.mark), gr.skip())
                return

    def stop(self, request: gr.Request = None):
        """Stop this tab's running generation after its current denoising step (keeping the finished
        frames) and drop its requests still waiting in the queue."""
        key = self._key(request)
        pressed = self.stops.get(key, 0)
        self.stops[key] = pressed + 1
        waiting = self.queued.get(key, Counter())[pressed]  # made since the last Stop: dropped now
        flag = self.cancel_flags.get(key)
        if key in self.generating and flag is not None:
            flag.set()
            return "Stopping after the current denoising step…" + (f" ({waiting} waiting request(s) dropped)" if waiting else "")
        if waiting:
            return f"Dropped {waiting} waiting request(s); nothing was running."
        return "Nothing is running."

    def close_tab(self, request: gr.Request = None):
        """The tab closed (or its connection dropped): free its video unless it reconnects soon."""
        tab = self._key(request)
        self.queued.pop(tab, None)  # Gradio drops the requests a closed tab left in the queue
        key = self.tab_sessions.get(tab)
        if key is not None:
            self.sessions.close(key)

    def sweep(self) -> None:
        """Free the idle sessions, then forget the tabs that have neither a live session, a generation
        running nor a request waiting in the queue (a waiting request needs its tab's Stop count)."""
        self.sessions.sweep()
        keep = {tab for tab, key in self.tab_sessions.items() if key in self.sessions} | self.generating
        keep |= {tab for tab, tickets in self.queued.items() if tickets}
        for table in (self.cancel_flags, self.stops, self.queued, self.tab_sessions):
            for tab in [t for t in table if t not in keep]:
                table.pop(tab, None)

    def _sweep_forever(self, every_seconds: float = 30) -> None:
        while True:
            time.sleep(every_seconds)
            self.sweep()

    def extend(self, clip, frames, steps=PRESETS["default"].steps, chunk=PRESETS["default"].chunk, seed=0):
        """API: extend a clip by ``frames`` frames with the default settings; returns the mp4 (context + new).
        A generator that reports nothing until the end (its intermediate outputs are updates without
        a value): between two decoded frames or two denoising steps Gradio can cancel it (a client's
        ``job.cancel()``, or a client that went away)."""
        settings = self._settings(dict(frames=frames, steps=steps, chunk=chunk, seed=seed))
        context = yield from self._decoding(clip, settings.context, None, lambda n: gr.skip())
        for update in run_generation(self.model, context, settings, threading.Event()):
            if update.kind == "error":
                raise generation_failed(update.error)
            if update.kind == "done":
                yield self._write(update.video, context.shape[0])
            else:
                yield gr.skip()

    def apply_preset(self, name):
        """The sampler controls set to a preset (windows and the request's own controls stay)."""
        preset = PRESETS[name]
        return [getattr(preset, f.name) for f in settings_fields()]

    def stream(self, clip, frames, steps=PRESETS["real-time"].steps, seed=0, chunk=PRESETS["real-time"].chunk):
        """API (a generator): extend ``clip`` (or generate from nothing when it is None) at the real-time
        preset (``steps`` and ``chunk`` override its own) and yield every finished frame as a PNG image with a
        status line, as soon as it is finished. In between, it yields the status alone (the image
        unchanged: an update without a value) while the clip decodes and after every denoising step:
        the points where a client's ``job.cancel()`` ends it."""
        fast = replace(self.defaults, sampler=replace(PRESETS["real-time"], windows=self.config.windows))
        try:
            settings = Settings.from_controls(dict(frames=frames, steps=steps, chunk=chunk, seed=seed), fast, self.config.grid)
        except UserError as err:
            raise user_error(str(err)) from None
        context = None
        if clip:
            context = yield from self._decoding(clip, settings.context, None, lambda n: (gr.skip(), f"reading the clip: {n} frames decoded"))
        k, finished, start = 0 if context is None else context.shape[0], 0, time.perf_counter()
        for update in run_generation(self.model, context, settings, threading.Event()):
            if update.kind == "error":
                raise generation_failed(update.error)
            if update.kind == "step":
                yield gr.skip(), f"{finished}/{settings.frames} frames · {update.describe(settings, k)}"
            elif update.kind == "frame":
                finished, elapsed = update.finished, time.perf_counter() - start
                yield (live_frame(update.frame, DISPLAY_SCALE, settings.mark),
                       f"frame {update.finished}/{settings.frames} · {update.finished / elapsed:.2f} frames/s")

    def cone(self, k_s, k_t, d, k_lo, frames, context, frame, y, x, layer):
        settings = self._settings(dict(frames=frames, context=context, k_s=k_s, k_t=k_t, d=d, k_lo=k_lo))
        depth = self.config.depth
        try:  # the API describes the layer as text ('0' … ), older clients send a number: both are read
            index = int(str(layer).strip())
        except ValueError:
            index = -1
        if not 0 <= index < depth:
            raise user_error(f"layer must be one of 0 … {depth - 1}, got {layer!r}.")
        r = self.config.low_res_factors[index] if self.config.low_res_factors else 1
        grid = self.config.grid
        try:
            cone = light_cone(settings.sampler.windows, grid, int(frame), int(min(y, grid - 1)), int(min(x, grid - 1)), r)
        except ValueError as err:
            raise user_error(str(err)) from None
        total = settings.context + settings.frames
        return light_cone_figure(cone), cost_markdown(cost_table(self.config, settings.sampler.windows, total), total)

    # ------------------------------------------------------------------ layout

    def build(self) -> gr.Blocks:
        cfg, d, ds = self.config, self.defaults, self.defaults.sampler
        grid = cfg.grid
        with gr.Blocks(title="MSC video diffusion", delete_cache=(3600, 3600)) as demo:
            gr.Markdown(
                "# MSC video diffusion\n"
                "Multi-scale spatio-temporal causal attention: every layer mixes a **High-Res** branch "
                "(local windows in space and time) and a **Low-Res** branch (pooled frames, far back in "
                "time), weighted by gates that depend on the noise level. Upload a clip or pick an "
                f"example; the model ({cfg.image_size}×{cfg.image_size} pixels, {grid}×{grid} tokens) "
                "continues it chunk by chunk with a bounded KV cache. *Continue* extends the result, "
                "*Undo* drops its last chunk."
            )
            with gr.Tab("Generate / Extend"):
                with gr.Row():
                    with gr.Column(scale=1):
                        clip = gr.File(label="Clip to extend (mp4, webm, mov, gif)", file_types=CLIP_TYPES, type="filepath")
                        if example_clips():
                            gr.Examples(example_clips(), inputs=[clip], label="Held-out example clips")
                        context_view = gr.Video(label="Context the model sees", interactive=False, height=200, autoplay=True, loop=True)
                        context_info = gr.Markdown()
                        frames = gr.Slider(*REQUEST_RANGES["frames"][:2], value=d.frames, step=1, label="Frames to generate")
                        context = gr.Slider(*REQUEST_RANGES["context"][:2], value=d.context, step=1,
                                            label="Context frames (the last frames the model is conditioned on)")
                        with gr.Row():
                            generate_btn = gr.Button(GENERATE_LABELS[False], variant="primary")
                            stop_btn = gr.Button("Stop", variant="stop")
                        with gr.Row():
                            continue_btn = gr.Button("Continue")
                            undo_btn = gr.Button("Undo last chunk")
                        preset = gr.Radio(list(PRESETS), value="default", label="Preset (sets the sampler controls below)")
                        controls = dict(frames=frames, context=context)
                        with gr.Accordion("Sampler", open=False):
                            for f in settings_fields():
                                controls[f.name] = setting_control(f, getattr(ds, f.name), grid)
                        with gr.Accordion("Attention windows (sampling-time settings)", open=False):
                            for f in window_fields():
                                controls[f.name] = setting_control(f, getattr(ds.windows, f.name), grid)
                        controls["mark"] = gr.Checkbox(value=d.mark, label="Mark generated frames with a magenta border")
                    with gr.Column(scale=1):
                        live = gr.Image(label="Live: every frame as soon as it is finished", interactive=False, type="numpy",
                                        height=288, show_label=True)
                        output = gr.Video(label="Context + generated", interactive=False, autoplay=True, loop=True, height=320)
                        strip = gr.Image(label="Latest frames (updates as each chunk finishes)", interactive=False, type="numpy")
                        status = gr.Markdown()
                        run_plot = gr.Plot(label="Gates while generating this video", show_label=False, format="png")  # the figure has its title
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
                cone_plot = gr.Plot(label="Light cone", show_label=False, format="png")
                cost = gr.Markdown()
            if self.play is not None:
                self.play.build()

            settings_inputs = [controls[name] for name in CONTROLS]
            session_box = gr.Textbox(label="Session id (for /continue and /undo)", visible=False)
            shown = [output, strip, status, run_plot, live, session_box]
            sampler = dict(concurrency_limit=1, concurrency_id="sampler", show_progress_on=[output])
            # Only generations are queued (one at a time, the queue's bound counts only them); everything
            # cheap runs unqueued, so it never waits behind a generation nor meets "busy".
            ticket = gr.State(None)  # the tab's Stop count when a request was made (see take_ticket)
            for control in (clip, context):  # the preview follows the clip and the number of context frames
                control.change(self.preview_clip, [clip, context], [context_view, context_info, generate_btn],
                               api_visibility="private", queue=False, trigger_mode="always_last")
            generate_btn.click(self.take_ticket, None, ticket, queue=False, api_visibility="private").then(
                self.generate, [ticket, clip, *settings_inputs], shown, api_name="generate", **sampler)
            continue_btn.click(self.take_ticket, None, ticket, queue=False, api_visibility="private").then(
                self.continue_, [ticket, session_box, *settings_inputs], shown, api_name="continue", **sampler)
            undo_btn.click(self.undo, [session_box, controls["mark"]], shown, api_name="undo", queue=False)
            stop_btn.click(self.stop, None, [status], api_name="stop", queue=False)
            demo.unload(self.close_tab)
            preset_controls = [controls[f.name] for f in settings_fields()]
            preset.change(self.apply_preset, [preset], preset_controls, api_visibility="private", queue=False)
            cone_inputs = [*(controls[n] for n in ("k_s", "k_t", "d", "k_lo")), frames, context, q_frame, q_y, q_x, layer]
            for control in cone_inputs:
                control.change(self.cone, cone_inputs, [cone_plot, cost], api_visibility="private", trigger_mode="always_last",
                               queue=False)
            demo.load(self.cone, cone_inputs, [cone_plot, cost], api_name="light_cone", queue=False)

            with gr.Row(visible=False):  # the plain API endpoint, no UI
                api_clip = gr.File(file_types=CLIP_TYPES, type="filepath")
                api_frames = gr.Number(label="frames", value=d.frames, precision=None)
                api_steps = gr.Number(label="steps", value=ds.steps, precision=None)
                api_chunk = gr.Number(label="chunk", value=ds.chunk, precision=None)
                api_seed = gr.Number(label="seed", value=ds.seed, precision=None)
                api_out = gr.Video()
                api_btn = gr.Button()
            api_btn.click(self.extend, [api_clip, api_frames, api_steps, api_chunk, api_seed], [api_out],
                          api_name="extend", concurrency_limit=1, concurrency_id="sampler")
            with gr.Row(visible=False):  # the streaming API endpoint, no UI
                stream_steps = gr.Number(label="steps", value=PRESETS["real-time"].steps, precision=None)
                stream_chunk = gr.Number(label="chunk", value=PRESETS["real-time"].chunk, precision=None)
                stream_frame = gr.Image(type="filepath", format="png")
                stream_status = gr.Textbox()
                stream_btn = gr.Button()
            stream_btn.click(self.stream, [api_clip, api_frames, stream_steps, api_seed, stream_chunk], [stream_frame, stream_status],
                             api_name="stream", concurrency_limit=1, concurrency_id="sampler")
        for block in demo.blocks.values():
            if isinstance(block, CHECKED_KINDS):
                report_refusals_as_user_errors(block)
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
    app = MSCApp(model, world_model=world_model)
    # the generated videos go when the server does: on Ctrl-C and on SIGTERM (which otherwise skips cleanup)
    atexit.register(shutil.rmtree, app.out_dir, ignore_errors=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"outputs in {app.out_dir} (removed at exit)", flush=True)
    demo = app.build()
    demo.queue(default_concurrency_limit=1, max_size=args.queue_size)
    from msc.play_app import KEYBOARD_HEAD

    demo.launch(server_name=args.host, server_port=args.port, share=args.share, max_file_size=MAX_FILE_SIZE,
                show_error=True, footer_links=["api"], head=KEYBOARD_HEAD if app.play is not None else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
