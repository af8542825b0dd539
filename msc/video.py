"""Video in and out with imageio + imageio-ffmpeg (docs/design.md §5).

``read_video`` decodes mp4 / webm / mov / avi / mkv through ffmpeg and gif through Pillow,
centre-crops to a square, resizes, and returns ``[T, 3, size, size]`` in [-1, 1]. ``write_video``
writes H.264 yuv420p mp4 (what browsers play). Every failure a user can cause raises
:class:`VideoError` with one sentence saying what is wrong.
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F

MAX_INPUT_PIXELS = 4096 * 4096  # larger frames are refused before decoding
MAX_INPUT_FRAMES = 2000


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
    x = F.interpolate(x[None], size=(size, size), mode="area" if side >= size else "bilinear", align_corners=None if side >= size else False)[0]
    return (x / 127.5 - 1).clamp(-1, 1)


def _last_frames(path: str, last: int, size: int):
    """The last ``last`` frames of a file ffmpeg can seek in, decoding only from near the end
    (``-sseof``): ``[n, 3, size, size]``, or ``None`` when the file's length is unknown."""
    import imageio_ffmpeg

    probe = imageio_ffmpeg.read_frames(path)
    try:
        meta = next(probe)
    finally:
        probe.close()
    fps, duration, (w, h) = meta.get("fps"), meta.get("duration"), meta.get("source_size") or meta["size"]
    if w * h > MAX_INPUT_PIXELS:
        raise VideoError(f"{os.path.basename(path)} has frames of {w}×{h} pixels; the limit is {MAX_INPUT_PIXELS} pixels per frame.")
    if not fps or not duration or duration * fps <= 2 * last:
        return None
    reader = imageio_ffmpeg.read_frames(path, input_params=["-sseof", f"-{(last + 2) / fps:.3f}"])
    out = next(reader)["size"]
    frames = [_to_tensor(np.frombuffer(f, np.uint8).reshape(out[1], out[0], 3).copy(), size) for f in reader]
    return torch.stack(frames[-last:]) if len(frames) >= last else None


def _probe(path: str) -> str:
    """What ffmpeg says about a file's container and streams (its ``-i`` report)."""
    import subprocess

    import imageio_ffmpeg

    proc = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", path], capture_output=True, timeout=60)
    return proc.stderr.decode("utf-8", "replace")


def read_video(path: str, size: int = 64, max_frames: int = MAX_INPUT_FRAMES, fps: float | None = None,
               last: int | None = None) -> torch.Tensor:
    """Decode ``path`` into ``[T, 3, size, size]`` in [-1, 1]. With ``fps``, frames are picked at that
    rate (nearest source frame). With ``last``, only the last ``last`` frames are returned, and for
    files ffmpeg can seek in only those (and the frames since the keyframe before them) are decoded.
    Raises :class:`VideoError` for anything unusable."""
    import imageio.v3 as iio

    if not os.path.isfile(path):
        raise VideoError(f"{os.path.basename(str(path))} does not exist.")
    if os.path.getsize(path) == 0:
        raise VideoError(f"{os.path.basename(path)} is empty (0 bytes).")
    report = _probe(path)
    if "Stream #" in report and "Video:" not in report:
        raise VideoError(f"{os.path.basename(path)} has no video stream (only {'audio' if 'Audio:' in report else 'other data'}).")
    # by content, not by name: an mp4 renamed .gif is decoded by ffmpeg, a real gif by Pillow
    is_gif = "Input #0, gif" in report or ("Video:" not in report and path.lower().endswith(".gif"))
    extension = ".gif" if is_gif else (".mp4" if path.lower().endswith(".gif") else None)
    if last is not None and fps is None and not is_gif:
        try:
            tail = _last_frames(path, last, size)
        except VideoError:
            raise
        except Exception:  # not seekable or not a video: the full decode below reports it
            tail = None
        if tail is not None:
            return tail
    name = os.path.basename(path)
    try:
        meta = iio.immeta(path, extension=extension)
    except Exception:
        meta = {}
    src_fps = float(meta.get("fps") or 0) or None
    if src_fps is None and meta.get("duration"):  # gif: milliseconds per frame
        src_fps = 1000.0 / float(meta["duration"])
    step = 1.0 if (fps is None or src_fps is None) else max(src_fps / fps, 1e-6)
    frames = []
    try:
        for i, frame in enumerate(iio.imiter(path, extension=extension)):
            if frame.ndim < 2 or frame.shape[0] * frame.shape[1] > MAX_INPUT_PIXELS:
                raise VideoError(
                    f"{name} has frames of {frame.shape[1]}×{frame.shape[0]} pixels; the limit is {MAX_INPUT_PIXELS} pixels per frame."
                )
            if step != 1.0 and round(len(frames) * step) != i:
                continue
            frames.append(_to_tensor(frame, size))
            if len(frames) > max_frames:
                raise VideoError(f"{name} has more than {max_frames} frames; trim it to at most {max_frames}.")
    except VideoError:
        raise
    except Exception as err:  # imageio / ffmpeg / Pillow: corrupt data, no video stream, unknown format
        reason = str(err).strip().splitlines()[-1][:200] if str(err).strip() else type(err).__name__
        raise VideoError(f"{name} could not be decoded as a video ({reason}).") from None
    if not frames:
        raise VideoError(f"{name} contains no video frames.")
    return torch.stack(frames if last is None else frames[-last:])


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
    import imageio_ffmpeg

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
    writer = imageio_ffmpeg.write_frames(
        path, (w, h), fps=fps, codec="libx264", pix_fmt_out="yuv420p", quality=None,
        output_params=["-crf", "18", "-movflags", "+faststart"], macro_block_size=1,
    )
    writer.send(None)
    for frame in frames:
        writer.send(np.ascontiguousarray(frame))
    writer.close()
    return path
