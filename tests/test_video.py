"""Video I/O through real ffmpeg-encoded files, and every bad input a user can hand us."""

import os
import subprocess
import wave

import imageio_ffmpeg
import numpy as np
import pytest
import torch

from msc.data import procedural_clip
from msc.video import MAX_INPUT_FRAMES, VideoError, decode_video, read_video, write_video

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()


def _probe(path):
    """ffmpeg's own description of a file (stderr of ``ffmpeg -i``)."""
    return subprocess.run([FFMPEG, "-hide_banner", "-i", str(path)], capture_output=True, text=True).stderr


def test_round_trip_through_h264(tmp_path):
    clip = procedural_clip(4, 12, 32)
    path = write_video(str(tmp_path / "clip.mp4"), clip, fps=8, scale=2)
    info = _probe(path)
    assert "h264" in info and "yuv420p" in info and "64x64" in info
    back = read_video(path, size=32)
    assert back.shape == clip.shape
    assert (back - clip).abs().mean().item() < 0.03  # lossy codec, close


@pytest.mark.parametrize("ext, codec", [("webm", ["-c:v", "libvpx-vp9"]), ("mov", ["-c:v", "libx264"]), ("gif", []), ("avi", ["-c:v", "mjpeg"])])
def test_reads_other_containers_with_crop_and_fps(tmp_path, ext, codec):
    src = write_video(str(tmp_path / "src.mp4"), procedural_clip(5, 16, 32), fps=16)
    out = tmp_path / f"wide.{ext}"
    # a non-square 96x64 version at 16 fps
    subprocess.run([FFMPEG, "-y", "-loglevel", "error", "-i", src, "-vf", "scale=96:64", *codec, str(out)], check=True)
    video = read_video(str(out), size=16, fps=8)
    assert video.shape[1:] == (3, 16, 16)
    assert 7 <= video.shape[0] <= 9  # 16 frames at 16 fps picked at 8 fps


def test_corrupt_file(tmp_path):
    path = tmp_path / "corrupt.mp4"
    good = write_video(str(tmp_path / "good.mp4"), procedural_clip(1, 8, 32))
    path.write_bytes(open(good, "rb").read()[:200] + b"\x00garbage" * 50)
    with pytest.raises(VideoError, match="corrupt.mp4") as err:
        read_video(str(path))
    assert str(tmp_path) not in str(err.value) and "@ 0x" not in str(err.value), str(err.value)


def test_ffmpeg_reasons_name_the_file_without_paths_or_pointers():
    from msc.video import ffmpeg_reason

    log = "[h264 @ 0x5571b0451bc0] error while decoding MB 3 4\n[in#0/mov,mp4 @ 0x55aa] /srv/up/clip.mp4: Invalid data\n\n"
    assert ffmpeg_reason(log, "/srv/up/clip.mp4") == "clip.mp4: Invalid data"
    assert ffmpeg_reason("", "/srv/up/clip.mp4") == "ffmpeg failed"


def test_not_a_video(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("hello, this is text")
    with pytest.raises(VideoError, match="could not be decoded|no video"):
        read_video(str(path))


def test_audio_only_file_has_no_video_stream(tmp_path):
    path = tmp_path / "sound.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(8000)
        w.writeframes((np.sin(np.arange(8000) / 5) * 1000).astype(np.int16).tobytes())
    with pytest.raises(VideoError, match="sound.wav"):
        read_video(str(path))


def test_empty_and_missing_files(tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(VideoError, match="empty"):
        read_video(str(tmp_path / "empty.mp4"))
    with pytest.raises(VideoError, match="does not exist"):
        read_video(str(tmp_path / "missing.mp4"))


def test_absurd_resolution_and_length(tmp_path, monkeypatch):
    import msc.video as V

    path = write_video(str(tmp_path / "clip.mp4"), procedural_clip(2, 12, 32), fps=8)
    monkeypatch.setattr(V, "MAX_INPUT_PIXELS", 16 * 16)  # a 32x32 frame is "absurd" at this limit
    with pytest.raises(VideoError, match="pixels"):
        read_video(path)
    monkeypatch.undo()
    with pytest.raises(VideoError, match="more than 5 frames"):
        read_video(path, max_frames=5)
    assert MAX_INPUT_FRAMES >= 256


def test_write_rejects_wrong_shape(tmp_path):
    with pytest.raises(ValueError, match=r"\[T, 3, H, W\]"):
        write_video(str(tmp_path / "x.mp4"), torch.zeros(2, 4, 8, 8))


def test_generated_frames_get_a_border_that_survives_the_codec(tmp_path):
    clip = torch.zeros(6, 3, 32, 32)  # mid-grey
    path = write_video(str(tmp_path / "marked.mp4"), clip, fps=8, scale=4, mark_from=4)
    back = read_video(path, size=128)  # [6, 3, 128, 128]
    edge, centre = back[:, :, 0, 64], back[:, :, 64, 64]  # [6, 3]
    assert (edge[:4] - centre[:4]).abs().max() < 0.05  # context frames: no border
    assert (edge[4:, 0] > 0.6).all() and (edge[4:, 1] < -0.3).all()  # generated: magenta border
    assert (centre[4:] - centre[:4].mean(0)).abs().max() < 0.05  # the picture itself is untouched


def test_last_frames_decode_only_the_end_and_match_a_full_decode(tmp_path):
    """``last=K`` seeks near the end (ffmpeg -sseof) and returns exactly the full decode's last K frames."""
    clip = procedural_clip(4, 60, 32)
    path = write_video(str(tmp_path / "long.mp4"), clip, fps=8)
    full = read_video(path, size=32)
    tail = read_video(path, size=32, last=5)
    assert tail.shape == (5, 3, 32, 32)
    assert torch.equal(tail, full[-5:])
    assert torch.equal(read_video(path, size=32, last=100), full)  # more than there is: all of it


def test_a_stopped_decode_stops_ffmpeg(tmp_path, monkeypatch):
    """Closing :func:`decode_video` after two frames kills its ffmpeg at once."""
    started = []
    popen = subprocess.Popen

    def recording_popen(*args, **kwargs):
        started.append(popen(*args, **kwargs))
        return started[-1]

    path = write_video(str(tmp_path / "long.mp4"), procedural_clip(1, 200, 32), fps=8)
    monkeypatch.setattr(subprocess, "Popen", recording_popen)
    decoding = decode_video(path, size=16)
    assert [next(decoding), next(decoding)] == [1, 2]
    decoding.close()
    assert started and started[-1].poll() is not None


def test_a_stream_without_duration_is_decoded_from_its_start_within_a_budget(tmp_path, monkeypatch):
    """A raw H.264 stream (named .mp4; ffmpeg knows no duration, so cannot seek from the end): the last
    frames come from a decode from the start and equal the mp4's; the pixel budget refuses it by name,
    while the mp4 (a keyframe every 4 frames) decodes only its end, within the budget."""
    import msc.video as V

    written = write_video(str(tmp_path / "clip.mp4"), procedural_clip(2, 60, 32), fps=8)
    mp4, raw = str(tmp_path / "gop4.mp4"), str(tmp_path / "raw.mp4")
    subprocess.run([FFMPEG, "-v", "error", "-i", written, "-c:v", "libx264", "-g", "4", mp4], check=True)
    subprocess.run([FFMPEG, "-v", "error", "-i", mp4, "-c", "copy", "-bsf:v", "h264_mp4toannexb", "-f", "h264", raw], check=True)
    assert "Duration: N/A" in _probe(raw)
    assert torch.equal(read_video(raw, size=16, last=5), read_video(mp4, size=16, last=5))
    monkeypatch.setattr(V, "MAX_DECODED_PIXELS", 32 * 32 * 20)
    with pytest.raises(VideoError, match=r"raw.mp4 needs more than .* decoded \(20 frames of 32×32 so far; it has no duration"):
        read_video(raw, size=16, last=5)
    assert read_video(mp4, size=16, last=5).shape[0] == 5


def test_ffmpeg_runs_one_thread_a_stage_and_at_the_lowest_priority_only_where_asked():
    """Every ffmpeg the library starts decodes and encodes with one thread; inside ``lowest_priority`` (the app's
    previews) it is started by ``nice -n 19``, outside at the caller's priority; the block nests and restores."""
    import shutil

    from msc.video import BACKGROUND_NICENESS, _ffmpeg, lowest_priority

    assert "nice" not in os.path.basename(_ffmpeg("-version")[0])
    with lowest_priority():
        cmd = _ffmpeg("-version")
        if shutil.which("nice"):
            assert os.path.basename(cmd[0]) == "nice" and cmd[1:3] == ["-n", str(BACKGROUND_NICENESS)]
        with lowest_priority():
            pass
        assert _ffmpeg("-version")[:3] == cmd[:3]
    assert "nice" not in os.path.basename(_ffmpeg("-version")[0])
    assert subprocess.run(_ffmpeg("-version"), capture_output=True).returncode == 0
