"""Real-footage preparation (decode, crops, shot cuts, held-out files), the simulated camera and the
training mixture, on small files made here with ffmpeg (the packages themselves are fetched only by
``python -m msc.data.prepare``)."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from msc.data.camera import camera_clip
from msc.data.mixture import MixedVideos, PreparedData, held_out_camera, held_out_real
from msc.data.prepare import cut_segments, decode_video, load_photo, shot_boundaries, square_crops
from msc.data.sources import SOURCES, split_of
from msc.video import write_video


def _photo(seed, h=160, w=240):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(3, h, w, generator=g) * 255).to(torch.uint8)


def test_decoded_file_is_cut_at_its_shot_change(tmp_path):
    """A real H.264 file with a hard cut after frame 10: ffmpeg decodes it, the cut is found."""
    a = torch.linspace(-0.8, 0.8, 12)[:, None, None, None].expand(12, 3, 48, 80) * torch.ones(1, 3, 48, 80)
    b = -a.flip(-1)
    path = str(tmp_path / "two_shots.mp4")
    write_video(path, torch.cat([a[:10], b[:10]]), fps=10)
    frames = decode_video(path)
    assert frames.shape == (20, 48, 80, 3) and frames.dtype == np.uint8
    crops = square_crops(frames, 16)
    assert set(crops) == {"centre", "left", "right"} and crops["centre"].shape == (20, 3, 16, 16)
    assert shot_boundaries(crops["centre"]) == [0, 10]
    assert [s.shape[0] for s in cut_segments(crops["centre"], min_frames=8)] == [10, 10]


def test_photo_keeps_short_side_and_bounded_aspect(tmp_path):
    from PIL import Image

    Image.fromarray(np.zeros((100, 500, 3), np.uint8)).save(tmp_path / "wide.png")
    photo = load_photo(str(tmp_path / "wide.png"), side=40)
    assert photo.shape == (3, 40, 80) and photo.dtype == torch.uint8


def test_held_out_files_are_named_in_the_table():
    opencv = next(s for s in SOURCES if s.package == "opencv-doc")
    assert split_of(opencv, "usr/share/doc/opencv-doc/opencv4/html/box.mp4") == "test"
    assert split_of(opencv, "usr/share/doc/opencv-doc/examples/data/vtest.avi") == "train"
    plasma = next(s for s in SOURCES if s.package == "plasma-workspace-wallpapers")
    assert split_of(plasma, "usr/share/wallpapers/Path/contents/images/1920x1080.jpg") == "test"
    for source in SOURCES:
        assert source.licence and source.kind in ("video", "sequence", "photo", "texture")
        assert not any("Megamind" in f or "bigbuckbunny" in f for f in source.files)


def test_camera_clip_is_seeded_moves_and_stays_in_range():
    photos = [_photo(i) for i in range(4)]
    a, b = camera_clip(photos, 3, 8, 32), camera_clip(photos, 3, 8, 32)
    assert a.shape == (8, 3, 32, 32) and torch.equal(a, b)
    assert a.min() >= -1 and a.max() <= 1
    assert not torch.equal(a, camera_clip(photos, 4, 8, 32))
    moving = [camera_clip(photos, s, 6, 32) for s in range(10)]
    assert sum(float((c[1:] - c[:-1]).abs().mean()) > 1e-3 for c in moving) >= 5


@pytest.fixture()
def prepared(tmp_path):
    """A tiny prepared-data folder: two training segments, one held-out segment, photos of both splits."""
    videos = {f"video/{i:04d}": (torch.rand(n, 3, 16, 16) * 255).to(torch.uint8) for i, n in enumerate([12, 20, 17])}
    photos = {f"photo/{i:04d}": _photo(i, 40, 60) for i in range(3)}
    save_file(videos, str(tmp_path / "videos.safetensors"))
    save_file(photos, str(tmp_path / "photos.safetensors"))
    splits = ["train", "train", "test"]
    manifest = {"size": 16, "sources": [], "statistics": {},
                "segments": [{"key": k, "split": s, "crop": "centre", "frames": v.shape[0], "file": f"f{i}"}
                             for i, ((k, v), s) in enumerate(zip(videos.items(), splits))],
                "photos": [{"key": k, "split": s} for k, s in zip(photos, ["train", "train", "test"])]}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    return PreparedData(str(tmp_path))


def test_mixture_draws_every_kind_reproducibly(prepared):
    ds = MixedVideos(prepared, frames=6)
    clips = [ds[i] for i in range(30)]
    assert all(c.shape == (6, 3, 16, 16) and c.min() >= -1 and c.max() <= 1 for c in clips)
    assert torch.equal(ds[7], clips[7])
    only_video = MixedVideos(prepared, frames=6, mix={"video": 1})
    held_out = prepared.segments("test")[0]["video"].float() / 127.5 - 1
    for i in range(20):  # never a window of the held-out file
        clip = only_video[i]
        assert not any(torch.equal(clip[0], f) or torch.equal(clip[0], f.flip(-1)) for f in held_out)
    with pytest.raises(ValueError, match="mix"):
        MixedVideos(prepared, frames=6, mix={"films": 1})


def test_held_out_sets_use_only_held_out_files(prepared):
    real = held_out_real(prepared, 5, 8)
    source = prepared.segments("test")[0]["video"].float() / 127.5 - 1
    assert real.shape == (2, 8, 3, 16, 16) and torch.equal(real[0], source[:8])
    assert held_out_camera(prepared, 2, 4).shape == (2, 4, 3, 16, 16)


def test_missing_prepared_data_names_the_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="msc.data.prepare"):
        PreparedData(str(tmp_path))
