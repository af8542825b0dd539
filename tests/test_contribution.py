"""bench.contribution: what the network adds to its anchor, in the sampler's situation."""

import torch
from conftest import perturbed_tiny

from bench.contribution import CHUNK, CONTEXT, predictions
from msc.model import MSCModel, config_from_name


def _clips(seed=0):
    return torch.rand(2, CONTEXT + CHUNK, 3, 16, 16, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_a_network_that_outputs_zero_predicts_its_anchor_at_level_one_and_the_skip_connection_below():
    """An untrained network (zero-initialised output) is exactly the "network output zero" row at every level, and at
    level 1, where the noisy input holds nothing of the truth, that is the anchor itself."""
    model = MSCModel(config_from_name("tiny", prior="previous_frame")).eval()
    clips = _clips()
    at_one = predictions(model, clips, 1.0)
    assert torch.allclose(at_one["model"], at_one["anchor"], atol=1e-6)
    assert torch.allclose(at_one["zero"], at_one["anchor"], atol=1e-6)
    assert torch.equal(at_one["anchor"], clips[:, CONTEXT - 1:CONTEXT].expand(-1, CHUNK, -1, -1, -1))  # copy-last prior
    half = predictions(model, clips, 0.5)
    assert torch.allclose(half["model"], half["zero"], atol=1e-5)
    assert not torch.allclose(half["zero"], half["anchor"], atol=1e-3)  # the skip connection reads the noisy truth


def test_a_trained_network_departs_from_the_zero_output_and_reads_only_its_context():
    """A network with weights departs from the zero output; its prediction of the chunk does not change when a frame
    after the chunk's context is replaced in the clips (only the context and the noise are read)."""
    model = perturbed_tiny(prior="previous_frame")
    clips = _clips()
    pred = predictions(model, clips, 1.0)
    assert not torch.allclose(pred["model"], pred["zero"], atol=1e-3)
    other = clips.clone()
    other[:, CONTEXT:] = _clips(seed=1)[:, CONTEXT:]  # another truth: at level 1 the input holds none of it
    assert torch.allclose(predictions(model, other, 1.0)["model"], pred["model"], atol=1e-5)
