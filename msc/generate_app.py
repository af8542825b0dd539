"""The app's *Generate / Extend* tab: a video per browser tab (or API session), extended chunk by chunk, every frame
shown live, with Continue, Undo and Stop; the ``/generate``, ``/continue``, ``/undo`` and ``/stop`` API.

Generations are queued one at a time (Gradio's queue, concurrency id ``sampler``); :class:`StopPolicy` decides
what a tab's Stop ends: its running generation after the current denoising step, and its requests still waiting.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import replace

import gradio as gr
import torch

from msc.app_common import (
    CLIP_TYPES, DISPLAY_SCALE, AppModel, bundled, generation_failed, setting_control, user_error,
)
from msc.plots import gates_over_generation
from msc.sampling import FrameEvent, StepEvent, settings_fields, window_fields
from msc.studio import (
    CONTROLS, MAX_SESSION_FRAMES, REQUEST_RANGES, ChunkEvent, Session, SessionStore, Settings, UserError, describe_step,
    frame_strip, generation, live_frame, load_clip, model_frame_shape,
)
from msc.video import lowest_priority

ASSETS = bundled("assets")
SESSION_IDLE_SECONDS = 30 * 60
GENERATE_LABELS = {False: "Generate from nothing", True: "Extend the clip"}  # by whether a clip is given


def status_only(status: str) -> tuple:
    """Outputs of /generate and /continue that change only the status line (video, strip, status,
    gates plot, live frame, session id)."""
    return gr.skip(), gr.skip(), status, gr.skip(), gr.skip(), gr.skip()


STOPPED_WHILE_WAITING = status_only("Stopped before it started: nothing was generated.")
STOPPED_WHILE_READING = status_only("Stopped while reading the clip: nothing was generated.")


def example_clips() -> list:
    if not os.path.isdir(ASSETS):
        return []
    return sorted(os.path.join(ASSETS, n) for n in os.listdir(ASSETS) if n.startswith("heldout") and n.endswith(".mp4"))


def tab_key(request: gr.Request | None) -> str:
    """The browser tab (Gradio's session hash) a request came from; ``"api"`` for API clients."""
    return getattr(request, "session_hash", None) or "api"


class StopPolicy:
    """What each tab's Stop ends. A request takes a *ticket* (the tab's Stop count) when its button is clicked; a
    request whose ticket is older than the count when it starts was stopped while it waited, and is dropped. A
    running generation looks at its tab's cancel flag between denoising steps."""

    def __init__(self):
        self.cancel_flags = {}  # tab -> threading.Event of its running generation
        self.stops = {}  # tab -> how many times Stop was pressed (a request waiting with an older count is dropped)
        self.queued = {}  # tab -> Counter: the ticket (Stop count when made) of each request waiting in the queue
        self.generating = set()  # tabs (and API clients) with a generation running

    def take_ticket(self, request: gr.Request = None) -> int:
        """Runs (unqueued) when Generate / Continue is clicked: the tab's Stop count at that moment."""
        key = tab_key(request)
        ticket = self.stops.get(key, 0)
        self.queued.setdefault(key, Counter())[ticket] += 1
        return ticket

    def stopped_while_waiting(self, ticket, request) -> bool:
        """Whether Stop was pressed after this request was made and before it started (``ticket``:
        from :meth:`take_ticket`; ``None`` for API calls, which cancel with their client)."""
        if ticket is None:
            return False
        key = tab_key(request)
        tickets = self.queued.get(key, Counter())
        tickets[ticket] -= 1
        if tickets[ticket] <= 0:
            del tickets[ticket]
        return ticket != self.stops.get(key, 0)

    @contextmanager
    def generating_in(self, request: gr.Request | None):
        """While this block runs the tab counts as generating: its Stop sets the flag this yields."""
        tab = tab_key(request)
        cancel = self.cancel_flags.setdefault(tab, threading.Event())
        cancel.clear()
        self.generating.add(tab)
        try:
            yield cancel
        finally:
            self.generating.discard(tab)

    def stop(self, request: gr.Request = None) -> str:
        """Stop this tab's running generation after its current denoising step (keeping the finished
        frames) and drop its requests still waiting in the queue."""
        key = tab_key(request)
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

    def forget(self, keep: set) -> set:
        """Forget every tab but ``keep`` and those generating or with a request still waiting (a waiting request
        needs its tab's Stop count); returns the tabs kept."""
        keep = keep | self.generating | {tab for tab, tickets in self.queued.items() if tickets}
        for table in (self.cancel_flags, self.stops, self.queued):
            for tab in [t for t in table if t not in keep]:
                table.pop(tab, None)
        return keep


class GenerateTab:
    """Handlers and layout of the Generate / Extend tab: the per-tab videos (:class:`msc.studio.SessionStore`) and
    their Stop policy."""

    def __init__(self, app: AppModel, idle_seconds: float = SESSION_IDLE_SECONDS):
        self.app = app
        self.sessions = SessionStore(idle_seconds=idle_seconds)
        self.policy = StopPolicy()
        self.running = set()  # session ids with a generation running
        self.tab_sessions = {}  # browser tab (Gradio's session hash) -> the id of its video's session

    def _show(self, session: Session, status: str, mark: bool = True):
        """Outputs of a finished request: video, frame strip, status, gates plot."""
        if session.video is None or session.frames == 0:  # nothing yet, or every frame undone
            return None, None, status, None
        path = self.app.write(session.video, session.first_generated if mark else None)
        strip = frame_strip(session.video, session.first_generated, mark=mark)
        plot = gates_over_generation(session.gates) if session.gates and self.app.config.attention == "msc" else None
        return path, strip, status, plot

    def preview_clip(self, clip, context):
        """Show the frames the model will be conditioned on, as it sees them, and what Generate will do."""
        if not clip:
            return None, "No clip: **Generate** samples a video from nothing.", gr.update(value=GENERATE_LABELS[False])
        try:
            # the decode and the preview's own mp4, in one slot and at the lowest priority: a flood of previews holds
            # one slot, not the cores, and never slows a generation
            with self.app.limited("preview"), lowest_priority():
                frames = load_clip(clip, self.app.config, int(context or 1))
                path = self.app.write(frames, None)
        except UserError as err:
            raise user_error(str(err)) from None
        size = self.app.config.image_size
        return (path, f"{frames.shape[0]} context frames at {size}×{size} (the clip's last ones, "
                f"centre-cropped): **{GENERATE_LABELS[True]}** continues them.", gr.update(value=GENERATE_LABELS[True]))

    # Gradio injects ``request`` and ``progress``; the controls (:data:`msc.studio.CONTROLS`) arrive by name, so the
    # API names every one of them and a new setting never moves a client's arguments.

    def generate(self, request: gr.Request = None, progress=gr.Progress(), ticket=None, clip=None, **controls):
        """Start a video from ``clip`` (or from nothing without one) and extend it, showing every frame
        as it is finished. Outputs end with the video's session id (for /continue and /undo); a browser
        tab keeps one session, restarted by each Generate."""
        if self.policy.stopped_while_waiting(ticket, request):
            yield STOPPED_WHILE_WAITING
            return
        self.app.drop_unread(request)
        settings = self.app.settings(controls)
        with self.policy.generating_in(request) as cancel:
            context = torch.zeros(0, *model_frame_shape(self.app.model))
            if clip:
                context = yield from self.app.decoding(clip, settings.context, cancel,
                                                       lambda n: status_only(f"Reading the clip: {n} frames decoded…"))
                if context is None:
                    yield STOPPED_WHILE_READING
                    return
            from_tab = ticket is not None
            key = self.tab_sessions.get(tab_key(request)) if from_tab else None
            if key not in self.sessions:
                try:
                    key = self.sessions.create("tab" if from_tab else "api")
                except UserError as err:
                    raise user_error(str(err)) from None
                if from_tab:
                    self.tab_sessions[tab_key(request)] = key
            session = self.sessions.get(key)
            session.start(context)
            yield from self._extend(key, session, settings, "Generated", progress, cancel)

    def continue_(self, request: gr.Request = None, progress=gr.Progress(), ticket=None, session_id="", **controls):
        """Extend the video of ``session_id`` (its last ``context`` frames condition the new ones)."""
        if self.policy.stopped_while_waiting(ticket, request):
            yield STOPPED_WHILE_WAITING
            return
        self.app.drop_unread(request)
        settings = self.app.settings(controls)
        if not session_id:
            raise user_error("nothing to continue yet: press Generate first (no session id: pass the one /generate returned).")
        session = self._session(session_id)
        if session.video is None:
            raise user_error("nothing to continue yet: press Generate first.")
        if session.frames > session.first_generated:  # the video's first chunk is behind it: its chunks follow on, so
            settings = replace(settings, sampler=replace(settings.sampler, first_chunk=0))  # Undo, Continue: same frames
        with self.policy.generating_in(request) as cancel:
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
        result = None
        try:
            for event in generation(self.app.model, context if k else None, settings, frame_offset=offset):
                if isinstance(event, StepEvent):
                    progress((event.call, event.calls), desc=describe_step(event, settings, k), unit="model calls")
                elif isinstance(event, FrameEvent):
                    elapsed = time.perf_counter() - start
                    first_frame_s = elapsed if first_frame_s is None else first_frame_s
                    status = (f"Live: frame {offset + event.index + 1} ({event.finished}/{settings.frames} new) · "
                              f"{event.finished / elapsed:.1f} frames/s · first frame after {first_frame_s:.1f} s")
                    yield gr.skip(), gr.skip(), status, gr.skip(), live_frame(event.frame[0], DISPLAY_SCALE, settings.mark)
                elif isinstance(event, ChunkEvent):
                    session.add_chunk(event.video[k + session.frames - before:])
                    strip = frame_strip(session.video, session.first_generated, mark=settings.mark)
                    yield gr.skip(), strip, gr.skip(), gr.skip(), gr.skip()
                else:
                    result = event.result
                if cancel.is_set():  # Stop: no model call runs after this event
                    break
        except Exception as err:
            raise generation_failed(err) from None
        new = session.frames - before
        if result is not None:
            session.add_gates(result.gates, offset)
            status = (f"{verb} {new} frames after {k} context frames ({result.model_calls} model calls); "
                      f"the video has {session.frames} frames.")
        else:
            status = f"Stopped: kept the {new} frames finished before Stop."
        if new:
            elapsed = time.perf_counter() - start
            status += f" {new / elapsed:.1f} frames/s, first frame after {first_frame_s:.1f} s."
        yield (*self._show(session, status, settings.mark), gr.skip())

    def close_tab(self, request: gr.Request = None):
        """The tab closed (or its connection dropped): free its video unless it reconnects soon."""
        tab = tab_key(request)
        self.policy.queued.pop(tab, None)  # Gradio drops the requests a closed tab left in the queue
        key = self.tab_sessions.get(tab)
        if key is not None:
            self.sessions.close(key)

    def sweep(self) -> None:
        """Free the idle sessions, then forget the tabs that have neither a live session, a generation
        running nor a request waiting in the queue."""
        self.sessions.sweep()
        kept = self.policy.forget({tab for tab, key in self.tab_sessions.items() if key in self.sessions})
        for tab in [t for t in self.tab_sessions if t not in kept]:
            self.tab_sessions.pop(tab, None)

    def apply_preset(self, name):
        """The sampler controls set to a preset (windows and the request's own controls stay)."""
        return [getattr(self.app.presets[name], f.name) for f in settings_fields()]

    def build(self, demo: gr.Blocks) -> dict:
        """The tab's components and events (inside the app's ``gr.Blocks`` ``demo``); returns its controls by name."""
        with gr.Tab("Generate / Extend"):
            with gr.Row():
                with gr.Column(scale=1):
                    inputs = self._inputs()
                with gr.Column(scale=1):
                    live = gr.Image(label="Live: every frame as soon as it is finished", interactive=False, type="numpy",
                                    height=288, show_label=True)
                    output = gr.Video(label="Context + generated", interactive=False, autoplay=True, loop=True, height=320)
                    strip = gr.Image(label="Latest frames (updates as each chunk finishes)", interactive=False, type="numpy")
                    status = gr.Markdown()
                    run_plot = gr.Plot(label="Gates while generating this video", show_label=False, format="png")  # has its title
        controls, clip, buttons = inputs["controls"], inputs["clip"], inputs["buttons"]
        by_name = {name: controls[name] for name in CONTROLS}
        session_box = gr.Textbox(label="Session id (for /continue and /undo)", visible=False)
        shown = [output, strip, status, run_plot, live, session_box]
        sampler = dict(concurrency_limit=1, concurrency_id="sampler", show_progress_on=[output])
        # Only generations are queued (one at a time, the queue's bound counts only them); everything
        # cheap runs unqueued, so it never waits behind a generation nor meets "busy".
        ticket = gr.State(None)  # the tab's Stop count when a request was made (see StopPolicy)
        for control in (clip, controls["context"]):  # the preview follows the clip and the number of context frames
            control.change(self.preview_clip, [clip, controls["context"]], [inputs["context_view"], inputs["context_info"],
                           buttons["generate"]], api_visibility="private", queue=False, trigger_mode="always_last")
        buttons["generate"].click(self.policy.take_ticket, None, ticket, queue=False, api_visibility="private").then(
            self.generate, [ticket, clip], shown, inputs_kwargs=by_name, api_name="generate", **sampler)
        buttons["continue"].click(self.policy.take_ticket, None, ticket, queue=False, api_visibility="private").then(
            self.continue_, [ticket, session_box], shown, inputs_kwargs=by_name, api_name="continue", **sampler)
        buttons["undo"].click(self.undo, [session_box, controls["mark"]], shown, api_name="undo", queue=False)
        buttons["stop"].click(self.policy.stop, None, [status], api_name="stop", queue=False)
        demo.unload(self.close_tab)
        inputs["preset"].change(self.apply_preset, [inputs["preset"]], [controls[f.name] for f in settings_fields()],
                                api_visibility="private", queue=False)
        return controls

    def _inputs(self) -> dict:
        """The left column: the clip and its preview, the buttons, the request's and the sampler's controls."""
        d, ds, grid = self.app.defaults, self.app.defaults.sampler, self.app.config.grid
        clip = gr.File(label="Clip to extend (mp4, webm, mov, gif)", file_types=CLIP_TYPES, type="filepath")
        if example_clips():
            gr.Examples(example_clips(), inputs=[clip], label="Held-out example clips")
        context_view = gr.Video(label="Context the model sees", interactive=False, height=200, autoplay=True, loop=True)
        context_info = gr.Markdown()
        controls = dict(frames=gr.Slider(*REQUEST_RANGES["frames"][:2], value=d.frames, step=1, label="Frames to generate"),
                        context=gr.Slider(*REQUEST_RANGES["context"][:2], value=d.context, step=1,
                                          label="Context frames (the last frames the model is conditioned on)"))
        with gr.Row():
            buttons = dict(generate=gr.Button(GENERATE_LABELS[False], variant="primary"), stop=gr.Button("Stop", variant="stop"))
        with gr.Row():
            buttons.update({"continue": gr.Button("Continue"), "undo": gr.Button("Undo last chunk")})
        preset = gr.Radio(list(self.app.presets), value="default", label="Preset (sets the sampler controls below)")
        with gr.Accordion("Sampler", open=False):
            for f in settings_fields():
                controls[f.name] = setting_control(f, getattr(ds, f.name), grid)
        with gr.Accordion("Attention windows (sampling-time settings)", open=False):
            for f in window_fields():
                controls[f.name] = setting_control(f, getattr(ds.windows, f.name), grid)
        controls["mark"] = gr.Checkbox(value=d.mark, label="Mark generated frames with a magenta border")
        return dict(clip=clip, context_view=context_view, context_info=context_info, controls=controls, buttons=buttons,
                    preset=preset)
