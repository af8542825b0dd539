"""Live streaming benchmark: which sampler settings can be watched in real time on this machine, at what
quality, and what the app's ``/stream`` endpoint delivers end to end.

    python -m bench.stream --data data            # the table in bench/results/stream.md (a few minutes)

1. **Grid** (in process, the bundled model, one held-out real clip's last 8 frames as context):
   time to the first finished frame and frames/s over 64 new frames for denoising steps × chunk size, and for every
   steps the largest chunk after a smaller first chunk (``--first-chunks``), beside the quality of the same
   settings (mean PSNR / SSIM of 8-frame continuations of 16 held-out real clips, as ``msc.evaluate`` scores them;
   copy-last for scale).
2. **The choice**: the real-time preset is the best-PSNR setting that keeps at least
   ``--min-fps`` frames/s and the first frame within ``--max-first-s`` (0.3 s) in process: the live preview's goal is
   its first frame 0.5 s after a clip is sent, and the upload, the decoding and the HTTP and PNG work take the rest.
   Then its **precision**: the chosen setting timed in float32 and with ``precision="bfloat16"`` (the network's
   matrix multiplies under bf16 autocast, where the processor has bf16 units) alternately, three times each; bfloat16
   is kept if its median frames/s is higher and its PSNR within ``--bf16-tolerance-db`` (0.05 dB) of float32's: bf16
   where quality is measured unchanged.
3. **End to end**: ``python app.py`` on a free port; ``gradio_client`` submits ``/stream`` (64 frames
   from nothing and from a clip) at every preset that ``/stream`` can run (the real-time preset with
   its own steps and chunk: the default too when it differs only in those), and the arrival time of
   every frame is recorded: first frame after submit, frames/s over the 64; and the CPU time the server and the client
   (this process: ``gradio_client`` reading the stream and downloading every frame) spent per frame, on the same two
   cores. The client is built as the README shows, with one SSL context for all its
   downloads; one more run uses ``gradio_client``'s default, which builds an SSL context for every frame it fetches.
4. **Why per-frame images and not HLS video streaming**: the cost of encoding one frame as the PNG
   the preview sends, against encoding a one-second mp4 segment (what ``gr.Video(streaming=True)``
   sends; the viewer cannot show a frame before its segment is complete).
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import ssl
import statistics
import tempfile
import time
from dataclasses import replace

import torch

from bench import ROOT, SERVERS, app_server, cpu_seconds, write_results

FRAMES = 64


def stream_speed(model, context, settings) -> dict:
    """Seconds to the first finished frame and frames/s over ``FRAMES`` new frames, in process."""
    from msc.sampling import FrameEvent, sample_frames

    start, arrivals = time.perf_counter(), []
    for event in sample_frames(model, context, FRAMES, settings):
        if isinstance(event, FrameEvent):
            arrivals.append(time.perf_counter() - start)
    return {"first_frame_s": arrivals[0], "fps": FRAMES / arrivals[-1]}


def quality(model, clips, settings) -> dict:
    from msc.evaluate import continuation_scores
    from msc.sampling import sample_video

    context, truth = clips[:, :8], clips[:, 8:]
    pred = sample_video(model, context, truth.shape[1], settings).video[:, 8:]
    scores = continuation_scores(pred, truth)
    return {"psnr": scores["psnr_mean"], "ssim": scores["ssim_mean"]}


def end_to_end(weights: str, clip: str, settings_list) -> list:
    """Frame arrival times through ``gradio_client`` for ``/stream`` at each (steps, chunk), the client built as the
    README shows (one SSL context for every download); then the first setting from a clip once more with
    ``gradio_client``'s default, which builds a new SSL context (the CA bundle read and parsed) for every frame it
    downloads, to show what that costs."""
    from gradio_client import Client, handle_file

    with app_server("--weights", weights) as url:
        clients = {"one SSL context": Client(url, verbose=False, ssl_verify=ssl.create_default_context()),
                   "default": Client(url, verbose=False)}
        for client in clients.values():
            client.predict(None, 4, 2, 0, api_name="/stream")  # warm-up
        runs = [(s, c, source, "one SSL context") for s, c in settings_list for source in ("nothing", "clip")]
        rows = []
        for steps, chunk, source, kind in runs + [(*settings_list[0], "clip", "default")]:
            client = clients[kind]
            server_cpu, client_cpu = cpu_seconds(SERVERS[url].pid), cpu_seconds()
            start, arrivals = time.perf_counter(), []
            job = client.submit(handle_file(clip) if source == "clip" else None, FRAMES, steps, 0, chunk, api_name="/stream")
            read = 0  # /stream also yields a status alone (no frame) while decoding and after every denoising step
            while not job.done() or len(job.outputs()) > read:
                outputs = job.outputs()
                now = time.perf_counter() - start
                arrivals.extend(now for _, status in outputs[read:] if str(status).startswith("frame "))
                read = len(outputs)
                time.sleep(0.005)
            job.result()
            server_cpu, client_cpu = cpu_seconds(SERVERS[url].pid) - server_cpu, cpu_seconds() - client_cpu
            seen = len(arrivals)
            if seen != FRAMES:
                raise RuntimeError(f"/stream gave {seen} frames for {FRAMES} asked (steps {steps}, chunk {chunk}, from {source}).")
            rows.append({"steps": steps, "chunk": chunk, "from": source, "client": kind, "frames": seen, "first_frame_s": arrivals[0],
                         "fps": seen / arrivals[-1], "server_cpu_ms_per_frame": 1000 * server_cpu / seen,
                         "client_cpu_ms_per_frame": 1000 * client_cpu / seen})
            print(f"  /stream steps {steps} chunk {chunk} from {source} ({kind} client): first frame {arrivals[0]:.2f} s, {seen / arrivals[-1]:.1f} frames/s",
                  flush=True)
        return rows


def encoding_costs(model) -> dict:
    """Milliseconds to encode one preview frame as PNG, and one second (8 frames) as an mp4 segment."""
    from PIL import Image

    from msc.studio import live_frame
    from msc.video import write_video

    frames = torch.rand(8, 3, model.config.image_size, model.config.image_size) * 2 - 1
    start = time.perf_counter()
    for f in frames:
        Image.fromarray(live_frame(f)).save(io.BytesIO(), format="png")
    png_ms = (time.perf_counter() - start) / len(frames) * 1000
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        write_video(os.path.join(tmp, "segment.mp4"), frames, fps=8, scale=4)
        segment_ms = (time.perf_counter() - start) * 1000
    return {"png_per_frame_ms": png_ms, "mp4_segment_8_frames_ms": segment_ms}


def measure_grid(model, context, clips, base, steps_list, chunks, first_chunks) -> list:
    """Speed and quality of every steps × chunk, and of every steps with the largest chunk after a smaller first chunk
    (``first_chunk``: the first frame of a small chunk, the frames/s of a large one)."""
    for chunk in sorted(set(chunks)):  # every shape's tilings, tables and allocations made before the first timing
        stream_speed(model, context, replace(base, steps=1, chunk=chunk))
    settings_list = [replace(base, steps=s, chunk=c, first_chunk=0) for s in steps_list for c in chunks]
    settings_list += [replace(base, steps=s, chunk=max(chunks), first_chunk=f) for s in steps_list for f in first_chunks]
    grid = []
    for settings in settings_list:
        row = {"steps": settings.steps, "chunk": settings.chunk, "first_chunk": settings.first_chunk,
               **stream_speed(model, context, settings), **quality(model, clips, settings)}
        grid.append(row)
        print(f"  steps {row['steps']} chunk {row['chunk']} first chunk {row['first_chunk'] or row['chunk']}: first "
              f"{row['first_frame_s']:.2f} s, {row['fps']:.1f} frames/s, PSNR {row['psnr']:.2f}", flush=True)
    return grid


def precision_choice(model, context, clips, base, choice: dict, tolerance_db: float, rounds: int = 3) -> dict:
    """The chosen grid row's setting in float32 and in bfloat16, timed alternately ``rounds`` times each (medians: one
    timing of each moves by 20-30 % on a shared 2-core machine), and which precision the preset takes: bfloat16 if it
    is faster and loses at most ``tolerance_db`` of PSNR."""
    from msc.environment import bf16_native

    chosen = replace(base, steps=choice["steps"], chunk=choice["chunk"], first_chunk=choice["first_chunk"])
    timings = {"float32": [], "bfloat16": []}
    stream_speed(model, context, replace(chosen, precision="bfloat16"))  # bf16's weights and tilings made first
    for r in range(rounds):
        for precision in (("float32", "bfloat16") if r % 2 == 0 else ("bfloat16", "float32")):
            timings[precision].append(stream_speed(model, context, replace(chosen, precision=precision)))
    median = {p: {k: statistics.median(t[k] for t in runs) for k in ("first_frame_s", "fps")} for p, runs in timings.items()}
    row = {**median["bfloat16"], **quality(model, clips, replace(chosen, precision="bfloat16"))}
    kept = median["bfloat16"]["fps"] > median["float32"]["fps"] and row["psnr"] >= choice["psnr"] - tolerance_db
    return {"bfloat16": row, "float32": median["float32"], "rounds": rounds, "bf16_native": bf16_native("cpu"),
            "choice": "bfloat16" if kept else "float32"}


def describe_choice(row: dict) -> str:
    return f"steps {row['steps']}, chunk {row['chunk']}" + (f", first chunk {row['first_chunk']}" if row["first_chunk"] else "")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default=os.path.join(ROOT, "weights"))
    p.add_argument("--data", default=os.path.join(ROOT, "data"), help="prepared data (python -m msc.data.prepare)")
    p.add_argument("--steps", type=int, nargs="+", default=[2, 4, 8, 16])
    p.add_argument("--chunks", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--first-chunks", type=int, nargs="*", default=[1, 2],
                   help="smaller first chunks tried before the largest chunk")
    p.add_argument("--min-fps", type=float, default=10.0)
    p.add_argument("--max-first-s", type=float, default=0.3,
                   help="in process; the rest of the live preview's 0.5 s goes to the clip's upload and decoding")
    p.add_argument("--bf16-tolerance-db", type=float, default=0.05,
                   help="the most PSNR the chosen setting may lose in bfloat16 for the preset to run it so")
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "stream"))
    args = p.parse_args(argv)

    from msc.data.mixture import PreparedData
    from msc.evaluate import copy_last, continuation_scores, held_out_set
    from msc.model import MSCModel
    from msc.sampling import load_presets

    model = MSCModel.from_pretrained(os.path.abspath(args.weights)).eval()
    clips = held_out_set("real", 16, 16, model.config.image_size, PreparedData(args.data))
    context = clips[:1, :8]
    baseline = continuation_scores(copy_last(clips[:, :8], 8), clips[:, 8:])
    machine = f"{platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads, torch {torch.__version__}"
    print(f"# {machine}", flush=True)
    presets = load_presets(os.path.abspath(args.weights))  # the weights' own presets
    base = replace(presets["default"], precision="float32")  # the grid in float32; bfloat16 is the choice's second look
    grid = measure_grid(model, context, clips, base, args.steps, args.chunks, args.first_chunks)
    live = [r for r in grid if r["fps"] >= args.min_fps and r["first_frame_s"] <= args.max_first_s]
    choice = max(live, key=lambda r: r["psnr"]) if live else None
    precision = precision_choice(model, context, clips, base, choice, args.bf16_tolerance_db) if choice else None
    preset = presets["real-time"]
    # /stream runs the real-time preset with any steps and chunk: the presets that differ from it only in those
    streamable = {}
    for name, candidate in presets.items():
        if replace(candidate, steps=preset.steps, chunk=preset.chunk) == preset:
            streamable.setdefault((candidate.steps, candidate.chunk), []).append(name)
    e2e = end_to_end(args.weights, os.path.join(ROOT, "assets", "heldout_0.mp4"), list(streamable))
    for row in e2e:
        row["presets"] = streamable[(row["steps"], row["chunk"])]
    costs = encoding_costs(model)
    report = {"machine": machine, "grid": grid, "copy_last": {"psnr": baseline["psnr_mean"], "ssim": baseline["ssim_mean"]},
              "rule": {"min_fps": args.min_fps, "max_first_s": args.max_first_s, "bf16_tolerance_db": args.bf16_tolerance_db},
              "choice": choice, "precision": precision,
              "preset": {"steps": preset.steps, "chunk": preset.chunk, "first_chunk": preset.first_chunk, "schedule": preset.schedule,
                         "precision": preset.precision},
              "end_to_end": e2e, "encoding": costs}

    lines = [f"Measured by `python -m bench.stream` on {machine}; the bundled model, 64 × 64 px.", "",
             f"**In process**: {FRAMES} new frames after 8 context frames of a held-out real clip; quality: 8-frame continuations of "
             f"16 held-out real clips (copy-last: PSNR {baseline['psnr_mean']:.2f}, SSIM {baseline['ssim_mean']:.3f}).", "",
             "| steps | chunk | first chunk | first frame (s) | frames/s | PSNR | SSIM |", "|---|---|---|---|---|---|---|"]
    for r in grid:
        mark = " **(chosen)**" if r is choice else ""
        lines.append(f"| {r['steps']} | {r['chunk']} | {r['first_chunk'] or r['chunk']}{mark} | {r['first_frame_s']:.2f} | {r['fps']:.1f} | "
                     f"{r['psnr']:.2f} | {r['ssim']:.3f} |")
    lines += ["", f"Rule: the best PSNR with ≥ {args.min_fps:g} frames/s and the first frame within {args.max_first_s:g} s in process "
              f"→ {describe_choice(choice) if choice else 'none qualifies'}; "
              f"the shipped real-time preset: {describe_choice(vars(preset))}, {preset.schedule}, {preset.precision}.", ""]
    if precision:
        bf = precision["bfloat16"]
        fp = precision["float32"]
        lines += [f"**Precision** of the chosen setting (bf16 units: {'yes' if precision['bf16_native'] else 'no'}; "
                  f"{precision['rounds']} timings of each, alternated, medians): bfloat16 first frame "
                  f"{bf['first_frame_s']:.2f} s, {bf['fps']:.1f} frames/s against float32's {fp['first_frame_s']:.2f} s, "
                  f"{fp['fps']:.1f} frames/s; PSNR {bf['psnr']:.2f}, SSIM {bf['ssim']:.3f}; kept if faster and within "
                  f"{args.bf16_tolerance_db:g} dB of float32's → **{precision['choice']}**.", ""]
    lines += [
              f"**End to end** (`gradio_client`, `/stream`, {FRAMES} frames, times from submit):", "",
              "| presets | steps | chunk | first chunk | from | client | first frame (s) | frames/s | CPU per frame: server / client (ms) |",
              "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {' = '.join(r['presets'])} | {r['steps']} | {r['chunk']} | {preset.first_chunk or r['chunk']} | {r['from']} | {r['client']} | "
              f"{r['first_frame_s']:.2f} | "
              f"{r['fps']:.1f} | {r['server_cpu_ms_per_frame']:.0f} / {r['client_cpu_ms_per_frame']:.0f} |" for r in e2e]
    lines += ["", "The client as the README builds it, `Client(url, ssl_verify=ssl.create_default_context())`, downloads every "
              "frame with one SSL context; `gradio_client`'s default builds a new one (the CA bundle read and parsed) for every "
              "file it downloads, even over plain HTTP (the last row)."]
    cores = os.cpu_count() or 1
    lines += ["", f"Both processes share the machine's {cores} cores: at 15 frames/s they have {1000 * cores / 15:.0f} ms of CPU a "
              "frame between them."]
    lines += ["", f"**Encoding** one preview frame as PNG: {costs['png_per_frame_ms']:.1f} ms; one second of video (8 frames) as an "
              f"mp4 segment: {costs['mp4_segment_8_frames_ms']:.0f} ms, and an HLS viewer shows no frame of a segment before "
              "the segment is complete (≥ 1 s of frames at 8 frames/s)."]
    write_results(args.out, report, lines)


if __name__ == "__main__":
    main()
