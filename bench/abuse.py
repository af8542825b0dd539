"""A generation under a flood of expensive cheap calls, through the server: ``python -m bench.abuse`` (about 3 minutes,
on an idle machine).

The reliability bar: with **six concurrent previews** of a clip that is expensive to decode and **ten parallel light
cones**, a light cone answers within 3 s at the median and a queued 16-frame generation takes at most 1.5× its time
on an idle server. Everything goes through ``python app.py`` on loopback, as an outside client would send it:

* the clip: 240 frames of 4096² H.264 with no container (so no duration: the decoder must read it frame by frame until
  the app's decode budget stops it), uploaded once through ``/gradio_api/upload``;
* the previews: the clip-preview handler, which the UI calls when a clip is dropped, called by its ``fn_index``
  through ``/gradio_api/run/predict`` (it is private: not in the API, but reachable as the browser reaches it), six
  clients in a loop for the whole measurement;
* the light cones: ``/light_cone`` through ``gradio_client``, ten clients in a loop;
* with ``--refused N``: N more clients, each sending :data:`REFUSED_RATE` previews a second of a file whose extension
  the app refuses (Gradio refuses it before the handler runs: only the server's door, ``ClientRateLimit``, bounds what
  such a flood costs);
* the generation: ``/generate`` through ``gradio_client``, 16 frames after the 8 context frames of
  ``assets/heldout_0.mp4`` at the default settings; three times on the idle server, then three times under the flood.

Before the flood, the bar on **results nobody reads**: one client sends :data:`UNREAD_POSTS` ``POST
/gradio_api/call/extend`` (the same clip, 16 frames each) and never opens their event streams; the next client's
``/extend`` of 16 frames (through ``gradio_client``, retrying every 0.2 s while the server answers "queue full", as
a client does) may wait at most one generation: its time to the result less the same request's time on the idle
server is at most that idle time.

The table goes to ``bench/results/abuse.md`` (and ``.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid

from bench import ROOT, app_server, write_results

CLIP = os.path.join(ROOT, "assets", "heldout_0.mp4")
PREVIEWS, CONES, RUNS = 6, 10, 3
REFUSED_RATE = 10.0  # refused previews a second per --refused client (a paced sender: the flood's rate is the bench's)
MAX_CONE_MEDIAN_S, MAX_SLOWDOWN = 3.0, 1.5
UNREAD_POSTS, RETRY_PAUSE_S = 20, 0.2


def expensive_clip(folder: str) -> str:
    """240 frames of 4096² grey as a raw H.264 stream (no container, so no duration)."""
    ffmpeg = shutil.which("ffmpeg") or __import__("imageio_ffmpeg").get_ffmpeg_exe()

    def run(*args):
        subprocess.run([ffmpeg, "-v", "error", "-y", *args], check=True)

    short, path = os.path.join(folder, "short.mp4"), os.path.join(folder, "long-raw.mp4")
    run("-f", "lavfi", "-i", "color=c=gray:size=4096x4096:rate=8", "-frames:v", "16", "-c:v", "libx264", "-preset",
        "ultrafast", "-pix_fmt", "yuv420p", short)
    run("-stream_loop", "-1", "-i", short, "-frames:v", "240", "-c", "copy", "-bsf:v", "h264_mp4toannexb", "-f", "h264", path)
    return path


def upload(url: str, path: str) -> str:
    """The server-side path of ``path`` uploaded through ``/gradio_api/upload`` (multipart, as a browser sends it)."""
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{os.path.basename(path)}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode() + open(path, "rb").read() + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(f"{url}/gradio_api/upload", data=body,
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    return json.load(urllib.request.urlopen(request, timeout=60))[0]


def preview_index(url: str) -> int:
    """The ``fn_index`` of the clip-preview handler, from the app's ``/config`` (what a browser reads)."""
    config = json.load(urllib.request.urlopen(f"{url}/config", timeout=30))
    return next(i for i, d in enumerate(config["dependencies"]) if d.get("api_name") == "preview_clip")


def preview(url: str, index: int, server_path: str) -> float:
    """One preview call through ``/gradio_api/run/predict``; its seconds (an error answer counts: it was answered)."""
    data = {"fn_index": index, "session_hash": uuid.uuid4().hex[:11],
            "data": [{"path": server_path, "orig_name": os.path.basename(server_path), "meta": {"_type": "gradio.FileData"}}, 8]}
    request = urllib.request.Request(f"{url}/gradio_api/run/predict", data=json.dumps(data).encode(),
                                     headers={"Content-Type": "application/json"})
    start = time.time()
    try:
        urllib.request.urlopen(request, timeout=300).read()
    except urllib.error.HTTPError as err:  # "busy" / "decode budget": an answer
        err.read()
    except OSError:  # the server is going away at the end
        pass
    return time.time() - start


def generation_seconds(client) -> float:
    from gradio_client import handle_file

    start = time.time()
    client.predict(clip=handle_file(CLIP), frames=16, api_name="/generate")
    return time.time() - start


def extend_seconds(client) -> float:
    """One ``/extend`` of 16 frames after the clip, retried while the queue is full: seconds to the result."""
    from gradio_client import handle_file
    from gradio_client.utils import QueueError

    start = time.time()
    while True:
        try:
            client.predict(handle_file(CLIP), 16, api_name="/extend")
            return time.time() - start
        except QueueError:  # "queue full": a client tries again
            if time.time() - start > 300:
                raise
            time.sleep(RETRY_PAUSE_S)


def post_unread(url: str, server_path: str, count: int) -> int:
    """``count`` ``POST /gradio_api/call/extend`` of the uploaded clip whose results are never read; how many the server
    accepted (the rest were told the queue is full)."""
    accepted = 0
    for seed in range(count):
        body = json.dumps({"data": [{"path": server_path, "meta": {"_type": "gradio.FileData"}}, 16, None, None, seed]})
        request = urllib.request.Request(f"{url}/gradio_api/call/extend", data=body.encode(),
                                         headers={"Content-Type": "application/json"})
        try:
            urllib.request.urlopen(request, timeout=30).read()  # the event id; its stream is never opened
            accepted += 1
        except urllib.error.HTTPError as err:  # 503: the queue is full; anything else is the server failing
            if err.code != 503:
                raise
            err.read()
    return accepted


def unread_wait(url: str, client) -> dict:
    """The next client's ``/extend`` after :data:`UNREAD_POSTS` unread posts, beside the same request on the idle server."""
    idle = [extend_seconds(client) for _ in range(RUNS)]
    accepted = post_unread(url, upload(url, CLIP), UNREAD_POSTS)
    after = extend_seconds(client)
    return {"idle_extend_s": idle, "unread_accepted": accepted, "extend_after_unread_s": after}


def flood(url: str, index: int, server_path: str, stop: threading.Event, cone_times: list, preview_times: list,
          previews_n: int = PREVIEWS, cones_n: int = CONES, refused_path: str = "", refused_n: int = 0,
          refused_times: list = None) -> list:
    """Start the preview loops, the light-cone loops and the refused-preview senders; they run until ``stop`` is set."""
    from gradio_client import Client

    def refused():
        while not stop.wait(1.0 / REFUSED_RATE):
            refused_times.append(preview(url, index, refused_path))

    def previews():
        while not stop.is_set():
            preview_times.append(preview(url, index, server_path))

    def cones():
        client = Client(url, verbose=False)
        while not stop.is_set():
            start = time.time()
            try:
                client.predict(api_name="/light_cone")
            except Exception:  # the server said busy, or is going away at the end: only answers are timed
                continue
            cone_times.append(time.time() - start)

    threads = [threading.Thread(target=previews, daemon=True) for _ in range(previews_n)]
    threads += [threading.Thread(target=cones, daemon=True) for _ in range(cones_n)]
    threads += [threading.Thread(target=refused, daemon=True) for _ in range(refused_n)]
    for t in threads:
        t.start()
    return threads


def measure(log_path: str, previews_n: int = PREVIEWS, cones_n: int = CONES, refused_n: int = 0) -> dict:
    from gradio_client import Client

    with tempfile.TemporaryDirectory() as folder, app_server(log_path=log_path) as url:
        clip = expensive_clip(folder)
        client = Client(url, verbose=False)
        generation_seconds(client)  # warm-up: the first request loads what it needs
        idle = [generation_seconds(client) for _ in range(RUNS)]
        unread = unread_wait(url, client)
        cone_client = Client(url, verbose=False)
        cones_alone = []
        for _ in range(CONES):
            start = time.time()
            cone_client.predict(api_name="/light_cone")
            cones_alone.append(time.time() - start)
        index, server_path = preview_index(url), upload(url, clip)
        notes = os.path.join(folder, "notes.txt")
        with open(notes, "w") as f:
            f.write("not a video\n")
        refused_path = upload(url, notes)
        stop, cone_times, preview_times, refused_times = threading.Event(), [], [], []
        threads = flood(url, index, server_path, stop, cone_times, preview_times, previews_n, cones_n, refused_path,
                        refused_n, refused_times)
        time.sleep(5)  # the flood under way before the generations are queued behind it
        flooded = [generation_seconds(client) for _ in range(RUNS)]
        stop.set()
        for t in threads:
            t.join(timeout=300)
    return {"idle_generation_s": idle, "flooded_generation_s": flooded, "cone_alone_s": cones_alone,
            "cone_flooded_s": cone_times, "preview_s": preview_times, "refused_s": refused_times,
            "clients": {"previews": previews_n, "cones": cones_n, "refused": refused_n}, **unread}


def summary(raw: dict) -> dict:
    idle, flooded = statistics.median(raw["idle_generation_s"]), statistics.median(raw["flooded_generation_s"])
    cone = statistics.median(raw["cone_flooded_s"] or [0.0])
    extend = statistics.median(raw["idle_extend_s"])
    unread_wait_s = raw["extend_after_unread_s"] - extend  # what the unread posts cost the next client
    return {"idle_extend_median_s": extend, "extend_after_unread_s": raw["extend_after_unread_s"],
            "unread_wait_s": unread_wait_s, "unread_accepted": raw["unread_accepted"],
            "idle_generation_median_s": idle, "flooded_generation_median_s": flooded, "slowdown": flooded / idle,
            "cone_alone_median_s": statistics.median(raw["cone_alone_s"]), "cone_flooded_median_s": cone,
            "cone_flooded_max_s": max(raw["cone_flooded_s"] or [0.0]), "cones_answered": len(raw["cone_flooded_s"]),
            "previews_answered": len(raw["preview_s"]), "refused_answered": len(raw.get("refused_s", [])),
            "met": flooded / idle <= MAX_SLOWDOWN and cone <= MAX_CONE_MEDIAN_S and unread_wait_s <= extend}


def table(s: dict) -> list:
    met = lambda ok: "met" if ok else "**not met**"  # noqa: E731
    return ["| measure | idle server | under the flood | bar |", "|---|---:|---:|---|",
            f"| 16-frame generation, median of {RUNS} (s) | {s['idle_generation_median_s']:.2f} | "
            f"{s['flooded_generation_median_s']:.2f} ({s['slowdown']:.2f}×) | ≤ {MAX_SLOWDOWN}×: {met(s['slowdown'] <= MAX_SLOWDOWN)} |",
            f"| light cone, median (s) | {s['cone_alone_median_s']:.2f} | {s['cone_flooded_median_s']:.2f} (worst "
            f"{s['cone_flooded_max_s']:.2f}) | ≤ {MAX_CONE_MEDIAN_S:.0f} s: {met(s['cone_flooded_median_s'] <= MAX_CONE_MEDIAN_S)} |",
            f"| 16-frame `/extend`, then after {UNREAD_POSTS} unread posts of one client ({s['unread_accepted']} queued) (s) | "
            f"{s['idle_extend_median_s']:.2f} | {s['extend_after_unread_s']:.2f} (waited {s['unread_wait_s']:.2f}) | "
            f"wait ≤ one generation: {met(s['unread_wait_s'] <= s['idle_extend_median_s'])} |",
            "", f"Answered during the flood: {s['cones_answered']} light cones, {s['previews_answered']} previews "
            "(a preview refused as busy or over the decode budget counts as answered)"
            + (f", {s['refused_answered']} previews of a refused file type." if s["refused_answered"] else ".")]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "abuse"))
    p.add_argument("--log", default=os.path.join(tempfile.gettempdir(), "bench_abuse_app.log"))
    p.add_argument("--previews", type=int, default=PREVIEWS, help="preview clients (the bar: 6)")
    p.add_argument("--cones", type=int, default=CONES, help="light-cone clients (the bar: 10)")
    p.add_argument("--refused", type=int, default=0,
                   help=f"clients each sending {REFUSED_RATE:g} previews a second of a file type the app refuses")
    p.add_argument("--beside", default="nothing else running", help="what else ran on the machine (for the table's note)")
    args = p.parse_args(argv)
    raw = measure(args.log, args.previews, args.cones, args.refused)
    s = summary(raw)
    machine = f"{platform.machine()}, {os.cpu_count()} cores"
    refused = (f", {args.refused} clients each sending {REFUSED_RATE:g} previews a second of a file type the app refuses"
               if args.refused else "")
    lines = [f"`python -m bench.abuse` on {machine}, {args.beside}; `python app.py` with the bundled weights, "
             f"{args.previews} clients previewing 240 frames of 4096² H.264 without a container through the private "
             f"preview handler and {args.cones} clients asking for light cones, all in loops{refused}, while 16-frame "
             f"generations are queued. Before the flood, one client posts {UNREAD_POSTS} `/extend` requests and never "
             "reads their results, and the next client asks for the same `/extend`.",
             "", *table(s)]
    write_results(args.out, {"machine": machine, **s, "raw": raw}, lines)
    return 0 if s["met"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
