"""The app's *Play* tab and play API: a world model (``MSCConfig.actions``) steered live by the arrow keys.

Each browser tab holds its own :class:`msc.play.Player` (in ``gr.State``: a tab's game is never evicted by
another client); API clients get a session id (``/play_start``) and send one action per call (``/play_step``) or a
sequence (``/play_stream``), their games bounded in number and idle time. In the browser a key pressed is one frame
and a key held is a stream of frames: keydown and keyup only change what the tab holds (:class:`Keys`), and one
generator makes frames from it for as long as a key is held, with no round trip per frame. Every frame is generated
when its action arrives, chunks of one frame, through the kept KV cache (:mod:`msc.play`), so a frame costs the same
at step 1 and step 1000.
"""

from __future__ import annotations

import base64
import io
import os
import tempfile
import threading
import time
import uuid
from collections import OrderedDict, deque
from dataclasses import replace
from typing import Optional

import gradio as gr
import numpy as np
import torch
from PIL import Image

from msc.play import Player
from msc.sampling import PRESETS, SamplerSettings
from msc.studio import live_frame
from msc.video import write_video
from msc.world import World, check_action

SOURCES = ("nothing", "example", "photo")  # what a game starts from
CONTEXT_FRAMES = 4  # frames of the world (example or photo) the model is shown before the player takes over
PLAY_SETTINGS = replace(PRESETS["real-time"], chunk=1)  # for weights without their own presets: one frame per action
DISPLAY_SCALE = 4
MAX_API_GAMES, API_IDLE_SECONDS = 16, 15 * 60
MAX_GAME_FRAMES = 4096
MAX_STREAM_ACTIONS = 256  # actions per /play_stream call
# frames a second at most while a key is held in the browser: a page shows every frame it is sent, so frames made
# faster than it can show them would queue up between the server and the screen and the keys would lag further and
# further behind (bench.play measures what a page shows)
HELD_KEY_FPS = 15.0
KEYS = {"ArrowLeft": "left", "ArrowRight": "right", "ArrowUp": "up", "ArrowDown": "down", " ": "none"}

# The arrow keys drive the tab (when the Play tab is shown and no text field has the focus): a keydown clicks the
# key's hidden button (a frame, and frames for as long as it is held), and clicks it again every HOLD_REFRESH_MS while
# the key stays down (the keyboard's own repeats are ignored); the keyup, or the page losing the focus, clicks the
# hidden "release" button. A held key the server hears nothing of for HELD_KEY_SECONDS counts as released, so a lost
# keyup (or one that overtakes its keydown) stops the play within that time.
HOLD_REFRESH_MS, HELD_KEY_SECONDS = 300, 1.0
KEYBOARD_HEAD = """<script>
(() => {
  const keys = %s;
  let held = null, timer = null;
  const click = (id) => { const b = document.getElementById(id); if (b) b.click(); };
  const release = () => { if (timer) clearInterval(timer); timer = null; if (held) { held = null; click("play-key-release"); } };
  document.addEventListener("keydown", (event) => {
    const name = keys[event.key];
    const target = event.target;
    if (!name || (target && (target.tagName === "INPUT" || target.tagName === "TEXTAREA" || target.isContentEditable))) return;
    const shown = document.getElementById("play-" + name);
    if (!shown || shown.offsetParent === null) return;  // the Play tab is not shown
    event.preventDefault();
    if (event.repeat && held === name) return;
    if (timer) clearInterval(timer);
    held = name;
    click("play-key-" + name);
    timer = setInterval(() => click("play-key-" + name), %d);
  });
  document.addEventListener("keyup", (event) => { if (keys[event.key] && keys[event.key] === held) release(); });
  window.addEventListener("blur", release);
})();
</script>""" % (str(KEYS).replace("'", '"'), HOLD_REFRESH_MS)


class Keys:
    """What one browser tab's keyboard asks for: the keys pressed and not yet played (each one frame, in order), the
    key held and until when it counts as held (:data:`HELD_KEY_SECONDS` after the page last said so), and whether a
    generator is playing them (:meth:`PlayTab.play_keys`). ``clock``: seconds, monotonic."""

    def __init__(self, clock=time.monotonic):
        self.lock = threading.Lock()
        self.clock = clock
        self.taps = deque()  # action indices, one frame each
        self.held: Optional[int] = None
        self.held_until = 0.0
        self.playing = False

    def down(self, action: int) -> None:
        """The page says ``action``'s key is down: a new press is one frame more, a key still held only renews."""
        with self.lock:
            now = self.clock()
            if not (self.held == action and self.held_until > now):
                self.taps.append(action)
            self.held, self.held_until = action, now + HELD_KEY_SECONDS

    def up(self) -> None:
        with self.lock:
            self.held = None

    def next_action(self) -> Optional[int]:
        """The action of the next frame (a pressed key first, then the held one); ``None``, and no longer playing, when
        there is none."""
        with self.lock:
            held = self.held if self.held is not None and self.held_until > self.clock() else None
            action = self.taps.popleft() if self.taps else held
            if action is None:
                self.playing = False
            return action

    def start_playing(self) -> bool:
        """``True`` if no generator plays these keys yet (the caller is now the one)."""
        with self.lock:
            if self.playing:
                return False
            self.playing = True
            return True

    def stop(self) -> None:
        """Forget every key (the play failed)."""
        with self.lock:
            self.taps.clear()
            self.held, self.playing = None, False


class Keyboards:
    """The :class:`Keys` of every browser tab, by its Gradio session (the least recently used forgotten beyond
    ``most``), and the handlers of the page's key events."""

    def __init__(self, most: int = 4 * MAX_API_GAMES):
        self.most, self.lock = most, threading.Lock()
        self.tabs: "OrderedDict[str, Keys]" = OrderedDict()

    def of(self, request: Optional[gr.Request]) -> Keys:
        session = getattr(request, "session_hash", None) or "local"
        with self.lock:
            keys = self.tabs.setdefault(session, Keys())
            self.tabs.move_to_end(session)
            while len(self.tabs) > self.most:
                self.tabs.popitem(last=False)
        return keys

    def down(self, action: str, request: gr.Request = None) -> None:
        """A key is down: one frame of its action when newly pressed, and more while it stays down."""
        try:
            index = check_action(action)
        except ValueError as err:
            raise gr.Error(str(err), print_exception=False) from None
        self.of(request).down(index)

    def up(self, request: gr.Request = None) -> None:
        """The key went up: the frames of the keys pressed are still made, then the play stops."""
        self.of(request).up()

    def handler(self, action: str):
        """The handler of ``action``'s key going down (Gradio passes the request to a function that names it)."""

        def down(request: gr.Request = None) -> None:
            self.down(action, request)

        return down


class Game:
    """A player and the clocks of its readouts."""

    def __init__(self, player: Player):
        self.player = player
        self.lock = threading.Lock()
        self.frame_times = []  # when each of the last frames was served (perf_counter)
        self.touched = time.time()
        self.latency = 0.0  # seconds from the last action's arrival to its frame

    def served(self, started: float) -> None:
        now = time.perf_counter()
        self.latency = now - started
        self.frame_times = (self.frame_times + [now])[-16:]
        self.touched = time.time()

    def fps(self) -> float:
        t = self.frame_times
        return (len(t) - 1) / (t[-1] - t[0]) if len(t) >= 2 and t[-1] > t[0] else 0.0


class PlayTab:
    """Handlers and layout of the Play tab, around one world model."""

    def __init__(self, model, settings: SamplerSettings = PLAY_SETTINGS, out_dir: Optional[str] = None):
        if not model.config.actions:
            raise ValueError("the Play tab needs a world model (config.actions > 0).")
        self.model, self.settings = model, settings
        self.out_dir = out_dir or tempfile.mkdtemp(prefix="msc-play-")
        self.api_games: "OrderedDict[str, Game]" = OrderedDict()
        self.keyboards = Keyboards()  # each browser tab's keys
        self.lock = threading.Lock()
        # the Low-Res share of every layer at the noise levels a frame steps through (the same for every frame)
        from msc.diffusion import noise_levels

        levels = noise_levels(settings.noise_schedule, settings.steps, settings.shift)[:-1].float()
        self.low_res_share = model.gates(levels)[:, :, 1]  # [steps, depth]

    # ------------------------------------------------------------------ games

    def new_game(self, source: str, seed, photo) -> Game:
        """A game from ``source`` (:data:`SOURCES`): from nothing, the world of ``seed``, or ``photo`` (an image
        array ``[H, W, 3]``) as the world's ground; ``ValueError`` naming what is wrong otherwise."""
        if source not in SOURCES:
            raise ValueError(f"start must be one of {list(SOURCES)}, got {source!r}.")
        if isinstance(seed, float) and seed.is_integer():
            seed = int(seed)
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**31:
            raise ValueError(f"seed must be an integer in 0 .. 2^31 - 1, got {seed!r}.")
        if source == "nothing":
            return Game(Player(self.model, None, None, replace_seed(self.settings, seed)))
        picture = None
        if source == "photo":
            picture = photo_tensor(photo)
        world = World(seed, self.model.config.image_size, photo=picture)
        frames = world.rollout([0] * (CONTEXT_FRAMES - 1))  # [K, 3, S, S], the player still
        return Game(Player(self.model, frames[None], torch.zeros(1, CONTEXT_FRAMES, dtype=torch.long),
                           replace_seed(self.settings, seed)))

    def advance(self, game: Game, action) -> torch.Tensor:
        """The next frame of ``game`` after ``action`` (a name of :data:`msc.world.ACTIONS` or its index)."""
        action = check_action(action)
        with game.lock:
            if len(game.player) >= MAX_GAME_FRAMES:
                raise ValueError(f"a game holds at most {MAX_GAME_FRAMES} frames: start a new one.")
            started = time.perf_counter()
            frame = game.player.step(action)[0]
            game.served(started)
            return frame

    def status(self, game: Game) -> str:
        share = " ".join(f"{x:.2f}" for x in self.low_res_share[-1].tolist())
        return (f"frame {len(game.player)} · {game.fps():.1f} frames/s · action to frame {1000 * game.latency:.0f} ms · "
                f"Low-Res share by layer at the last step: {share}")

    def view(self, game: Game, frame: Optional[torch.Tensor] = None):
        """(image, status) of the game's latest frame, for the API."""
        frame = game.player.frames[-1][0] if frame is None else frame
        return live_frame(frame, DISPLAY_SCALE, mark=False), self.status(game)

    def shown(self, game: Game, frame: Optional[torch.Tensor] = None):
        """(game, screen, status) of the game's latest frame, for the tab: the frame goes inside the page's update as
        a PNG of the model's own pixels (:func:`screen_html`), so showing it costs no file and no request of its own."""
        frame = game.player.frames[-1][0] if frame is None else frame
        return game, screen_html(frame), self.status(game)

    # ------------------------------------------------------------------ browser handlers

    def start(self, source, seed, photo):
        try:
            game = self.new_game(source, seed, photo)
        except ValueError as err:
            raise gr.Error(str(err), print_exception=False) from None
        return self.shown(game)

    def press(self, game: Optional[Game], action: str):
        if game is None:
            raise gr.Error("press Start first.", print_exception=False)
        try:
            frame = self.advance(game, action)
        except ValueError as err:
            raise gr.Error(str(err), print_exception=False) from None
        return self.shown(game, frame)

    def play_keys(self, game: Optional[Game], request: gr.Request = None):
        """A generator: frames of ``game`` from the tab's keys (:meth:`Keys.next_action`), at most
        :data:`HELD_KEY_FPS` a second, until no key is pressed or held; returns at once if another one plays them."""
        keys = self.keyboards.of(request)
        if game is None:
            keys.stop()
            raise gr.Error("press Start first.", print_exception=False)
        if not keys.start_playing():
            yield gr.skip(), gr.skip(), gr.skip()  # another one plays them: leave the screen as it is
            return
        next_frame, shown = time.perf_counter(), False
        while True:
            action = keys.next_action()
            if action is None:
                if not shown:
                    yield gr.skip(), gr.skip(), gr.skip()
                return
            time.sleep(max(0.0, next_frame - time.perf_counter()))  # the frame rate's pace, not synchronisation
            next_frame = max(next_frame + 1.0 / HELD_KEY_FPS, time.perf_counter())
            try:
                frame = self.advance(game, action)
            except ValueError as err:
                keys.stop()
                raise gr.Error(str(err), print_exception=False) from None
            shown = True
            yield self.shown(game, frame)

    def download(self, game: Optional[Game]):
        if game is None:
            raise gr.Error("nothing has been played yet.", print_exception=False)
        path = os.path.join(self.out_dir, f"play-{uuid.uuid4().hex[:12]}.mp4")
        write_video(path, game.player.video()[0].cpu(), fps=8, scale=DISPLAY_SCALE)
        return path

    # ------------------------------------------------------------------ API

    def api_start(self, source: str = "nothing", seed: float = 0, photo=None):
        """API: a new game; returns its session id, the first frame and the status line."""
        try:
            game = self.new_game(source, seed, photo)
        except ValueError as err:
            raise gr.Error(str(err), print_exception=False) from None
        key = uuid.uuid4().hex
        with self.lock:
            now = time.time()
            for k in [k for k, g in self.api_games.items() if now - g.touched > API_IDLE_SECONDS]:
                del self.api_games[k]
            self.api_games[key] = game
            while len(self.api_games) > MAX_API_GAMES:
                self.api_games.popitem(last=False)
        return (key, *self.view(game))

    def _api_game(self, session_id: str) -> Game:
        with self.lock:
            game = self.api_games.get(str(session_id))
            if game is not None:
                self.api_games.move_to_end(str(session_id))
        if game is None:
            raise gr.Error(f"no such game: {session_id!r} (unknown, or expired after {API_IDLE_SECONDS // 60} idle minutes "
                           f"or beyond the {MAX_API_GAMES} most recent); start one with /play_start.", print_exception=False)
        return game

    def api_step(self, session_id: str, action: str):
        """API: the next frame of the game ``session_id`` after ``action`` (``none``, ``left``, ``right``, ``up``,
        ``down``); returns the frame and the status line."""
        game = self._api_game(session_id)
        try:
            frame = self.advance(game, action)
        except ValueError as err:
            raise gr.Error(str(err), print_exception=False) from None
        return self.view(game, frame)

    def api_stream(self, session_id: str, actions: str):
        """API (a generator): the game ``session_id`` under a sequence of ``actions`` (names separated by spaces or
        commas, e.g. ``"right right up"``, at most :data:`MAX_STREAM_ACTIONS`), each frame yielded with its status line
        as soon as it is made: a key held, without a round trip per frame. Every action is checked before the first
        frame."""
        game = self._api_game(session_id)
        names = str(actions).replace(",", " ").split()
        if not names or len(names) > MAX_STREAM_ACTIONS:
            raise gr.Error(f"actions must name 1 to {MAX_STREAM_ACTIONS} actions separated by spaces, got {len(names)}.",
                           print_exception=False)
        try:
            indices = [check_action(name) for name in names]
        except ValueError as err:
            raise gr.Error(str(err), print_exception=False) from None
        for action in indices:
            try:
                frame = self.advance(game, action)
            except ValueError as err:
                raise gr.Error(str(err), print_exception=False) from None
            yield self.view(game, frame)

    # ------------------------------------------------------------------ layout

    def build(self) -> None:
        """The tab's components and events (inside the app's ``gr.Blocks``)."""
        with gr.Tab("Play"):
            gr.Markdown("A world model: the arrow keys (or the buttons) move the camera over the picture; every frame is "
                        "drawn by the model when its key arrives. Start from nothing, from an example world, or from a "
                        "photo of your own.")
            game = gr.State(None)
            with gr.Row():
                with gr.Column(scale=1):
                    source = gr.Radio(list(SOURCES), value="example", label="Start from")
                    seed = gr.Number(value=0, precision=0, label="Seed (the example world, and the noise)")
                    photo = gr.Image(type="numpy", label="Your photo (for 'photo')", sources=["upload"], height=160)
                    start = gr.Button("Start / Reset", variant="primary", elem_id="play-start")
                    save = gr.Button("Download what was played (mp4)")
                    video = gr.File(label="Played video", interactive=False)
                with gr.Column(scale=1):
                    screen = gr.HTML(screen_html(None), elem_id="play-screen")
                    status = gr.Markdown(elem_id="play-status")
                    with gr.Row():
                        buttons = {name: gr.Button(label, elem_id=f"play-{name}", min_width=40) for name, label in
                                   (("left", "←"), ("up", "↑"), ("none", "·"), ("down", "↓"), ("right", "→"))}
            start.click(self.start, [source, seed, photo], [game, screen, status], api_visibility="private",
                        concurrency_limit=1, concurrency_id="sampler")
            for name, button in buttons.items():
                button.click(lambda g, n=name: self.press(g, n), [game], [game, screen, status], api_visibility="private",
                             concurrency_limit=1, concurrency_id="sampler", trigger_mode="always_last", show_progress="hidden")
            with gr.Row(visible="hidden"):  # what the keyboard clicks (KEYBOARD_HEAD): a key's down edge, and any key's up
                key_buttons = {name: gr.Button(elem_id=f"play-key-{name}") for name in buttons}
                key_up = gr.Button(elem_id="play-key-release")
            for name, button in key_buttons.items():
                button.click(self.keyboards.handler(name), None, None, api_visibility="private",
                             queue=False, show_progress="hidden").then(
                    self.play_keys, [game], [game, screen, status], api_visibility="private", concurrency_limit=1,
                    concurrency_id="sampler", show_progress="hidden")
            key_up.click(self.keyboards.up, None, None, api_visibility="private", queue=False, show_progress="hidden")
            save.click(self.download, [game], [video], api_visibility="private", queue=False)
            with gr.Row(visible=False):  # the play API, no UI
                api_source = gr.Textbox(label="source", value="nothing")
                api_seed = gr.Number(label="seed", value=0, precision=0)
                api_photo = gr.Image(type="numpy", label="photo")
                api_session = gr.Textbox(label="session_id")
                api_action = gr.Textbox(label="action", value="none")
                api_frame = gr.Image(type="filepath", format="png")
                api_status = gr.Textbox()
                api_start, api_step = gr.Button(), gr.Button()
            api_start.click(self.api_start, [api_source, api_seed, api_photo], [api_session, api_frame, api_status],
                            api_name="play_start", concurrency_limit=1, concurrency_id="sampler")
            api_step.click(self.api_step, [api_session, api_action], [api_frame, api_status], api_name="play_step",
                           concurrency_limit=1, concurrency_id="sampler")
            with gr.Row(visible=False):
                api_actions = gr.Textbox(label="actions", value="right")
                api_stream = gr.Button()
            api_stream.click(self.api_stream, [api_session, api_actions], [api_frame, api_status], api_name="play_stream",
                             concurrency_limit=1, concurrency_id="sampler")


SCREEN_PIXELS = 288  # the tab's screen, whatever the model's frame size (enlarged by the browser, pixels kept square)


def screen_html(frame: Optional[torch.Tensor]) -> str:
    """The tab's screen showing ``frame`` ``[3, S, S]`` in [-1, 1] (``None``: an empty screen) as an ``<img>`` whose
    source is the frame's own PNG, inline."""
    if frame is None:
        return f'<div style="width:{SCREEN_PIXELS}px;height:{SCREEN_PIXELS}px;background:#222"></div>'
    pixels = live_frame(frame, 1, mark=False)  # [S, S, 3] uint8: the model's own pixels
    png = io.BytesIO()
    Image.fromarray(pixels).save(png, format="png", compress_level=1)
    data = base64.b64encode(png.getvalue()).decode()
    return (f'<img src="data:image/png;base64,{data}" width="{SCREEN_PIXELS}" height="{SCREEN_PIXELS}" '
            'style="image-rendering:pixelated" alt="the game">')


def replace_seed(settings: SamplerSettings, seed: int) -> SamplerSettings:
    return replace(settings, seed=int(seed))


def photo_tensor(photo) -> torch.Tensor:
    """An uploaded image (``[H, W, 3]`` or ``[H, W, 4]`` or ``[H, W]`` uint8 array) -> ``[3, H, W]`` uint8."""
    if photo is None:
        raise ValueError("start from 'photo' needs a photo: upload one.")
    array = np.asarray(photo)
    if array.dtype != np.uint8 or array.ndim not in (2, 3) or min(array.shape[:2]) < 16:
        raise ValueError(f"the photo must be an image of at least 16 x 16 pixels, got an array of shape {array.shape}.")
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    return torch.from_numpy(np.ascontiguousarray(array[:, :, :3])).permute(2, 0, 1)
