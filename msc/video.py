"""Video in and out with imageio + imageio-ffmpeg (docs/design.md §5).

``decode_video`` decodes mp4 / webm / mov / avi / mkv through ffmpeg (which also crops to the centre
square and resizes, so full-size frames never reach Python) and gif through Pillow, one frame at a
time so that a caller can stop it, and returns ``[T, 3, size, size]`` in [-1, 1]; ``read_video`` runs
it to the end. ``write_video``
writes H.264 yuv420p mp4 (what browsers play). Every failure a user can cause raises
:class:`VideoError` with one sentence saying what is wrong.
"""

from __future__ import annotations

import os
import re
import threading
from contextlib import contextmanager
from collections import deque
from dataclasses import dataclass
from typing import Generator, Iterator, Optional, TypeVar

import numpy as np
import torch
import torch.nn.functional as F

MAX_INPUT_PIXELS = 4096 * 4096  # larger frames are refused before decoding
MAX_INPUT_FRAMES = 2000
MAX_DECODED_PIXELS = MAX_INPUT_FRAMES * 1920 * 1088  # per decode: 2000 frames of 1080p, or as many pixels
T = TypeVar("T")
BACKGROUND_NICENESS = 19  # work that must yield the CPU to the sampler: the app's previews (lowest_priority)
_priority = threading.local()  # this thread's ffmpeg niceness (0 unless inside lowest_priority)


@contextmanager
def lowest_priority():
    """ffmpeg started by this thread inside the block runs at :data:`BACKGROUND_NICENESS`: work that only shows
    something (a clip's preview) never takes the CPU from a generation, however many clients ask for it."""
    before = getattr(_priority, "niceness", 0)
    _priority.niceness = BACKGROUND_NICENESS
    try:
        yield
    finally:
        _priority.niceness = before


def _ffmpeg(*args: str) -> list:
    """An ffmpeg command line with one thread per stage, so that no decode or encode holds more than one core; inside
    :func:`lowest_priority`, started at its niceness (where ``nice`` exists)."""
    import shutil

    import imageio_ffmpeg

    niceness, nice = getattr(_priority, "niceness", 0), shutil.which("nice")
    return [*([nice, "-n", str(niceness)] if niceness and nice else []), imageio_ffmpeg.get_ffmpeg_exe(), *args]


def ffmpeg_reason(log: str, path: str) -> str:
    """The last line of ffmpeg's log, fit to show a user: no server path (the file's name instead), no
    ``[decoder @ 0x…]`` pointer, at most 200 characters."""
    lines = [re.sub(r"\[[^\]]*@ 0x[0-9a-fA-F]+\]\s*", "", line).strip() for line in log.replace(path, os.path.basename(path)).splitlines()]
    lines = [line for line in lines if line]
    return (lines or ["ffmpeg failed"])[-1][:200]


class VideoError(ValueError):
    """A video that cannot be used, with a message for the user."""


def _to_tensor(frame: np.ndarray, size: int) -> torch.Tensor:
    """``[H, W, C]`` uint8 -> ``[3, size, size]`` float in [-1, 1], centre-cropped to a square."""
    if frame.ndim == 2:
        frame = np.repeat(frame[:, :, None], 3, axis=2)
    frame = frame[:, :, :3]
    if frame.shape[2] == 1:
        frame = np.repeat(frame, 3, axis=2)
    h, w = frame.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    x = torch.from_numpy(np.ascontiguousarray(frame[top : top + side, left : left + side])).permute(2, 0, 1).float()
    if side != size:  # frames from ffmpeg arrive at the size already
        x = F.interpolate(x[None], size=(size, size), mode="area" if side >= size else "bilinear",
                          align_corners=None if side >= size else False)[0]
    return (x / 127.5 - 1).clamp(-1, 1)


def _probe(path: str) -> str:
    """What ffmpeg says about a file's container and streams (its ``-i`` report)."""
    import subprocess

    proc = subprocess.run(_ffmpeg("-hide_banner", "-nostdin", "-i", path), capture_output=True, timeout=60)
    return proc.stderr.decode("utf-8", "replace")


@dataclass(frozen=True)
class StreamInfo:
    """The first video stream of an ffmpeg ``-i`` report: frame size, frame rate and the container's
    duration (``None`` where the report has none, e.g. a raw H.264 stream)."""

    width: int
    height: int
    fps: Optional[float]
    duration: Optional[float]

    @classmethod
    def parse(cls, report: str) -> Optional["StreamInfo"]:
        line = next((l for l in report.splitlines() if "Stream #" in l and "Video:" in l), None)
        size = re.search(r"[ ,](\d{1,6})x(\d{1,6})[ ,\[]", line or "")
        if size is None:
            return None
        rate = re.search(r"([\d.]+) (?:fps|tbr)", line)
        duration = re.search(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)", report)
        seconds = None if duration is None else int(duration[1]) * 3600 + int(duration[2]) * 60 + float(duration[3])
        return cls(int(size[1]), int(size[2]), float(rate[1]) if rate else None, seconds or None)


def _ffmpeg_frames(path: str, size: int, side: int, seconds_from_end: Optional[float] = None) -> Iterator[np.ndarray]:
    """Frames of ``path``'s first video stream as ffmpeg decodes them, centre-cropped to a square and
    scaled to ``size`` × ``size`` inside ffmpeg (so a 4096² frame never crosses the pipe):
    ``[size, size, 3]`` uint8 each. ``side``: the source's square side (area filter when shrinking).
    ``seconds_from_end``: start at the keyframe before that point (``-sseof``). Closing the iterator kills ffmpeg.
    Raises :class:`VideoError` when ffmpeg fails before giving a frame."""
    import subprocess
    import tempfile

    scale = f"scale={size}:{size}:flags={'area' if side >= size else 'bilinear'}+accurate_rnd+full_chroma_int"
    # -noaccurate_seek: ffmpeg hands over every frame from the keyframe before the seek point (which it
    # decodes anyway), so the caller sees, counts and can stop each of them
    seek = [] if seconds_from_end is None else ["-sseof", f"-{seconds_from_end:.3f}", "-noaccurate_seek"]
    # one decoding thread and one filter thread: ffmpeg's default (a thread per core) would let one upload hold every
    # core, where the app's decode slot means to hold one
    cmd = _ffmpeg("-v", "error", "-nostdin", "-threads", "1", "-filter_threads", "1", *seek, "-i", path, "-map", "0:v:0",
                  "-vf", f"crop='min(iw,ih)':'min(iw,ih)',{scale}", "-fps_mode", "passthrough", "-pix_fmt", "rgb24",
                  "-f", "rawvideo", "-")
    frame_bytes = size * size * 3
    with tempfile.TemporaryFile() as log:  # a file, not a pipe: ffmpeg can never block on its own log
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log)
        given = 0
        try:
            while True:
                data = proc.stdout.read(frame_bytes)
                if len(data) < frame_bytes:
                    break
                given += 1
                yield np.frombuffer(data, np.uint8).reshape(size, size, 3).copy()
            if proc.wait() != 0 and not given:
                log.seek(0)
                reason = ffmpeg_reason(log.read().decode("utf-8", "replace"), path)
                raise VideoError(f"{os.path.basename(path)} could not be decoded as a video ({reason}).")
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            proc.stdout.close()


def _inspect(path: str):
    """``(file name, StreamInfo or None, is_gif)`` of a file that may be decoded, by its content (ffprobe's report);
    :class:`VideoError` for a missing, empty or video-less file, or frames over :data:`MAX_INPUT_PIXELS`."""
    name = os.path.basename(str(path))
    if not os.path.isfile(path):
        raise VideoError(f"{name} does not exist.")
    if os.path.getsize(path) == 0:
        raise VideoError(f"{name} is empty (0 bytes).")
    report = _probe(path)
    if "Stream #" in report and "Video:" not in report:
        raise VideoError(f"{name} has no video stream (only {'audio' if 'Audio:' in report else 'other data'}).")
    info = StreamInfo.parse(report)
    # by content, not by name: an mp4 renamed .gif is decoded by ffmpeg, a real gif by Pillow
    is_gif = "Input #0, gif" in report or (info is None and path.lower().endswith(".gif"))
    if not is_gif and info is None:
        raise VideoError(f"{name} could not be decoded as a video (ffmpeg finds no video stream in it).")
    if info is not None and info.width * info.height > MAX_INPUT_PIXELS:
        raise VideoError(f"{name} has frames of {info.width}×{info.height} pixels; the limit is {MAX_INPUT_PIXELS} pixels per frame.")

    return name, info, is_gif


def _gif_frames(path: str):
    """``(frames per second or None, frame iterator)`` of a gif, decoded by Pillow."""
    import imageio.v3 as iio

    meta = {}
    try:
        meta = iio.immeta(path, extension=".gif")
    except Exception:
        pass
    src_fps = 1000.0 / float(meta["duration"]) if meta.get("duration") else None  # ms per frame
    return src_fps, iio.imiter(path, extension=".gif")


def decode_video(path: str, size: int = 64, max_frames: int = MAX_INPUT_FRAMES, fps: float | None = None,
                 last: int | None = None) -> Generator[int, None, torch.Tensor]:
    """Decode ``path`` into ``[T, 3, size, size]`` in [-1, 1], yielding the number of source frames
    decoded so far after each one: a caller that stops iterating (closes the generator) stops the
    decode within one frame. The video is the generator's return value (:func:`read_video` runs it).

    With ``fps``, frames are picked at that rate (nearest source frame). With ``last``, only the last
    ``last`` frames are returned, and where the file has a known duration only those (and the frames
    since the keyframe before them) are decoded. Work is bounded: at most :data:`MAX_INPUT_PIXELS` per
    frame, :data:`MAX_DECODED_PIXELS` decoded in all. Raises :class:`VideoError` for anything unusable.
    """
    name, info, is_gif = _inspect(path)
    decoded_pixels = 0

    def take(source, step: float, keep: Optional[int]):
        """Frames of ``source`` picked every ``step`` source frames, the last ``keep`` of them (all
        when ``None``), yielding after every decoded frame; counts every decoded frame's pixels."""
        nonlocal decoded_pixels
        kept, picked = deque(maxlen=keep), 0
        try:
            for i, frame in enumerate(source):
                h, w = (frame.shape[0], frame.shape[1]) if is_gif else (info.height, info.width)
                if frame.ndim < 2 or h * w > MAX_INPUT_PIXELS:
                    raise VideoError(f"{name} has frames of {w}×{h} pixels; the limit is {MAX_INPUT_PIXELS} pixels per frame.")
                decoded_pixels += h * w
                if decoded_pixels > MAX_DECODED_PIXELS:
                    raise VideoError(
                        f"{name} needs more than {MAX_DECODED_PIXELS / 1e9:.1f} G pixels decoded ({i} frames of {w}×{h} so far"
                        f"{'' if is_gif or info.duration else '; it has no duration, so it is decoded from its start'}): "
                        "trim it, make it smaller, or save it as mp4.")
                yield i + 1
                if step != 1.0 and round(picked * step) != i:
                    continue
                picked += 1
                if picked > max_frames:
                    raise VideoError(f"{name} has more than {max_frames} frames; trim it to at most {max_frames}.")
                kept.append(_to_tensor(frame, size))
        except VideoError:
            raise
        except Exception as err:  # Pillow: corrupt data
            reason = str(err).strip().splitlines()[-1][:200] if str(err).strip() else type(err).__name__
            raise VideoError(f"{name} could not be decoded as a video ({reason.replace(str(path), name)}).") from None
        finally:
            source.close()  # stops ffmpeg
        return list(kept)

    if is_gif:
        src_fps, source = _gif_frames(path)
    else:
        src_fps, side = info.fps, min(info.width, info.height)
        if last is not None and fps is None and info.fps and info.duration and info.duration * info.fps > 2 * last:
            # from the keyframe before the end's last frames: every frame decoded passes through take()
            tail = yield from take(_ffmpeg_frames(path, size, side, (last + 2) / info.fps), 1.0, last)
            if len(tail) >= last:
                return torch.stack(tail)
            # too few frames after the seek (an inexact duration): decode from the start below
        source = _ffmpeg_frames(path, size, side)
    step = 1.0 if (fps is None or src_fps is None) else max(src_fps / fps, 1e-6)
    frames = yield from take(source, step, last)
    if not frames:
        raise VideoError(f"{name} contains no video frames.")
    return torch.stack(frames)


def finish(steps: Generator[object, None, T]) -> T:
    """Run a generator such as :func:`decode_video` to its end and return its return value."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value


def read_video(path: str, size: int = 64, max_frames: int = MAX_INPUT_FRAMES, fps: float | None = None,
               last: int | None = None) -> torch.Tensor:
    """:func:`decode_video` run to its end: ``[T, 3, size, size]`` in [-1, 1]."""
    return finish(decode_video(path, size, max_frames, fps, last))


GENERATED_BORDER_RGB = (255, 64, 160)  # magenta: rare in the procedural data, visible on both themes


def mark_frames(x: torch.Tensor, first: int, width: int, rgb=GENERATED_BORDER_RGB) -> torch.Tensor:
    """Draw a ``width``-pixel border of colour ``rgb`` on frames ``first ..`` of ``[T, 3, H, W]`` uint8."""
    out = x.clone()
    colour = torch.tensor(rgb, dtype=torch.uint8)[:, None, None]
    marked = out[first:]  # a view: writes go to ``out``
    for part in (marked[..., :width, :], marked[..., -width:, :], marked[..., :, :width], marked[..., :, -width:]):
        part[:] = colour
    return out


def write_video(path: str, video: torch.Tensor, fps: float = 8.0, scale: int = 1, mark_from: int | None = None) -> str:
    """Write ``[T, 3, H, W]`` in [-1, 1] as H.264 yuv420p mp4, each pixel enlarged ``scale`` times
    (nearest) for display. ``mark_from``: frames from this index on (the generated ones) get a thin
    coloured border. Returns ``path``."""
    import subprocess

    if video.dim() != 4 or video.shape[1] != 3:
        raise ValueError(f"video must be [T, 3, H, W], got {tuple(video.shape)}.")
    x = ((video.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    if scale > 1:
        x = x.repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=3)
    if mark_from is not None and mark_from < x.shape[0]:
        x = mark_frames(x, mark_from, width=max(2, x.shape[-1] // 64))
    frames = x.permute(0, 2, 3, 1).cpu().numpy()  # [T, H, W, 3]
    h, w = frames.shape[1:3]
    if h % 2 or w % 2:  # yuv420p needs even sides
        frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        h, w = frames.shape[1:3]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    cmd = _ffmpeg("-v", "error", "-nostdin", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", f"{fps:g}",
                  "-i", "-", "-an", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", "18", "-threads", "1",
                  "-movflags", "+faststart", path)
    proc = subprocess.run(cmd, input=np.ascontiguousarray(frames).tobytes(), capture_output=True, timeout=300)
    if proc.returncode != 0:
        raise VideoError(f"ffmpeg could not write {os.path.basename(path)} ({ffmpeg_reason(proc.stderr.decode('utf-8', 'replace'), path)}).")
    return path
