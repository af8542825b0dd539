"""The app's plain API endpoints, without a tab: ``/extend`` (a clip in, the extended mp4 out) and ``/stream`` (every
frame as a PNG as soon as it is finished, at the real-time preset)."""

from __future__ import annotations

import time
from dataclasses import replace

import gradio as gr

from msc.app_common import CLIP_TYPES, DISPLAY_SCALE, AppModel, generation_failed
from msc.sampling import FrameEvent, StepEvent
from msc.studio import DoneEvent, describe_step, generation, live_frame


class ClipApi:
    """Handlers of ``/extend`` and ``/stream``."""

    def __init__(self, app: AppModel):
        self.app = app
        self.real_time = replace(app.defaults, sampler=app.presets["real-time"])

    def _settings(self, frames, seed, steps, chunk, preset):
        """The request's checked settings: ``preset``'s, with ``frames``, ``seed`` and any ``steps`` / ``chunk`` given."""
        given = {k: v for k, v in dict(steps=steps, chunk=chunk).items() if v is not None}
        return self.app.settings(dict(frames=frames, seed=seed, **given), preset)

    def extend(self, clip, frames, steps=None, chunk=None, seed=0, request: gr.Request = None):
        """API: extend a clip by ``frames`` frames with the default settings; returns the mp4 (context + new).
        A generator that reports nothing until the end (its intermediate outputs are updates without
        a value): between two decoded frames or two denoising steps Gradio can cancel it (a client's
        ``job.cancel()``, or a client that went away). ``steps`` / ``chunk`` ``None``: the default preset's."""
        self.app.drop_unread(request)
        settings = self._settings(frames, seed, steps, chunk, self.app.defaults)
        context = yield from self.app.decoding(clip, settings.context, None, lambda n: gr.skip())
        try:
            for event in generation(self.app.model, context, settings):
                yield self.app.write(event.result.video[0], context.shape[0]) if isinstance(event, DoneEvent) else gr.skip()
        except Exception as err:
            raise generation_failed(err) from None

    def stream(self, clip, frames, steps=None, seed=0, chunk=None, request: gr.Request = None):
        """API (a generator): extend ``clip`` (or generate from nothing when it is None) at the real-time
        preset (``steps`` and ``chunk`` override its own) and yield every finished frame as a PNG image with a
        status line, as soon as it is finished. In between, it yields the status alone (the image
        unchanged: an update without a value) while the clip decodes and after every denoising step:
        the points where a client's ``job.cancel()`` ends it."""
        self.app.drop_unread(request)
        settings = self._settings(frames, seed, steps, chunk, self.real_time)
        context = None
        if clip:
            context = yield from self.app.decoding(clip, settings.context, None,
                                                   lambda n: (gr.skip(), f"reading the clip: {n} frames decoded"))
        k, finished, start = 0 if context is None else context.shape[0], 0, time.perf_counter()
        try:
            for event in generation(self.app.model, context, settings):
                if isinstance(event, StepEvent):
                    yield gr.skip(), f"{finished}/{settings.frames} frames · {describe_step(event, settings, k)}"
                elif isinstance(event, FrameEvent):
                    finished, elapsed = event.finished, time.perf_counter() - start
                    yield (live_frame(event.frame[0], DISPLAY_SCALE, settings.mark),
                           f"frame {event.finished}/{settings.frames} · {event.finished / elapsed:.2f} frames/s")
        except Exception as err:
            raise generation_failed(err) from None

    def build(self) -> None:
        """The hidden components behind the two endpoints (inside the app's ``gr.Blocks``)."""
        d, ds = self.app.defaults, self.app.defaults.sampler
        with gr.Row(visible=False):  # the plain API endpoint, no UI
            clip = gr.File(file_types=CLIP_TYPES, type="filepath")
            frames = gr.Number(label="frames", value=d.frames, precision=None)
            steps = gr.Number(label="steps", value=ds.steps, precision=None)
            chunk = gr.Number(label="chunk", value=ds.chunk, precision=None)
            seed = gr.Number(label="seed", value=ds.seed, precision=None)
            out = gr.Video()
            button = gr.Button()
        button.click(self.extend, [clip, frames, steps, chunk, seed], [out], api_name="extend", concurrency_limit=1,
                     concurrency_id="sampler")
        with gr.Row(visible=False):  # the streaming API endpoint, no UI
            stream_steps = gr.Number(label="steps", value=self.real_time.sampler.steps, precision=None)
            stream_chunk = gr.Number(label="chunk", value=self.real_time.sampler.chunk, precision=None)
            frame = gr.Image(type="filepath", format="png")
            status = gr.Textbox()
            stream_button = gr.Button()
        stream_button.click(self.stream, [clip, frames, stream_steps, seed, stream_chunk], [frame, status], api_name="stream",
                            concurrency_limit=1, concurrency_id="sampler")
