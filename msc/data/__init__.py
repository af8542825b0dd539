"""Training and evaluation data (docs/design.md §5).

* :mod:`msc.data.procedural`: seeded procedural clips (no download);
* :mod:`msc.data.sources` / :mod:`msc.data.prepare`: real footage and photographs from Debian and PyPI
  packages, prepared offline by ``python -m msc.data.prepare``;
* :mod:`msc.data.camera`: photographs turned into video by a simulated camera;
* :mod:`msc.data.mixture`: the training mixture and the held-out evaluation sets;
* :mod:`msc.data.folder`: a folder of the user's own videos.
"""

from msc.data.folder import VIDEO_EXTENSIONS, FolderVideos
from msc.data.procedural import TEST_SEED_OFFSET, ProceduralVideos, procedural_clip

__all__ = ["FolderVideos", "ProceduralVideos", "TEST_SEED_OFFSET", "VIDEO_EXTENSIONS", "procedural_clip"]
