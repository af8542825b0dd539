"""Training machinery: overfitting, exact resume, DDP gradients, the optimizer checkpoint format."""

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from msc.data import procedural_clip
from msc.diffusion import sample_training_levels, velocity_loss
from msc.model import MSCModel, config_from_name
from msc.train import learning_rate, main as train_main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_tiny_model_overfits_one_clip():
    torch.manual_seed(0)
    model = MSCModel(config_from_name("tiny"))
    clip = procedural_clip(3, 6, 16)[None]  # [1, T, 3, 16, 16]
    g = torch.Generator().manual_seed(0)
    levels = sample_training_levels(1, 6, g).clamp(min=0.2)
    noise = torch.randn(clip.shape, generator=g)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(300):
        loss = velocity_loss(model, clip, levels, noise)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] <= losses[0] / 10, (losses[0], losses[-1])


def _log(out):
    with open(os.path.join(out, "log.jsonl")) as f:
        return [json.loads(line) for line in f]


TINY_RUN = ["--config", "tiny", "--frames", "4", "--batch-size", "2", "--log-every", "1", "--warmup", "3", "--no-progress"]


def test_resume_reproduces_the_loss_curve(tmp_path):
    straight, split = str(tmp_path / "straight"), str(tmp_path / "split")
    train_main(TINY_RUN + ["--out", straight, "--steps", "8", "--ckpt-every", "100"])
    train_main(TINY_RUN + ["--out", split, "--steps", "8", "--ckpt-every", "4", "--max-minutes", "1e-9"])
    assert [r["step"] for r in _log(split)] == [1]  # stopped at once, with a checkpoint
    train_main(TINY_RUN + ["--out", split, "--steps", "8", "--ckpt-every", "4", "--resume"])
    a, b = _log(straight), _log(split)
    assert [r["step"] for r in b] == list(range(1, 9))
    assert [r["loss"] for r in a] == pytest.approx([r["loss"] for r in b], abs=1e-6)
    final_a = MSCModel.from_pretrained(os.path.join(straight, "final"))
    final_b = MSCModel.from_pretrained(os.path.join(split, "final"))
    for (name, p), q in zip(final_a.state_dict().items(), final_b.state_dict().values()):
        assert torch.allclose(p, q, atol=1e-6), name


def test_wall_time_budget_decays_the_rate_and_ends_with_final_weights(tmp_path):
    out = str(tmp_path / "budget")
    train_main(TINY_RUN + ["--out", out, "--steps", "100000", "--budget-minutes", "0.15", "--ckpt-every", "100000"])
    log = _log(out)
    assert 1 < len(log) < 100000
    assert log[-1]["lr"] < 0.2 * max(r["lr"] for r in log)  # cosine decay over the budget, not over --steps
    assert os.path.exists(os.path.join(out, "final", "model.safetensors"))
    assert os.path.exists(os.path.join(out, "checkpoint"))
    train_main(["--out", out, "--export", str(tmp_path / "exported")])  # the checkpoint's EMA = the final weights
    final = MSCModel.from_pretrained(os.path.join(out, "final")).state_dict()
    exported = MSCModel.from_pretrained(str(tmp_path / "exported")).state_dict()
    assert all(torch.equal(final[k], exported[k]) for k in final)


def test_learning_rate_follows_the_further_of_steps_and_time():
    assert learning_rate(50, 1.0, 10, 1000, time_progress=1.0) == pytest.approx(0.1)
    assert learning_rate(1000, 1.0, 10, 1000, time_progress=0.0) == pytest.approx(0.1)
    assert learning_rate(10, 1.0, 10, 1000) == pytest.approx(1.0)
    assert learning_rate(4, 1.0, 10, 1000, time_progress=1.0) == pytest.approx(0.5)  # warm-up first


def _batch():
    g = torch.Generator().manual_seed(0)
    clips = torch.stack([procedural_clip(i, 4, 16) for i in range(4)])
    return clips, torch.rand(4, 4, generator=g), torch.randn(clips.shape, generator=g)


def _ddp_worker(rank, world, init_file, out_file):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.manual_seed(0)
    model = MSCModel(config_from_name("tiny"))
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    clips, levels, noise = _batch()
    part = slice(rank * 2, rank * 2 + 2)
    velocity_loss(ddp, clips[part], levels[part], noise[part]).backward()
    if rank == 0:
        save_file({n: p.grad.contiguous() for n, p in model.named_parameters()}, out_file)
    del ddp  # its reducer holds the process group: released before the group is
    dist.barrier()
    dist.destroy_process_group()
    # Leave without interpreter teardown: a gloo worker thread still joinable when the static destructors run
    # calls std::terminate ("terminate called without an active exception", SIGABRT), after all work is done.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def test_ddp_two_processes_match_one_process(tmp_path):
    out = str(tmp_path / "grads.safetensors")
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), out), nprocs=2, join=True)
    torch.manual_seed(0)
    model = MSCModel(config_from_name("tiny"))
    clips, levels, noise = _batch()
    velocity_loss(model, clips, levels, noise).backward()
    ddp_grads = load_file(out)
    for name, p in model.named_parameters():
        assert torch.allclose(p.grad, ddp_grads[name], atol=1e-6, rtol=1e-4), name


def test_torchrun_two_processes_end_to_end(tmp_path):
    out = str(tmp_path / "ddp")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
           "-m", "msc.train", *TINY_RUN, "--out", out, "--steps", "3"]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert [r["step"] for r in _log(out)] == [1, 2, 3]
    assert os.path.isfile(os.path.join(out, "final", "model.safetensors"))


def test_compact_resumable_copy_continues_on_another_machine(tmp_path):
    """--keep-resumable writes a bf16-optimizer copy with the log; --resume-from starts a new run folder from it."""
    kept = str(tmp_path / "kept")
    train_main(TINY_RUN + ["--out", str(tmp_path / "a"), "--steps", "4", "--ckpt-every", "2", "--keep-resumable", kept])
    assert sorted(os.listdir(kept)) == ["ema.safetensors", "log.jsonl", "model.safetensors", "optimizer.safetensors", "state.json"]
    assert any(t.dtype == torch.bfloat16 for t in load_file(os.path.join(kept, "optimizer.safetensors")).values())
    out = str(tmp_path / "b")  # a fresh machine: no run folder yet
    train_main(TINY_RUN + ["--out", out, "--steps", "6", "--ckpt-every", "2", "--resume-from", kept])
    with open(os.path.join(out, "log.jsonl")) as f:
        steps = [json.loads(line)["step"] for line in f]
    assert steps[0] == 1 and steps[-1] == 6  # the kept history, then the continuation
    # the same command again, now that the run folder has its own (newer) checkpoint: it continues from that,
    # keeping the log it has (a restart from scratch would rewrite it with new timings)
    with open(os.path.join(out, "log.jsonl")) as f:
        before = f.read()
    train_main(TINY_RUN + ["--out", out, "--steps", "8", "--ckpt-every", "2", "--resume-from", kept])
    with open(os.path.join(out, "log.jsonl")) as f:
        after = f.read()
    assert after.startswith(before) and [json.loads(line)["step"] for line in after.splitlines()][-1] == 8


def test_fine_tune_starts_from_the_given_weights_with_a_fresh_schedule(tmp_path):
    """--init-from loads a checkpoint's EMA (or a weights folder) into the model and its EMA, at step 0 with a new
    optimizer; settings that keep the shapes may change; an interrupted fine-tune continues from its own checkpoint."""
    base = str(tmp_path / "base")
    train_main(TINY_RUN + ["--out", base, "--steps", "3"])
    source = load_file(os.path.join(base, "checkpoint", "ema.safetensors"))
    tuned = str(tmp_path / "tuned")
    overrides = ["--set", "prior=previous_frame", "noise_scale=0.5"]
    train_main(TINY_RUN + ["--out", tuned, "--steps", "0", "--init-from", os.path.join(base, "checkpoint"), *overrides])
    start = load_file(os.path.join(tuned, "final", "model.safetensors"))
    assert all(torch.equal(start[k], v) for k, v in source.items())
    assert json.load(open(os.path.join(tuned, "final", "config.json")))["noise_scale"] == 0.5
    train_main(TINY_RUN + ["--out", tuned, "--steps", "2", "--ckpt-every", "1", "--init-from", os.path.join(base, "final"), *overrides])
    with open(os.path.join(tuned, "log.jsonl")) as f:
        assert [json.loads(line)["step"] for line in f] == [1, 2]  # its own steps from 0, not the base run's
    train_main(TINY_RUN + ["--out", tuned, "--steps", "3", "--init-from", os.path.join(base, "final"), *overrides])
    with open(os.path.join(tuned, "log.jsonl")) as f:
        assert [json.loads(line)["step"] for line in f] == [1, 2, 3]  # continued, not restarted


@pytest.mark.parametrize("extra, message", [
    (["--context-corruption", "-0.1"], "must be a standard deviation >= 0"),
    (["--context-corruption", "nan"], "must be a standard deviation >= 0"),
    (["--context-corruption", "0.05"], "needs the previous_frame prior"),
    (["--from-nothing-prob", "1.5"], "must be a probability"),
    (["--from-nothing-prob", "0.5"], "needs the previous_frame prior"),
    (["--shared-level-prob", "-0.5"], "must be a probability"),
    (["--own-context-prob", "2"], "must be a probability"),
    (["--first-frame-prob", "-1"], "must be a probability"),
    (["--first-frame-prob", "0.5"], "without a prior"),
    (["--own-context-prob", "0.5"], "needs a prior"),
    (["--own-context-prob", "0.5", "--set", "prior=previous_frame", "--frames", "8", "--own-context-frames", "4"], "must be in 1..3"),
    (["--adversarial", "-1"], "must be a weight >= 0"),
    (["--adversarial", "0.5"], "needs a prior"),
    (["--adversarial", "0.5", "--set", "prior=previous_frame", "--frames", "6", "--adversarial-chunk", "5"], "at most 4"),
    (["--adversarial", "0.5", "--set", "prior=previous_frame", "--frames", "6", "--adversarial-rollout", "4"], "at most 4"),
    (["--adversarial", "0.5", "--set", "prior=previous_frame", "--adversarial-steps", "0"], "must be at least 1"),
    (["--adversarial-warmup", "-1"], "must be a number of steps >= 0"),
    (["--adversarial-from-nothing", "1.5"], "must be a probability"),
    (["--adversarial", "0.5", "--set", "prior=previous_frame", "--adversarial-from-nothing", "0.5",
      "--adversarial-first-steps", "0"], "must be at least 1"),
])
def test_training_options_reject_what_they_cannot_do(tmp_path, extra, message):
    with pytest.raises(ValueError, match=message):
        train_main(["--config", "tiny", "--steps", "1", "--no-progress", "--out", str(tmp_path / "run"), *extra])
