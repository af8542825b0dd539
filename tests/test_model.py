"""The MSC transformer: frame causality, gates, save/load, rotary positions, validation."""

import json
import os

import pytest
import torch

from msc.model import AttentionWindows, MSCConfig, MSCModel, config_from_name
from msc.rotary import apply_rotary


def _randomised(model: MSCModel, seed: int = 0) -> MSCModel:
    """Perturb every weight: zero-initialised gates and adaLN would hide leaks at initialisation."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return model.eval()


@pytest.fixture(params=["msc", "dense"])
def model(request):
    torch.manual_seed(0)
    return _randomised(MSCModel(config_from_name("tiny", attention=request.param)))


def _inputs(frames=6, batch=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, frames, 3, 16, 16, generator=g), torch.rand(batch, frames, generator=g)


def test_output_shape(model):
    x, t = _inputs()
    assert model(x, t).shape == x.shape


@pytest.mark.parametrize("split", [1, 3, 5])
def test_frame_causality(model, split):
    """Changing frames >= split, or their noise levels, leaves outputs < split unchanged."""
    x, t = _inputs()
    y = model(x, t)
    g = torch.Generator().manual_seed(7)
    x2, t2 = x.clone(), t.clone()
    x2[:, split:] = torch.randn(x2[:, split:].shape, generator=g)
    t2[:, split:] = torch.rand(t2[:, split:].shape, generator=g)
    y2 = model(x2, t2)
    assert (y[:, :split] - y2[:, :split]).abs().max().item() <= 1e-5
    assert (y[:, split:] - y2[:, split:]).abs().max().item() > 1e-3


def test_past_frames_influence_later_ones(model):
    x, t = _inputs()
    y = model(x, t)
    x2 = x.clone()
    x2[:, 3] += 1.0
    t2 = t.clone()
    t2[:, 2] = 1 - t2[:, 2]
    assert (model(x2, t)[:, 4] - y[:, 4]).abs().max().item() > 1e-3
    assert (model(x, t2)[:, 3] - y[:, 3]).abs().max().item() > 1e-3


def test_gates_shape_and_initial_equality():
    model = MSCModel(config_from_name("tiny"))
    gates = model.gates(torch.linspace(0, 1, 5))
    assert gates.shape == (5, model.config.depth, 2)
    assert torch.allclose(gates, torch.full_like(gates, 0.5))
    trained = _randomised(MSCModel(config_from_name("tiny")))
    g = trained.gates(torch.tensor([0.0, 1.0]))
    assert torch.allclose(g.sum(-1), torch.ones(2, trained.config.depth))
    assert not torch.allclose(g[0], g[1])  # the gates depend on the noise level
    dense = MSCModel(config_from_name("tiny", attention="dense")).gates(torch.tensor([0.3]))
    assert dense[..., 0].eq(1).all() and dense[..., 1].eq(0).all()


def test_save_load_round_trip(tmp_path, model):
    model.save_pretrained(tmp_path / "w")
    assert {"config.json", "model.safetensors"} <= set(os.listdir(tmp_path / "w"))
    config = json.loads((tmp_path / "w" / "config.json").read_text())
    assert config["attention"] == model.config.attention and config["low_res_factors"] == model.config.low_res_factors
    loaded = MSCModel.from_pretrained(str(tmp_path / "w")).eval()
    assert isinstance(loaded.config, MSCConfig) and loaded.config == model.config
    x, t = _inputs()
    assert torch.equal(loaded(x, t), model(x, t))


def test_load_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        MSCModel.from_pretrained(str(tmp_path / "nowhere"))
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="model.safetensors is missing"):
        MSCModel.from_pretrained(str(tmp_path / "half"))


def test_rotary_depends_on_relative_positions_only():
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 1, 3, 4, 4, 2, 12, generator=g)
    score = lambda f0, f1: (apply_rotary(q, f0) * apply_rotary(k, f1)).sum(-1)
    assert torch.allclose(score(0, 2), score(100, 102), atol=1e-4)
    assert not torch.allclose(score(0, 2), score(0, 3), atol=1e-3)


def test_runs_on_more_frames_than_trained_and_stays_finite():
    model = _randomised(MSCModel(config_from_name("tiny")))
    x, t = _inputs(frames=40, batch=1)
    y = model(x, t)
    assert y.shape == x.shape and torch.isfinite(y).all()
    # relative positions: the last frames do not care how far the clip is from frame 0 beyond the
    # receptive field (depth x window), so a long clip's tail equals the same tail run alone
    tail = model(x[:, 30:], t[:, 30:])
    assert (y[:, -2:] - tail[:, -2:]).abs().max().item() <= 1e-4


def test_window_overrides_and_validation():
    model = _randomised(MSCModel(config_from_name("tiny")))
    x, t = _inputs()
    y_default = model(x, t)
    y_wide = model(x, t, windows=AttentionWindows(k_s=5, k_t=3, d=1, k_lo=3))
    assert not torch.allclose(y_default, y_wide)
    with pytest.raises(ValueError, match="larger than the 8 × 8 token grid"):  # where windows meet a model (the sampler)
        AttentionWindows(k_s=9).check_fits(model.config.grid)
    with pytest.raises(ValueError, match="9, larger than the 8 tokens on that axis"):  # a direct call: the kernel's own check
        model(x, t, windows=AttentionWindows(k_s=9))
    with pytest.raises(ValueError, match="k_lo must be a positive integer"):
        model(x, t, windows=AttentionWindows(k_lo=0))
    with pytest.raises(ValueError, match="one noise level per frame"):
        model(x, t[:, :3])
    with pytest.raises(ValueError, match="must divide"):
        config_from_name("tiny", low_res_factors=[3, 2])
    with pytest.raises(ValueError, match="unknown model size"):
        config_from_name("huge")
