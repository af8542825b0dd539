"""A folder of the user's own videos as training clips."""

from __future__ import annotations

import os
import warnings
from typing import List

import torch

VIDEO_EXTENSIONS = (".mp4", ".webm", ".gif", ".mov", ".avi", ".mkv")


class FolderVideos(torch.utils.data.Dataset):
    """A user's own videos (mp4, webm, gif, mov, avi, mkv) under ``root``, as clips of ``frames``
    frames centre-cropped and resized to ``size``. Files that cannot be read, or that are shorter
    than ``frames``, are skipped with a warning."""

    def __init__(self, root: str, frames: int = 16, size: int = 64):
        from msc.video import VideoError, read_video

        if not os.path.isdir(root):
            raise FileNotFoundError(f"video folder {root} does not exist.")
        paths = sorted(
            os.path.join(d, f) for d, _, files in os.walk(root) for f in files if f.lower().endswith(VIDEO_EXTENSIONS)
        )
        self.frames, self.size = frames, size
        self.clips: List[torch.Tensor] = []
        for path in paths:
            try:
                video = read_video(path, size=size)
            except VideoError as err:
                warnings.warn(f"skipping {path}: {err}")
                continue
            if video.shape[0] < frames:
                warnings.warn(f"skipping {path}: {video.shape[0]} frames, fewer than the {frames} needed.")
                continue
            self.clips.append(video)
        if not self.clips:
            raise ValueError(f"no readable video of at least {frames} frames in {root}.")
        # every window of ``frames`` consecutive frames is one training example
        self.index = [(c, s) for c, clip in enumerate(self.clips) for s in range(clip.shape[0] - frames + 1)]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, index: int) -> torch.Tensor:
        c, s = self.index[index % len(self.index)]
        return self.clips[c][s : s + self.frames]
