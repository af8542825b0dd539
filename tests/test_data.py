"""Procedural data (seeded, both motions, held-out seeds) and the folder dataset."""

import warnings

import pytest
import torch

from msc.data import TEST_SEED_OFFSET, FolderVideos, ProceduralVideos, procedural_clip
from msc.video import write_video


def test_clip_reproducible_from_seed_and_in_range():
    a, b = procedural_clip(5, 8, 32), procedural_clip(5, 8, 32)
    assert a.shape == (8, 3, 32, 32) and torch.equal(a, b)
    assert a.min() >= -1 and a.max() <= 1
    assert not torch.equal(a, procedural_clip(6, 8, 32))


def test_clips_move():
    """Consecutive frames differ (global and local motion) but stay close (smooth motion)."""
    clip = procedural_clip(11, 12, 64)
    diffs = (clip[1:] - clip[:-1]).abs().mean(dim=(1, 2, 3))
    assert (diffs > 1e-3).all()
    assert diffs.mean() < (clip[0] - procedural_clip(12, 1, 64)[0]).abs().mean()


def test_train_and_test_splits_are_disjoint():
    train, test = ProceduralVideos(4, 32, "train"), ProceduralVideos(4, 32, "test")
    assert torch.equal(test[3], procedural_clip(TEST_SEED_OFFSET + 3, 4, 32))
    assert not torch.equal(train[3], test[3])
    with pytest.raises(ValueError):
        ProceduralVideos(split="val")


def test_folder_dataset_reads_videos_and_skips_bad_files(tmp_path):
    write_video(str(tmp_path / "a.mp4"), procedural_clip(1, 10, 32), fps=8)
    (tmp_path / "broken.mp4").write_bytes(b"not a video at all")
    write_video(str(tmp_path / "short.mp4"), procedural_clip(2, 3, 32), fps=8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = FolderVideos(str(tmp_path), frames=8, size=16)
    messages = " ".join(str(w.message) for w in caught)
    assert "broken.mp4" in messages and "short.mp4" in messages
    assert len(ds) == 3 and ds[0].shape == (8, 3, 16, 16)
    with pytest.raises(FileNotFoundError):
        FolderVideos(str(tmp_path / "missing"))
