"""The app end to end: ``python app.py`` on a free port with the bundled weights, driven through
``gradio_client`` and a real Chromium (Playwright). Videos are checked by decoding them with ffmpeg."""

import json
import os
import random
import re
import select
import shutil
import subprocess
import sys
import threading
import time
import urllib.request

import pytest
from conftest import OFFLINE, running_app

from msc.sampling import load_presets
from msc.studio import CONTROLS, control_values
from msc.video import read_video

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ASSET = os.path.join(ROOT, "assets", "heldout_0.mp4")
BUNDLED = load_presets(os.path.join(ROOT, "weights"))  # the presets the app serves: the bundled model's own

pytestmark = pytest.mark.slow

def controls(**change) -> list:
    """The Generate tab's controls as /generate and /continue take them (in the order of CONTROLS):
    4 new frames after 8 context frames, chunks of 2, 4 steps, seed 3, unless changed."""
    return control_values(**{"frames": 4, "chunk": 2, "steps": 4, "seed": 3, **change})


SETTINGS = controls()  # 4 new frames after 8 context frames, chunk 2


SERVER_LOGS = {}  # url -> the server's log file


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    log_path = str(tmp_path_factory.mktemp("app") / "server.log")
    app = running_app(log_path)
    url = next(app)
    SERVER_LOGS[url] = log_path
    yield url
    app.close()
    with open(log_path) as f:
        outputs = f.read().split("outputs in ", 1)[1].split()[0]
    assert not os.path.exists(outputs), f"{outputs} was left behind"


@pytest.fixture(scope="module")
def client(server):
    from gradio_client import Client

    return Client(server, verbose=False)


def _http_call(server: str, api_name: str, body: str) -> str:
    """One call over Gradio's plain HTTP API (POST, then read the event stream): the stream's text."""
    post = urllib.request.Request(f"{server}/gradio_api/call/{api_name}", data=body.encode(),
                                  headers={"Content-Type": "application/json"})
    event_id = json.loads(urllib.request.urlopen(post, timeout=30).read())["event_id"]
    return urllib.request.urlopen(f"{server}/gradio_api/call/{api_name}/{event_id}", timeout=120).read().decode()


def _frames(path) -> int:
    return read_video(path, size=64).shape[0]


def test_extend_an_asset_clip(client):
    from gradio_client import handle_file

    start = time.time()
    out = client.predict(handle_file(ASSET), 8, api_name="/extend")
    assert time.time() - start < 60
    assert _frames(out) == 8 + 8  # the default 8 context frames, then 8 new ones
    assert read_video(out, size=256).shape[-1] == 256


def test_generate_with_every_setting(client):
    from gradio_client import handle_file

    every = controls(frames=6, context=4, chunk=2, steps=4, schedule="diffusion-forcing", ar_step=2, noise_schedule="shifted",
                     shift=2.0, context_noise=0.05, eta=0.3, seed=5, history_guidance=1.5, guidance_mode="fractional",
                     guidance_level=0.4, guidance_schedule="linear", k_s=5, k_t=2, d=1, k_lo=3, mark=True)
    video, strip, status, plot, live, session = client.predict(handle_file(ASSET), *every, api_name="/generate")
    assert _frames(video) == 4 + 6
    assert "Generated 6 frames after 4 context frames" in status
    assert os.path.getsize(strip) > 0 and plot is not None


@pytest.mark.parametrize("change, message", [  # Gradio checks the controls' ranges; the app checks the rest
    (dict(frames=10_000), "10000 is greater than maximum value 256"),
    (dict(k_s=99), "99 is greater than maximum value 16"),
    (dict(context_noise=1.5), "1.5 is greater than maximum value 0.5"),
    (dict(schedule="sideways"), "sideways"),
    (dict(steps=2.5), "steps must be a whole number"),
    (dict(history_guidance=9.0), "9.0 is greater than maximum value 5"),
])
def test_bad_settings_say_what_to_change(client, change, message):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match=message):
        client.predict(handle_file(ASSET), *controls(**{"context": 4, "steps": 2, **change}), api_name="/generate")


def test_bad_files_then_the_app_keeps_serving(client, tmp_path):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    junk = tmp_path / "junk.mp4"
    junk.write_bytes(random.Random(0).randbytes(50_000))  # fixed bytes: some random ones probe as a data stream (its own message)
    with pytest.raises(AppError, match="could not be decoded as a video"):
        client.predict(handle_file(str(junk)), 4, api_name="/extend")
    text = tmp_path / "notes.gif"
    text.write_text("not a gif at all")
    with pytest.raises(AppError, match="could not be decoded|contains no video frames"):
        client.predict(handle_file(str(text)), 4, api_name="/extend")
    huge = tmp_path / "huge.mp4"
    with open(huge, "wb") as f:
        f.truncate(70 * 1024 * 1024)  # above max_file_size
    with pytest.raises(Exception):
        client.predict(handle_file(str(huge)), 4, api_name="/extend")
    assert _frames(client.predict(handle_file(ASSET), 4, api_name="/extend")) == 8 + 4


def test_user_errors_name_no_server_path_and_leave_no_traceback(server, client, tmp_path):
    """Each message says what to change, without the server's folders; the server log stays free of
    tracebacks for errors the user caused (bad files, bad settings, flows out of order)."""
    import subprocess as sp

    import imageio_ffmpeg
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    fresh = Client(server, verbose=False)  # a session with no video yet

    def undo_twice(session):
        assert "Undid the last chunk (1 frames); 0 generated frames left" in fresh.predict(session, True, api_name="/undo")[2]
        fresh.predict(session, True, api_name="/undo")

    audio = tmp_path / "voice.mp4"
    sp.run([imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "lavfi", "-i", "sine=duration=1", str(audio)],
           check=True)
    renamed = tmp_path / "clip.gif"  # an mp4 with the wrong extension: decoded by its contents
    shutil.copy(ASSET, renamed)
    assert _frames(client.predict(handle_file(str(renamed)), 2, api_name="/extend")) == 8 + 2
    cases = [
        (lambda: client.predict(handle_file(str(audio)), 4, api_name="/extend"), "no video stream \\(only audio\\)"),
        (lambda: client.predict(handle_file(ASSET), 4.5, api_name="/extend"), "frames must be a whole number, got 4.5"),
        (lambda: client.predict(handle_file(ASSET), 4, 4, 4, 2**63, api_name="/extend"), "seed must be between 0 and"),
        (lambda: fresh.predict("", *controls(), api_name="/continue"), "nothing to continue yet"),
        (lambda: undo_twice(fresh.predict(None, *controls(frames=1), api_name="/generate")[-1]), "nothing to undo"),
        (lambda: client.predict(99, 3, 2, 4, 16, 8, 8, 4, 4, 0, api_name="/light_cone"), "k_s"),
    ]
    for call, message in cases:
        with pytest.raises(AppError, match=message) as err:
            call()
        assert ROOT not in str(err.value) and "/tmp" not in str(err.value), str(err.value)
    # NaN cannot be sent through gradio_client (strict JSON); over plain HTTP it can
    body = "{\"data\": [null, " + ", ".join("NaN" if n == "frames" else json.dumps(v) for n, v in zip(CONTROLS, controls())) + "]}"
    assert "frames must be between" in _http_call(server, "generate", body)
    with open(SERVER_LOGS[server]) as f:  # Gradio prints a handler's traceback (stderr: line-buffered) before it answers
        log = f.read()
    assert "Traceback" not in log, log[-3000:]


def test_malformed_requests_are_refused_in_one_line(server):
    """Requests Gradio refuses before any handler runs (wrong number of inputs, a file that was not uploaded, a server
    path, a URL, a file without its metadata, wrong types) are user errors that say what to send, with no server
    folder or object address in them, and one line each in the server log, never a traceback."""
    def fd(path):
        return {"path": path, "meta": {"_type": "gradio.FileData"}}

    cases = {
        "takes 5 inputs \\(file, frames, steps, chunk, seed\\), got 0": [],
        "takes 5 inputs .*, got 9": [fd("x.mp4"), 4, 4, 4, 4, 4, 4, 4, 4],
        "reads files uploaded to this server only": [fd("/etc/hostname"), 4, 2, 8, 0],
        "uploaded to this server only.*handle_file": [fd("clip.mp4"), 4, 2, 8, 0],  # relative: the server's folder
        "a path on the server or a URL is not accepted": [fd("file:///etc/passwd"), 4, 2, 8, 0],
        "or a URL": [fd("http://example.com/a.mp4"), 4, 2, 8, 0],
        "could not read its inputs \\(ValidationError\\)": [{"path": "/etc/hostname"}, 4, 2, 8, 0],
        "could not read its inputs": ["abc", "def", "x", "y", "z"],
    }
    for message, data in cases.items():
        answer = _http_call(server, "extend", json.dumps({"data": data}))
        assert re.search(message, answer), (message, answer)
        assert ROOT not in answer and "object at 0x" not in answer and "@ 0x" not in answer, answer
    with open(SERVER_LOGS[server]) as f:
        log = f.read()
    assert "Traceback" not in log and "object at 0x" not in log, log[-3000:]
    assert log.count("refused a request to extend:") >= len(cases)


def test_posts_nobody_reads_do_not_keep_the_next_client_waiting(server):
    """Twenty ``POST /gradio_api/call/extend`` whose results are never read (the queue takes 16): none of them
    runs (each is evicted from the full queue once unread for a second, or dropped when its turn comes, one log line
    each) and the next client is served (refused as "queue full" only within that second: it retries)."""
    from gradio_client import Client, handle_file
    from gradio_client.utils import QueueError

    from bench.abuse import post_unread, upload

    client = Client(server, verbose=False)
    with open(SERVER_LOGS[server]) as f:
        before = f.read()
    accepted = post_unread(server, upload(server, ASSET), 20)  # the clip uploaded over plain HTTP, once; 503s counted out
    start = time.time()
    while True:
        try:
            video = client.predict(handle_file(ASSET), 1, api_name="/extend")
            break
        except QueueError:  # the unread posts hold the queue for their first second
            assert time.time() - start < 30, "the unread posts kept the queue full"
            time.sleep(0.2)  # a client's retry pause
    assert _frames(video) == 8 + 1
    assert time.time() - start < 120  # catches a hang, not a timing
    with open(SERVER_LOGS[server]) as f:
        log = f.read()[len(before):]
    assert accepted >= 16
    assert log.count("evicted a queued generation nobody read") + log.count("dropped a generation nobody read") == accepted, log


def test_extend_endpoint_checks_what_the_controls_cannot(client):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="frames must be between 1 and 256, got 10000"):
        client.predict(handle_file(ASSET), 10_000, api_name="/extend")
    with pytest.raises(AppError, match="chunk must be between 1 and 16, got 0"):
        client.predict(handle_file(ASSET), 4, 4, 0, api_name="/extend")


def _decoded(path):
    return read_video(path, size=64)


@pytest.mark.parametrize("first_chunk", [0, 1])
def test_continue_and_undo_reproduce_the_same_frames(server, first_chunk):
    """With a smaller first chunk too: it is the video's first, and Continue's chunks follow on from the video's."""
    from gradio_client import Client, handle_file

    client = Client(server, verbose=False)
    settings = controls(first_chunk=first_chunk)
    first, *_, session = client.predict(handle_file(ASSET), *settings, api_name="/generate")  # 8 + 4 frames
    more, _, status, *_ = client.predict(session, *settings, api_name="/continue")  # + 4, in chunks of 2
    assert "Continued with 4 frames" in status and _frames(more) == 16
    undone, _, status, *_ = client.predict(session, True, api_name="/undo")  # drops the last chunk (2 frames)
    assert "Undid the last chunk (2 frames)" in status and _frames(undone) == 14
    again, *_ = client.predict(session, *settings, api_name="/continue")  # the same seed: the same frames
    a, b = _decoded(more), _decoded(again)
    assert b.shape[0] == 18
    assert (a[:16] - b[:16]).abs().mean() < 0.01
    assert (_decoded(first) - a[:12]).abs().mean() < 0.01  # Continue kept what was there


def test_two_sessions_keep_separate_histories(server):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    one, two = Client(server, verbose=False), Client(server, verbose=False)
    *_, first = one.predict(handle_file(ASSET), *SETTINGS, api_name="/generate")  # first: 12 frames
    with pytest.raises(AppError, match="no session id"):
        two.predict("", *SETTINGS, api_name="/continue")  # two has no video yet
    with pytest.raises(AppError, match="no such session"):
        two.predict("0" * 32, *SETTINGS, api_name="/continue")
    *_, second = two.predict(handle_file(os.path.join(ROOT, "assets", "heldout_1.mp4")), *SETTINGS, api_name="/generate")
    one_more, *_ = one.predict(first, *SETTINGS, api_name="/continue")  # first: 16
    two_undone, *_ = two.predict(second, True, api_name="/undo")  # second: 10
    assert _frames(one_more) == 16 and _frames(two_undone) == 10
    clip0 = read_video(ASSET, size=64)[-8:]
    assert (_decoded(one_more)[:8] - clip0).abs().mean() < 0.05  # first still extends heldout_0
    assert (_decoded(two_undone)[:8] - clip0).abs().mean() > 0.05  # second extends heldout_1


def test_sessions_work_over_plain_http(server):
    """The id /generate returns is all /continue and /undo need: no gradio_client session."""
    video_id = json.loads(_http_call(server, "generate", json.dumps({"data": [None, *SETTINGS]})).split("data: ")[-1])[-1]
    more = _http_call(server, "continue", json.dumps({"data": [video_id, *SETTINGS]}))
    assert "Continued with 4 frames" in more and "the video has 8 frames" in more
    undone = _http_call(server, "undo", json.dumps({"data": [video_id, True]}))
    assert "Undid the last chunk (2 frames)" in undone


def test_stop_keeps_the_finished_frames(server):
    from gradio_client import Client, handle_file

    client = Client(server, verbose=False)
    long_run = controls(frames=256, chunk=4, steps=8)  # ~45 s of work (near the work bound) if nobody stops it
    job = client.submit(handle_file(ASSET), *long_run, api_name="/generate")
    deadline = time.time() + 60

    def calls_done() -> int:  # the model calls reported so far (8 per chunk of 4 frames)
        progress = job.status().progress_data
        return progress[0].index if progress and progress[0].index is not None else 0

    while calls_done() <= 8:  # until the first chunk is finished (its frames are what Stop keeps)
        assert not job.done(), f"the generation ended before its first chunk: {job.exception()!r}"
        assert time.time() < deadline, "the first chunk was never finished"
        time.sleep(0.05)
    assert "Stopping" in client.predict(api_name="/stop")
    start = time.time()
    video, _, status, *_ = job.result(timeout=60)
    assert time.time() - start < 30
    assert status.startswith("Stopped: kept the")
    kept = int(status.split("kept the ")[1].split()[0])
    assert _frames(video) == 8 + kept and 4 <= kept < 256


def _wait_until_running(*jobs, timeout=60):
    """Until one of ``jobs`` runs (submitted together, they may start in any order)."""
    from gradio_client.utils import Status

    deadline = time.time() + timeout
    while not any(job.status().code in (Status.PROCESSING, Status.ITERATING, Status.PROGRESS) for job in jobs):
        assert not all(job.done() for job in jobs), f"the jobs ended before one was seen running: {jobs[0].exception()!r}"
        assert time.time() < deadline, "no job started"
        time.sleep(0.05)


def _one_frame_request_seconds(client) -> float:
    """How long a one-frame, one-step /extend of the asset clip takes (and that it succeeds)."""
    from gradio_client import handle_file

    start = time.time()
    assert _frames(client.predict(handle_file(ASSET), 1, 1, 1, api_name="/extend")) == 8 + 1
    return time.time() - start


def _delay_after_cancel(client, submit):
    """``submit()`` a job, ``job.cancel()`` it once it runs, then time a one-frame request: returns the job and how
    much longer that request took than on an idle worker."""
    alone = _one_frame_request_seconds(client)
    job = submit()
    _wait_until_running(job)
    assert not job.done(), "the request ended before it could be cancelled: give it more work"
    job.cancel()
    return job, _one_frame_request_seconds(client) - alone


def test_a_cancelled_extend_frees_the_worker_at_once(server):
    from gradio_client import Client, handle_file

    client = Client(server, verbose=False)
    # 64 frames at 16 steps, one frame at a time: 1024 model calls, many seconds
    _, delay = _delay_after_cancel(client, lambda: client.submit(handle_file(ASSET), 64, 16, 1, api_name="/extend"))
    assert delay < 2.0


@pytest.fixture(scope="module")
def huge_files(tmp_path_factory):
    """The reliability issue's adversarial uploads, made in about a second: 1999 grey 4096 × 4096
    frames as an mp4 (16 encoded frames looped by stream copy, so the file has a duration and
    keyframes every 16 frames; the issue's file, encoded whole, takes ~50 s to make here), the same
    as a raw H.264 stream named .mp4 (no duration: it can only be decoded from its start), and the raw
    stream's first 240 frames (under the decode budget: ~3 s of decoding to cancel)."""
    import imageio_ffmpeg

    ffmpeg, folder = imageio_ffmpeg.get_ffmpeg_exe(), tmp_path_factory.mktemp("huge")
    run = lambda *args: subprocess.run([ffmpeg, "-v", "error", "-y", *args], check=True)  # noqa: E731
    run("-f", "lavfi", "-i", "color=c=gray:size=4096x4096:rate=8", "-frames:v", "16", "-c:v", "libx264",
        "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(folder / "short.mp4"))
    run("-stream_loop", "-1", "-i", str(folder / "short.mp4"), "-frames:v", "1999", "-c", "copy", str(folder / "huge.mp4"))
    run("-i", str(folder / "huge.mp4"), "-c", "copy", "-bsf:v", "h264_mp4toannexb", "-f", "h264", str(folder / "raw.mp4"))
    run("-i", str(folder / "huge.mp4"), "-frames:v", "240", "-c", "copy", "-bsf:v", "h264_mp4toannexb", "-f", "h264", str(folder / "long-raw.mp4"))
    return {name: str(folder / name) for name in ("huge.mp4", "raw.mp4", "long-raw.mp4")}


def test_huge_uploads_are_answered_within_seconds(server, huge_files):
    """1999 frames of 4096²: with a duration only the end is decoded (an answer in seconds); without
    one the decode budget refuses it after ~250 frames; either way the next request works."""
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    client = Client(server, verbose=False)
    start = time.time()
    assert _frames(client.predict(handle_file(huge_files["huge.mp4"]), 1, 1, 1, api_name="/extend")) == 8 + 1
    assert time.time() - start <= 30
    start = time.time()
    with pytest.raises(AppError, match=r"raw.mp4 needs more than .* G pixels decoded .*no duration"):
        client.predict(handle_file(huge_files["raw.mp4"]), 1, 1, 1, api_name="/extend")
    assert time.time() - start <= 30
    assert _one_frame_request_seconds(client) < 10


def test_a_cancelled_decode_frees_the_worker_at_once(server, huge_files):
    """A client's ``job.cancel()`` while it decodes 240 frames of 4096² (a raw stream: decoded from its start, ~3 s)
    frees the worker within 2 s."""
    from gradio_client import Client, handle_file

    client = Client(server, verbose=False)
    _, delay = _delay_after_cancel(
        client, lambda: client.submit(handle_file(huge_files["long-raw.mp4"]), 1, 1, 1, api_name="/extend"))
    assert delay < 2.0


def test_stop_while_the_clip_decodes(server, huge_files):
    """Stop pressed while 240 frames of 4096² decode (~3 s) ends the request before it generates."""
    from gradio_client import Client, handle_file

    client = Client(server, verbose=False)
    job = client.submit(handle_file(huge_files["long-raw.mp4"]), *controls(), api_name="/generate")
    _wait_until_running(job)  # it decodes the clip first
    start = time.time()
    assert client.predict(api_name="/stop").startswith("Stopping")
    job.result(timeout=30)
    assert time.time() - start < 1.0
    assert job.outputs()[-1][2] == "Stopped while reading the clip: nothing was generated."


def test_a_cancelled_stream_stops_between_denoising_steps(server):
    """/stream of 64 frames at 48 steps in chunks of 16 (its first frame needs 48 forwards of 16 frames,
    many seconds): a ``job.cancel()`` as soon as the first denoising step is reported frees the worker
    within 2 s, before any frame is finished: cancelling acts between denoising steps, not only between
    frames."""
    from gradio_client import Client, handle_file

    client = Client(server, verbose=False)
    alone = _one_frame_request_seconds(client)
    job = client.submit(handle_file(ASSET), 64, 48, 0, 16, api_name="/stream")
    deadline = time.time() + 60
    while not any("step 1/" in status for _, status in job.outputs()):  # the first step's report
        assert not job.done(), f"the stream ended before reporting a step: {job.exception()!r}"
        assert time.time() < deadline, "no denoising step was reported"
        time.sleep(0.02)
    job.cancel()
    assert _one_frame_request_seconds(client) - alone < 2.0
    assert not any(isinstance(image, str) for image, _ in job.outputs())  # stopped before its first frame


def test_an_abandoned_request_frees_the_worker(server):
    """A client that submits a 64-frame /extend (1024 model calls) and dies once it runs (its process killed, its
    connection gone): the worker is free again within 5 s."""
    from gradio_client import Client

    script = (f"import time; from gradio_client import Client, handle_file; from gradio_client.utils import Status\n"
              f"c = Client({server!r}, verbose=False); j = c.submit(handle_file({ASSET!r}), 64, 16, 1, api_name='/extend')\n"
              "while j.status().code not in (Status.PROCESSING, Status.ITERATING, Status.PROGRESS): time.sleep(0.05)\n"
              "print('running', flush=True); time.sleep(600)")  # then it waits to be killed
    client = Client(server, verbose=False)
    alone = _one_frame_request_seconds(client)
    doomed = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, **OFFLINE}, stdout=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([doomed.stdout], [], [], 120)
        assert ready and doomed.stdout.readline().strip() == "running", "the doomed client's request never ran"
    finally:
        doomed.kill()
        doomed.wait()
    assert _one_frame_request_seconds(client) - alone < 5.0


def test_twenty_concurrent_requests_all_get_an_answer(server):
    """20 clients at once: each gets its video or a clear "busy" refusal (the queue holds 16), none
    hangs, and the worker serves a normal request after."""
    from concurrent.futures import ThreadPoolExecutor

    from gradio_client import Client, handle_file

    def one(i):
        try:
            return "video", _frames(Client(server, verbose=False).predict(handle_file(ASSET), 1, 1, 1, i, api_name="/extend"))
        except Exception as err:  # noqa: BLE001 - the message is what is checked
            return "refused", str(err)

    start = time.time()
    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(one, range(20)))
    assert time.time() - start < 120
    videos = [a for kind, a in answers if kind == "video"]
    refusals = [a for kind, a in answers if kind == "refused"]
    assert all(frames == 8 + 1 for frames in videos) and len(videos) >= 16
    assert all("queue is full" in message.lower() or "busy" in message.lower() for message in refusals), refusals
    assert _one_frame_request_seconds(Client(server, verbose=False)) < 10


def test_cheap_events_never_wait_behind_queued_generations(server):
    """16 generations in the queue: the page, a new client, the light cone and Stop still answer at once."""
    from gradio_client import Client, handle_file

    busy = Client(server, verbose=False)
    jobs = [busy.submit(handle_file(ASSET), *controls(frames=256, steps=8, chunk=4), api_name="/generate") for _ in range(16)]
    try:
        _wait_until_running(*jobs)
        for check in (lambda: urllib.request.urlopen(server, timeout=10).read(),
                      lambda: Client(server, verbose=False).predict(5, 3, 2, 4, 16, 8, 8, 4, 4, 0, api_name="/light_cone")):
            start = time.time()
            check()
            assert time.time() - start <= 3.0
    finally:
        for job in reversed(jobs):
            job.cancel()
    start = time.time()
    Client(server, verbose=False).predict(handle_file(ASSET), 1, 1, 1, api_name="/extend")  # the worker is free again
    assert time.time() - start < 10


def test_stream_yields_every_frame_as_it_is_finished(client):
    """The streaming endpoint, from nothing (no clip): one image and status per finished frame, and a
    status alone (image unchanged) after every denoising step."""
    from PIL import Image

    job = client.submit(None, 4, 2, 0, 8, api_name="/stream")  # 2 steps, chunks of 8
    seen = [output for output in job]  # iterate while it runs
    outputs = job.outputs()
    frames = [(image, status) for image, status in outputs if isinstance(image, str)]
    steps = [status for image, status in outputs if not isinstance(image, str)]
    assert len(frames) == 4 and len(seen) >= 1
    first = BUNDLED["real-time"].first_frame_steps  # from nothing, the first frame comes alone, with its own steps
    assert BUNDLED["real-time"].first_chunk == 0  # then the chunks of 8 (the request's): the other 3 frames at once
    assert steps == [f"0/4 frames · first frame (from nothing) · step {i}/{first}" for i in range(1, first + 1)] + [
        "1/4 frames · chunk 2/2 (frames 2-4) · step 1/2", "1/4 frames · chunk 2/2 (frames 2-4) · step 2/2"]
    image, status = frames[-1]
    assert Image.open(image).size == (256, 256)
    assert status.startswith("frame 4/4") and "frames/s" in status


def test_stream_refuses_a_bad_chunk(client):
    """/stream's optional chunk (after the seed) is checked like every other control."""
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="chunk must be between 1 and 16, got 0"):
        client.predict(None, 4, 2, 0, 0, api_name="/stream")


def test_generate_from_nothing(client):
    video, strip, status, plot, live, session = client.predict(None, *SETTINGS, api_name="/generate")
    assert _frames(video) == 4 and "Generated 4 frames after 0 context frames" in status


def test_light_cone_endpoint(client):
    plot, cost = client.predict(5, 3, 2, 4, 16, 8, 8, 4, 4, 0, api_name="/light_cone")
    assert plot is not None
    assert "paper's formula" in cost and "Dense frame-causal attention" in cost
    plot, cost = client.predict(5, 3, 2, 4, 16, 8, 8, 4, 4, "5", api_name="/light_cone")  # the type view_api() advertises
    assert plot is not None
    with pytest.raises(Exception, match="layer must be one of"):
        client.predict(5, 3, 2, 4, 16, 8, 8, 4, 4, "9", api_name="/light_cone")


def test_missing_weights_is_a_clear_error(tmp_path):
    proc = subprocess.run([sys.executable, "app.py", "--weights", str(tmp_path / "nowhere")], cwd=ROOT,
                          env={**os.environ, **OFFLINE}, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "does not exist" in proc.stderr


def test_a_request_stopped_while_waiting_stays_stopped_across_a_sweep(tiny_model):
    """Stop marks the tab's waiting requests; the periodic sweep, which forgets tabs without a
    session, must keep the Stop count of a tab whose request is still in the queue (it once
    forgot it, and the dropped request then ran: a flaky browser test)."""
    from types import SimpleNamespace

    from msc.app import MSCApp

    generate = MSCApp(tiny_model).generate_tab
    policy = generate.policy
    tab = SimpleNamespace(session_hash="tab-b")  # never generated: no session of its own
    first, second = policy.take_ticket(tab), policy.take_ticket(tab)
    assert policy.stop(tab) == "Dropped 2 waiting request(s); nothing was running."
    later = policy.take_ticket(tab)  # made after Stop: runs
    generate.sweep()
    assert policy.stopped_while_waiting(first, tab)
    generate.sweep()
    assert policy.stopped_while_waiting(second, tab)
    assert not policy.stopped_while_waiting(later, tab)
    assert policy.stop(tab) == "Nothing is running."
    generate.sweep()  # nothing waits any more: the tab is forgotten
    assert "tab-b" not in policy.stops and "tab-b" not in policy.queued
    closing = SimpleNamespace(session_hash="tab-c")
    policy.take_ticket(closing)
    generate.close_tab(closing)  # Gradio drops a closed tab's queued requests: nothing keeps it
    generate.sweep()
    assert "tab-c" not in policy.stops and "tab-c" not in policy.queued


@pytest.mark.browser
def test_browser_upload_generate_and_play(server, tmp_path, browser):
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.goto(server, wait_until="load")
    page.get_by_role("button", name="Generate from nothing").wait_for(timeout=30_000)
    page.locator("input[type=file]").first.set_input_files(ASSET)
    page.get_by_text("8 context frames at 64×64").wait_for(timeout=30_000)
    page.get_by_role("button", name="Extend the clip").click()
    page.get_by_text("frames/s").first.wait_for(timeout=60_000)  # the live readout while frames arrive
    page.get_by_text("Generated 16 frames after 8 context frames").wait_for(timeout=60_000)
    output = page.locator("video").nth(1)
    output.wait_for(timeout=30_000)
    page.wait_for_function("v => v.readyState >= 1 && v.duration > 0", arg=output.element_handle(), timeout=30_000)
    duration = output.evaluate("v => v.duration")
    assert duration == pytest.approx(24 / 8, abs=0.3)  # 24 frames at 8 fps
    output.evaluate("v => { v.muted = true; return v.play(); }")
    page.wait_for_function("v => v.currentTime > 0", arg=output.element_handle(), timeout=10_000)
    page.screenshot(path=str(tmp_path / "app.png"), full_page=True)

    def output_duration(seconds):
        page.wait_for_function(
            f"() => {{ const v = document.querySelectorAll('video')[1]; return v && v.duration > 0 && Math.abs(v.duration - {seconds}) < 0.3; }}",
            timeout=60_000)

    page.get_by_role("button", name="Continue").click()
    page.get_by_text("Continued with 16 frames").wait_for(timeout=60_000)
    output_duration(40 / 8)  # 24 + 16 frames
    chunk = BUNDLED["default"].chunk  # the page's chunk control starts at the default
    page.get_by_role("button", name="Undo last chunk").click()
    page.get_by_text(f"Undid the last chunk ({chunk} frames); {32 - chunk} generated frames left").wait_for(timeout=30_000)
    output_duration((40 - chunk) / 8)
    page.get_by_role("button", name="Undo last chunk").click()
    page.get_by_text(f"{32 - 2 * chunk} generated frames left").wait_for(timeout=30_000)
    assert (tmp_path / "app.png").stat().st_size > 10_000


@pytest.mark.browser
def test_browser_stop_while_waiting_drops_the_request(server, browser):
    """Tab B's Generate waits behind tab A's; B's Stop drops it before it starts, A runs on until its Stop."""
    a, b = browser.new_page(), browser.new_page()
    for page in (a, b):
        page.goto(server, wait_until="load")
        page.get_by_role("button", name="Generate from nothing").wait_for(timeout=30_000)
    a.get_by_label("Frames to generate").first.fill("256")  # long enough to still run when B stops
    a.get_by_label("Frames to generate").first.press("Enter")
    a.get_by_role("button", name="Generate from nothing").click()
    a.get_by_text("frames/s").first.wait_for(timeout=60_000)  # A is running
    b.get_by_role("button", name="Generate from nothing").click()
    # B waits in the queue: Gradio shows its place once the ticket is taken and the request queued
    # (a fixed sleep raced the ticket on a loaded CI machine, so Stop found nothing waiting)
    b.get_by_text(re.compile(r"queue: \d+/\d+")).first.wait_for(timeout=30_000)
    b.get_by_role("button", name="Stop").click()
    b.get_by_text("Dropped 1 waiting request").wait_for(timeout=10_000)
    a.get_by_role("button", name="Stop").click()
    a.get_by_text("Stopped: kept the").wait_for(timeout=60_000)
    b.get_by_text("Stopped before it started").wait_for(timeout=60_000)


def test_every_api_parameter_has_a_name(tiny_model):
    """The API names every parameter (no ``param_N``): /generate and /continue take the controls by name, so a new
    setting never moves a client's arguments."""
    from msc.app import MSCApp
    from msc.studio import CONTROLS

    endpoints = MSCApp(tiny_model).build().get_api_info()["named_endpoints"]
    names = {api: [p["parameter_name"] for p in info["parameters"]] for api, info in endpoints.items()}
    assert not [(api, n) for api, ns in names.items() for n in ns if n.startswith("param_")], names
    assert names["/generate"] == ["clip", *CONTROLS] and names["/continue"] == ["session_id", *CONTROLS]


def test_the_readmes_api_example_runs_as_written(server):
    """The README's gradio_client example, run as written against the app (its URL replaced by the test server's)."""
    readme = open(os.path.join(ROOT, "README.md")).read()
    start = readme.index("```python\n", readme.index("From `gradio_client`")) + len("```python\n")
    code = readme[start:readme.index("```", start)].replace("http://127.0.0.1:7860", server)
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, **OFFLINE}, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Continued with 8 frames after 8 context frames" in proc.stdout


def test_a_flood_of_previews_never_delays_the_light_cone(tiny_model, huge_files):
    """Six previews of a 4096² clip at once and ten light cones beside them (in process, through the handlers the
    events call): the previews decode one at a time (the others wait for the slot or are told the server is busy),
    and the light cones, with slots of their own, answer within seconds: within 3 s at the median (the issue's bar, on
    an idle machine) or, on a machine busy with other work, within 4× their median without the previews, measured just
    before (one decode holds one of the two cores; six at once, as without the slot, would hold both)."""
    import statistics
    from concurrent.futures import ThreadPoolExecutor

    import gradio as gr

    from msc.app import MSCApp

    app = MSCApp(tiny_model)
    decoding, most = [0], [0]
    original = app.slots["preview"]

    class Counting:  # the preview slot, counting how many hold it
        def acquire(self, timeout):
            got = original.acquire(timeout=timeout)
            if got:
                decoding[0] += 1
                most[0] = max(most[0], decoding[0])
            return got

        def release(self):
            decoding[0] -= 1
            original.release()

    app.slots["preview"] = Counting()

    def preview():
        try:
            app.generate_tab.preview_clip(huge_files["long-raw.mp4"], 8)
        except gr.Error as err:
            assert "busy" in err.message or "decoded" in err.message, err.message
        return None

    def cone():
        start = time.time()
        app.explain.cone(5, 3, 2, 4, 16, 8, 8, 2, 2, "0")
        return time.time() - start

    with ThreadPoolExecutor(10) as pool:
        alone = statistics.median(pool.map(lambda _: cone(), range(10)))
    with ThreadPoolExecutor(16) as pool:
        previews = [pool.submit(preview) for _ in range(6)]
        cones = [pool.submit(cone) for _ in range(10)]
        seconds = [c.result(timeout=300) for c in cones]
        for p in previews:
            p.result(timeout=300)
    assert most[0] == 1
    assert statistics.median(seconds) <= max(3.0, 4 * alone), (seconds, alone)


def test_paced_slots_space_the_starts_of_a_flood():
    """Eight threads asking at once for a slot paced at 20 starts a second are given start times at least 1/20 s apart,
    none goes before its start time (a busy machine only makes them later: what the clock reads after the turn is
    never earlier than the turn), never more than the slots at a time, and a request that cannot get a slot within its
    wait is refused."""
    from concurrent.futures import ThreadPoolExecutor

    from msc.app_common import PacedSlots

    slots, starts, holding, most = PacedSlots(2, 20.0), [], [0], [0]
    lock = threading.Lock()

    def take():
        start = slots.acquire(timeout=30)
        went = time.monotonic()
        assert start and went >= start
        with lock:
            starts.append(start)
            holding[0] += 1
            most[0] = max(most[0], holding[0])
        with lock:
            holding[0] -= 1
        slots.release()

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: take(), range(8)))
    gaps = [b - a for a, b in zip(sorted(starts), sorted(starts)[1:])]
    assert len(starts) == 8 and min(gaps) >= 0.05 - 1e-9 and most[0] <= 2
    single = PacedSlots(1, 1000.0)
    assert single.acquire(timeout=1) and not single.acquire(timeout=0.01)
    single.release()


def test_the_read_grace_grows_with_the_load_per_core(monkeypatch):
    """A client has the idle machine's grace to open its event stream on a machine no busier than its cores, longer
    in proportion on an oversubscribed one (its threads are slower to run), never more than MAX_LOAD_SLOWDOWN times."""
    import os

    from msc import app_common
    from msc.app_common import MAX_LOAD_SLOWDOWN, READ_GRACE_BUSY_S, READ_GRACE_S, read_grace

    cores = len(os.sched_getaffinity(0))
    for load, slowdown in [(0.0, 1.0), (cores, 1.0), (2.5 * cores, 2.5), (100.0 * cores, MAX_LOAD_SLOWDOWN)]:
        monkeypatch.setattr(app_common.os, "getloadavg", lambda load=load: (load, load, load))
        assert read_grace(busy=True) == pytest.approx(READ_GRACE_BUSY_S * slowdown)
        assert read_grace(busy=False) == pytest.approx(READ_GRACE_S * slowdown)

    def unsupported():
        raise OSError("no load average here")

    monkeypatch.setattr(app_common.os, "getloadavg", unsupported)
    assert read_grace(busy=True) == READ_GRACE_BUSY_S


def test_client_rate_limit_refuses_a_flood_at_the_door():
    """A client over its rate of one kind of API request is answered 429 before the app sees the request; other
    clients, other kinds, pages and event streams are not affected, and the bucket refills at its rate."""
    import asyncio

    from msc.app_common import CLIENT_LIMITS, ClientRateLimit

    now, seen = [0.0], []

    async def app(scope, receive, send):
        seen.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    limit = ClientRateLimit(app, clock=lambda: now[0])

    def request(path, client="10.0.0.1", method="POST"):
        answer = {}

        async def send(message):
            answer.setdefault("status", message.get("status"))
            answer["body"] = message.get("body", b"")

        asyncio.run(limit({"type": "http", "method": method, "path": path, "client": (client, 5000)}, None, send))
        return answer

    (rate, burst), preview = CLIENT_LIMITS["direct"], "/gradio_api/run/predict"
    statuses = [request(preview)["status"] for _ in range(burst + 3)]
    assert statuses == [200] * burst + [429] * 3 and seen.count(preview) == burst
    assert "Too many requests" in json.loads(request(preview)["body"])["error"]
    assert request(preview, client="10.0.0.2")["status"] == 200  # another address
    assert request("/gradio_api/queue/join")["status"] == 200  # another kind of route
    assert request("/gradio_api/queue/data", method="GET")["status"] == 200  # event streams and pages: never
    assert request("/")["status"] == 200
    now[0] += 1.0  # a second later: a second's worth of tokens
    refilled = int(rate)
    assert [request(preview)["status"] for _ in range(refilled + 1)] == [200] * refilled + [429]
