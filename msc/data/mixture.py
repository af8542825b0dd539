"""The training mixture and the held-out evaluation sets over the prepared data.

``python -m msc.data.prepare --out data`` writes the real footage and photographs;
:class:`PreparedData` reads them back. :class:`MixedVideos` draws every training clip as a pure
function of its index from three kinds (weights :data:`DEFAULT_MIX`):

* ``video``: a window of a real video segment (training files only), at the file's frame rate or
  every second frame, mirrored half of the time;
* ``camera``: a simulated camera over a training photograph, with parallax and cut-outs
  (:mod:`msc.data.camera`);
* ``procedural``: the seeded procedural generator (:mod:`msc.data.procedural`).

Held-out sets (whole files the training never sees, :data:`msc.data.sources.SOURCES`):
:func:`held_out_real` (windows of the held-out real videos) and :func:`held_out_camera` (the camera
over held-out photographs); :func:`held_out_procedural` uses the procedural test seeds.
"""

from __future__ import annotations

import json
import os
from typing import Dict, List, Optional

import torch

from msc.data.camera import camera_clip
from msc.data.procedural import TEST_SEED_OFFSET, ProceduralVideos, procedural_clip

DEFAULT_MIX = {"video": 0.4, "camera": 0.4, "procedural": 0.2}
DATA_FILES = ("manifest.json", "videos.safetensors", "photos.safetensors")


class PreparedData:
    """The output of ``python -m msc.data.prepare``: video segments and photos, split by file."""

    def __init__(self, root: str):
        from safetensors.torch import load_file

        missing = [f for f in DATA_FILES if not os.path.isfile(os.path.join(root, f))]
        if missing:
            raise FileNotFoundError(f"{root} lacks {', '.join(missing)}; build it with: python -m msc.data.prepare --out {root}")
        self.root = root
        with open(os.path.join(root, "manifest.json")) as f:
            self.manifest = json.load(f)
        self.size = self.manifest["size"]
        self._videos = load_file(os.path.join(root, "videos.safetensors"))
        self._photos = load_file(os.path.join(root, "photos.safetensors"))

    @staticmethod
    def is_prepared(root: str) -> bool:
        return os.path.isdir(root) and all(os.path.isfile(os.path.join(root, f)) for f in DATA_FILES)

    def segments(self, split: str, crops=("centre", "left", "right")) -> List[dict]:
        """Manifest records of the ``split``'s video segments, each with its ``[T, 3, S, S]`` uint8 ``video``."""
        return [{**s, "video": self._videos[s["key"]]} for s in self.manifest["segments"] if s["split"] == split and s["crop"] in crops]

    def photos(self, split: str) -> List[torch.Tensor]:
        """``[3, h, w]`` uint8 photographs and textures of the ``split``."""
        return [self._photos[p["key"]] for p in self.manifest["photos"] if p["split"] == split]


def _to_float(video: torch.Tensor) -> torch.Tensor:
    return video.float() / 127.5 - 1


class MixedVideos(torch.utils.data.Dataset):
    """Training clips ``[frames, 3, S, S]`` in [-1, 1] by index, from real video, the simulated camera
    and the procedural generator (weights ``mix``). Clip ``i`` is the same on every call."""

    def __init__(self, data: PreparedData, frames: int = 16, mix: Optional[Dict[str, float]] = None, length: int = TEST_SEED_OFFSET):
        self.data, self.frames, self.length = data, frames, length
        self.size = data.size
        mix = dict(DEFAULT_MIX if mix is None else mix)
        unknown = set(mix) - set(DEFAULT_MIX)
        if unknown or not mix or min(mix.values()) < 0 or sum(mix.values()) <= 0:
            raise ValueError(f"mix weights must be non-negative over {sorted(DEFAULT_MIX)}, got {mix}.")
        self.kinds = list(mix)
        self.weights = torch.tensor([mix[k] for k in self.kinds], dtype=torch.float64)
        self.videos = [s["video"] for s in data.segments("train") if s["frames"] >= frames]
        self.photos = data.photos("train")
        if mix.get("video", 0) > 0 and not self.videos:
            raise ValueError(f"no training video segment has {frames} frames.")

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(int(index) * 7919 + 17)
        kind = self.kinds[int(torch.multinomial(self.weights, 1, generator=g))]
        if kind == "procedural":
            return procedural_clip(int(index), self.frames, self.size)
        if kind == "camera":
            return camera_clip(self.photos, int(index), self.frames, self.size)
        return self._video_window(g)

    def _video_window(self, g: torch.Generator) -> torch.Tensor:
        # segments are drawn in proportion to the windows they hold
        stride = 2 if torch.rand(1, generator=g).item() < 0.3 else 1
        need = (self.frames - 1) * stride + 1
        usable = [v for v in self.videos if v.shape[0] >= need] or self.videos
        if not any(v.shape[0] >= need for v in usable):
            stride, need = 1, self.frames
        counts = torch.tensor([max(v.shape[0] - need + 1, 0) for v in usable], dtype=torch.float64)
        video = usable[int(torch.multinomial(counts, 1, generator=g))]
        start = int(torch.randint(video.shape[0] - need + 1, (1,), generator=g))
        clip = _to_float(video[start : start + need : stride])
        if torch.rand(1, generator=g).item() < 0.5:
            clip = clip.flip(-1)
        return clip


def held_out_real(data: PreparedData, count: int, frames: int) -> torch.Tensor:
    """``[N, frames, 3, S, S]``: windows of the held-out real videos (centre crops, the file's own
    frame rate), evenly spread over each segment and taken in turn from each file, at most ``count``."""
    per_segment = []
    for seg in data.segments("test", crops=("centre",)):
        video = seg["video"]
        n = video.shape[0] // frames
        if n:
            starts = torch.linspace(0, video.shape[0] - frames, n).round().long().tolist()
            per_segment.append([_to_float(video[s : s + frames]) for s in starts])
    if not per_segment:
        raise ValueError(f"no held-out real video has {frames} frames.")
    out = []
    while len(out) < count and any(per_segment):
        for windows in per_segment:
            if windows and len(out) < count:
                out.append(windows.pop(0))
    return torch.stack(out)


def held_out_camera(data: PreparedData, count: int, frames: int) -> torch.Tensor:
    """``[N, frames, 3, S, S]``: the simulated camera over held-out photographs (seeds 0..N-1)."""
    photos = data.photos("test")
    return torch.stack([camera_clip(photos, TEST_SEED_OFFSET + i, frames, data.size) for i in range(count)])


def held_out_procedural(count: int, frames: int, size: int) -> torch.Tensor:
    """``[N, frames, 3, S, S]`` held-out procedural clips (test seeds)."""
    clips = ProceduralVideos(frames, size, split="test")
    return torch.stack([clips[i] for i in range(count)])
