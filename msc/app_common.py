"""What every part of the Gradio app (:mod:`msc.app`) shares: the model with its default settings and the folder of
written videos (:class:`AppModel`), clip decoding that a request can stop, and how errors reach the user.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
import traceback
import uuid
from contextlib import contextmanager
from dataclasses import replace

import gradio as gr
import torch

from msc.model import MSCModel
from msc.sampling import PRESETS
from msc.studio import Settings, UserError, control_range, decode_clip, prune_old_files
from msc.video import write_video

CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository, when run from it
CLIP_TYPES = [".mp4", ".webm", ".mov", ".gif", ".avi", ".mkv"]
FPS, DISPLAY_SCALE = 8, 4
DECODE_REPORT_SECONDS = 0.05  # while a clip decodes, a handler yields this often: where Gradio can cancel it
CHECKED_KINDS = (gr.Slider, gr.Number, gr.Radio, gr.Dropdown)
# handlers that run outside the generation queue but decode or draw: how many of each run at once, and how long a
# request waits for its turn before it is told the server is busy (the queue bounds only generations)
PREVIEW_SLOTS, CONE_SLOTS, SLOT_WAIT_S = 1, 2, 20.0
# and how many may start a second: a client in a loop is paced, so a flood of cheap requests cannot take the CPU (and
# the interpreter) from a generation (bench.abuse measures it)
PREVIEW_RATE, CONE_RATE = 0.5, 4.0
# a client has READ_GRACE_S from sending a generation to reading what the server sends back (its event stream: the
# browser and gradio_client open it within milliseconds, within a second or two under a burst of clients on a busy
# machine); a generation nobody reads by then is dropped when its turn comes, and when the queue is full, the queued
# ones nobody has read for as long leave it for a new request (evict_unread_when_full). While other requests wait for the
# worker (or for room in a full queue), an unread one gets READ_GRACE_BUSY_S only: its wait is theirs (bench.abuse:
# after twenty unread posts the next client waits less than one generation); a client slower than that to read is told
# why and may send again. Both are for an idle machine: on an oversubscribed one every client is slower to read, so
# they grow with the load per core (load_slowdown), up to MAX_LOAD_SLOWDOWN times
READ_GRACE_S, READ_GRACE_BUSY_S, MAX_LOAD_SLOWDOWN = 3.0, 1.0, 4.0


def load_slowdown() -> float:
    """How many times slower than on an idle machine a client runs now: the 1-minute load average per core this
    process may use, between 1 and :data:`MAX_LOAD_SLOWDOWN`; 1 where the system does not say."""
    try:
        load = os.getloadavg()[0]
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    except OSError:
        return 1.0
    return min(max(load / cores, 1.0), MAX_LOAD_SLOWDOWN)


def read_grace(busy: bool) -> float:
    """Seconds a client has to open its event stream (:data:`READ_GRACE_BUSY_S` while others wait, else
    :data:`READ_GRACE_S`), times :func:`load_slowdown`."""
    return (READ_GRACE_BUSY_S if busy else READ_GRACE_S) * load_slowdown()


def bundled(folder: str) -> str:
    """A folder the repository ships (``weights``, ``assets``): ``$MSC_WEIGHTS`` for the weights if set,
    else the one in the current folder, else the one next to the ``msc`` package (a checkout or an
    editable install). Absolute, so that ``from_pretrained`` reads it from disk."""
    if folder == "weights" and os.environ.get("MSC_WEIGHTS"):
        return os.path.abspath(os.environ["MSC_WEIGHTS"])
    here = os.path.abspath(folder)
    return here if os.path.isdir(here) else os.path.join(CHECKOUT, folder)


def user_error(message: str) -> gr.Error:
    """An error the user caused: shown to them, not logged as a traceback."""
    return gr.Error(message, print_exception=False)


def generation_failed(error: BaseException) -> gr.Error:
    """A failure inside the sampler: one line for the user, the traceback once in the server log."""
    traceback.print_exception(error)
    return gr.Error(f"generation failed ({type(error).__name__}); the server log has the details.", print_exception=False)


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


def refuse_bad_requests_in_one_line(demo: gr.Blocks) -> None:
    """Gradio checks a request's inputs (how many, uploaded files, their types) before any handler runs, and refuses a
    bad one with a traceback in the server log and a message that can name server folders or show Python object
    addresses. This makes each such refusal a user error that says what to send instead, and one line in the log.
    (A wrapper on the instance, as :func:`report_refusals_as_user_errors`.)"""
    preprocess = demo.preprocess_data

    async def checked(block_fn, inputs, *args, **kwargs):
        try:
            return await preprocess(block_fn, inputs, *args, **kwargs)
        except Exception as err:  # anything Gradio refuses before the handler is the request's fault
            message = err.message if isinstance(err, gr.Error) else bad_request_message(block_fn, inputs, err)
            print(f"refused a request to {getattr(block_fn, 'api_name', None) or 'an event'}: {message}", flush=True)
            raise user_error(message) from None

    demo.preprocess_data = checked


def bad_request_message(block_fn, inputs, error: Exception) -> str:
    """What a refused request should have sent: the endpoint's inputs by name, or an uploaded file."""
    from gradio.exceptions import InvalidPathError

    name = f"/{block_fn.api_name}" if getattr(block_fn, "api_name", None) else "this event"
    expected = [getattr(c, "label", None) or type(c).__name__.lower() for c in block_fn.inputs]
    if not isinstance(inputs, list) or len(inputs) != len(expected):
        got = len(inputs) if isinstance(inputs, list) else "no list of"
        return (f"{name} takes {len(expected)} inputs ({', '.join(expected)}), got {got}; "
                "gradio_client's Client(url).view_api() lists every endpoint's inputs.")
    url = any(isinstance(v, dict) and "://" in str(v.get("path", "")) for v in inputs)
    if isinstance(error, InvalidPathError) or url:
        return (f"{name} reads files uploaded to this server only (gradio_client's handle_file uploads one); "
                "a path on the server or a URL is not accepted.")
    return (f"{name} could not read its inputs ({type(error).__name__}): send them as Client(url).view_api() "
            "describes them, files through handle_file.")


def unread(queue, session: str) -> bool:
    """Whether the messages Gradio's ``queue`` sent ``session`` are waiting with nobody waiting for them (no event
    stream open). ``False`` where the queue does not say (another Gradio version: nothing is dropped)."""
    messages = getattr(queue, "pending_messages_per_session", {}).get(session)
    if messages is None or not hasattr(messages, "_getters"):
        return False
    return messages.qsize() > 0 and not messages._getters


def waiting_events(queue) -> list:
    """The events in Gradio's ``queue`` that wait for a worker."""
    return [e for q in list(queue.event_queue_per_concurrency_id.values()) for e in list(q.queue)]


def evict_unread_when_full(demo: gr.Blocks) -> None:
    """When a request finds the queue full, the queued requests nobody has read (:func:`unread`) for
    :func:`read_grace` leave it first, one line in the log each, so a client that posts without reading cannot
    keep others out for longer than that. (A wrapper on the queue's ``push``; call it after ``demo.queue(...)``.)"""
    queue = demo._queue
    push = queue.push

    async def push_evicting(body, request, username):
        if queue.max_size is not None and len(queue) >= queue.max_size:
            now, grace = time.monotonic(), read_grace(busy=True)
            for event in waiting_events(queue):
                if now - event.enqueue_time > grace and unread(queue, event.session_hash):
                    await queue.clean_events(session_hash=event.session_hash)
                    queue.pending_messages_per_session.pop(event.session_hash, None)
                    print("evicted a queued generation nobody read, for a new request", flush=True)
        return await push(body=body, request=request, username=username)

    queue.push = push_evicting


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


# what one client address may send to the API, per kind of route: (requests a second, burst), as token buckets.
# Uploads write a file (a burst lets twenty clients behind one address start at once); the unqueued handlers (a clip's
# preview, a ticket, stop, undo, the Play tab's keys going down and up) run at once in the server's threads; queued
# events (generations, light cones, a button pressed in the Play tab) wait their turn in a bounded queue. Over it a
# request is answered 429 at the door, before Gradio reads it, so a client in a loop of refused requests costs the
# process microseconds a request instead of Gradio's handling of each (bench.abuse --refused measures it)
CLIENT_LIMITS = {"upload": (4.0, 32), "direct": (5.0, 20), "queued": (60.0, 120)}


def route_kind(path: str):
    """The :data:`CLIENT_LIMITS` kind of a POST to ``path``, or ``None`` (not limited)."""
    if "/gradio_api/" not in path:
        return None
    route = path.split("/gradio_api/", 1)[1]
    if route.startswith("upload"):
        return "upload"
    if route.startswith("run/"):
        return "direct"
    if route.startswith(("queue/join", "call/")):
        return "queued"
    return None


class ClientRateLimit:
    """ASGI middleware: POSTs to the API beyond :data:`CLIENT_LIMITS` from one client address are refused with 429 and a
    ``Retry-After`` before the app sees them (pages, files and event streams are never limited). The address is the
    connection's own: behind a reverse proxy every client shares the proxy's, and the proxy should limit instead.
    ``clock``: seconds, monotonic (tests pass their own)."""

    MAX_CLIENTS = 4096  # buckets kept; full ones idle long enough to have refilled are dropped first

    def __init__(self, app, limits=None, clock=time.monotonic):
        self.app, self.limits, self.clock = app, dict(CLIENT_LIMITS if limits is None else limits), clock
        self.buckets = {}  # (address, kind) -> [tokens, time of the last update]

    def allow(self, address: str, kind: str) -> bool:
        """Take one token of ``address``'s ``kind`` bucket if it has one."""
        (rate, burst), now = self.limits[kind], self.clock()
        tokens, last = self.buckets.get((address, kind), (burst, now))
        tokens = min(burst, tokens + (now - last) * rate)
        allowed = tokens >= 1
        self.buckets[(address, kind)] = [tokens - allowed, now]
        if len(self.buckets) > self.MAX_CLIENTS:
            refill = max(burst / rate for rate, burst in self.limits.values())
            self.buckets = {key: b for key, b in self.buckets.items() if now - b[1] < refill}
        return allowed

    async def __call__(self, scope, receive, send):
        kind = route_kind(scope.get("path", "")) if scope["type"] == "http" and scope.get("method") == "POST" else None
        if kind is None or self.allow((scope.get("client") or ("unknown",))[0], kind):
            return await self.app(scope, receive, send)
        body = json.dumps({"error": f"Too many requests from this address ({self.limits[kind][0]:g} a second for this "
                                    "kind of request): wait a second and try again."}).encode()
        await send({"type": "http.response.start", "status": 429,
                    "headers": [(b"content-type", b"application/json"), (b"retry-after", b"1"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


class PacedSlots:
    """``size`` slots of which at most ``rate`` are taken a second: :meth:`acquire` waits for a free slot and then for
    its start time, each start at least ``1 / rate`` s after the one before (the pacing is the server's own schedule;
    a client looping on cheap requests gets one turn per interval, whatever it sends)."""

    def __init__(self, size: int, rate: float):
        self._free = threading.BoundedSemaphore(size)
        self._interval = 1.0 / rate
        self._next_start = 0.0  # time.monotonic() of the earliest next start
        self._lock = threading.Lock()

    def acquire(self, timeout: float) -> float:
        """Wait for a slot (at most ``timeout`` s) and then for this start's turn: its start time (``time.monotonic()``,
        never before it returns), or 0.0 when no slot came free in time."""
        if not self._free.acquire(timeout=timeout):
            return 0.0
        with self._lock:
            start = max(time.monotonic(), self._next_start)
            self._next_start = start + self._interval
        time.sleep(max(0.0, start - time.monotonic()))  # this request's turn: pacing, not synchronisation
        return start

    def release(self) -> None:
        self._free.release()


class AppModel:
    """The app's video model, its sampler presets and default request settings, and the folder the app writes videos to."""

    def __init__(self, model: MSCModel, presets: dict | None = None, out_dir: str | None = None):
        self.model = model
        self.config = model.config
        self.out_dir = out_dir or tempfile.mkdtemp(prefix="msc-app-")  # removed at exit (msc.app.main)
        # the weights' own sampler presets (msc.sampling.load_presets), with the model's windows
        self.presets = {name: replace(p, windows=self.config.windows) for name, p in (presets or PRESETS).items()}
        self.defaults = Settings(sampler=self.presets["default"])
        self.slots = {"preview": PacedSlots(PREVIEW_SLOTS, PREVIEW_RATE), "cone": PacedSlots(CONE_SLOTS, CONE_RATE)}
        self.blocks: gr.Blocks | None = None  # the app's Blocks, once built (its queue tells who reads their results)

    def drop_unread(self, request: gr.Request | None) -> None:
        """Refuse a generation whose client is not reading its results (:func:`unread`) :func:`read_grace` after it
        was queued (``POST /gradio_api/call/...`` whose event stream is never opened; a shorter grace while another
        client's request waits for the worker): twenty such posts cost the worker about a second,
        not twenty generations. Where Gradio's queue cannot tell, the request runs."""
        queue = getattr(self.blocks, "_queue", None)
        session = getattr(request, "session_hash", None)
        if queue is None or session is None:
            return
        events = [e for e in list(queue.event_ids_to_events.values()) if e.session_hash == session]
        queued_at = min((e.enqueue_time for e in events), default=time.monotonic())
        while unread(queue, session):
            grace = read_grace(busy=any(e.session_hash != session for e in waiting_events(queue)))
            if time.monotonic() - queued_at > grace:
                print(f"dropped a generation nobody read for {grace:.1f} s", flush=True)
                raise user_error(f"this request's results were not read within {grace:.1f} s of sending it, so it did not "
                                 "run: read each result (its event stream; gradio_client does) before sending more.")
            time.sleep(0.02)  # the reader's task runs on the server's event loop

    @contextmanager
    def limited(self, kind: str):
        """Run the block in one of the ``kind`` slots (``"preview"``: a clip decoded for its preview, ``"cone"``: a light
        cone drawn), waiting at most :data:`SLOT_WAIT_S`; a user error says the server is busy otherwise. The slots
        are separate, so a flood of one kind never delays the other, and neither holds more cores than it has slots."""
        if not self.slots[kind].acquire(timeout=SLOT_WAIT_S):
            raise user_error(f"the server is busy with other {kind} requests; try again in a moment.")
        try:
            yield
        finally:
            self.slots[kind].release()

    def write(self, video: torch.Tensor, mark_from) -> str:
        """``video`` ``[T, C, H, W]`` as an mp4 in the output folder (frames from ``mark_from`` on marked)."""
        prune_old_files(self.out_dir)
        path = os.path.join(self.out_dir, f"{uuid.uuid4().hex[:12]}.mp4")
        return write_video(path, video, fps=FPS, scale=DISPLAY_SCALE, mark_from=mark_from)

    def settings(self, values: dict, defaults: Settings | None = None) -> Settings:
        """Checked settings from controls by name (the others keep ``defaults``, the app's unless given)."""
        try:
            return Settings.from_controls(values, defaults or self.defaults, self.config.grid)
        except UserError as err:
            raise user_error(str(err)) from None

    def decoding(self, clip, context: int, cancel: threading.Event | None, reading):
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
