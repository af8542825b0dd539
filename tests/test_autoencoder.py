"""Latent MSC: the frame autoencoder's shapes and normalisation, training on its latents, and evaluation in pixels."""

import torch

from msc.autoencoder import AutoencoderConfig, FrameAutoencoder
from msc.evaluate import EvalSettings, evaluate, load_model
from msc.sampling import SamplerSettings
from msc.train import main as train_main
from test_prepared_data import prepared  # noqa: F401  (the tiny prepared-data folder fixture)


def test_encode_decode_shapes_and_normalised_latents():
    torch.manual_seed(0)
    ae = FrameAutoencoder(AutoencoderConfig(latent_channels=4, width=8, factor=4)).eval()
    frames = torch.rand(2, 5, 3, 32, 32) * 2 - 1
    ae.fit_statistics(frames.flatten(0, 1))
    z = ae.encode(frames)
    assert z.shape == (2, 5, 4, 8, 8) and ae.latent_shape(32) == (4, 8, 8)
    per_channel = z.transpose(0, 2).flatten(1)  # [C, ...]
    assert torch.allclose(per_channel.mean(1), torch.zeros(4), atol=1e-4)
    assert torch.allclose(per_channel.std(1), torch.ones(4), atol=1e-2)
    assert ae.decode(z).shape == frames.shape


def test_training_on_latents_and_scoring_in_pixels(tmp_path):
    torch.manual_seed(0)
    FrameAutoencoder(AutoencoderConfig(latent_channels=4, width=8, factor=2)).save_pretrained(tmp_path / "ae")
    train_main(["--config", "tiny", "--set", "prior=previous_frame", "--data", "procedural", "--frames", "4", "--steps", "2",
                "--batch-size", "2", "--no-progress", "--autoencoder", str(tmp_path / "ae"), "--out", str(tmp_path / "run")])
    model = load_model(str(tmp_path / "run" / "final"))  # the autoencoder travels with the weights
    assert model.config.channels == 4 and model.config.image_size == 8 and hasattr(model, "autoencoder")
    settings = EvalSettings(clips=2, context=3, horizon=2, rollout=4, rollout_clips=1, sampler=SamplerSettings(steps=1, chunk=2))
    report = evaluate({"msc": model}, settings)
    assert len(report["sets"]["procedural"]["methods"]["msc"]["psnr"]) == 2  # scored against 16-pixel frames
    assert report["rollout"]["video"].shape == (1, 4, 3, 16, 16)


def test_a_stopped_autoencoder_run_resumes_exactly(prepared, tmp_path):
    """Four steps straight, or two then a resume from the checkpoint to four: the same weights (the batches and the
    learning rates are functions of the step, the optimizer is restored)."""
    from safetensors.torch import load_file

    from msc.autoencoder import train_autoencoder

    config = AutoencoderConfig(latent_channels=4, width=8, factor=2)
    common = dict(minutes=60, config=config, batch=4, pool=16, ckpt_every=2, threads=1)
    straight = train_autoencoder(prepared.root, str(tmp_path / "straight"), max_steps=4, **common)
    train_autoencoder(prepared.root, str(tmp_path / "stopped"), max_steps=2, **common)
    resumed = train_autoencoder(prepared.root, str(tmp_path / "stopped"), max_steps=4, resume=True, **common)
    assert straight["steps"] == resumed["steps"] == 4
    a, b = (load_file(str(tmp_path / run / "checkpoint" / "model.safetensors")) for run in ("straight", "stopped"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert set(resumed["psnr"]) == {"real", "camera", "procedural"}
