"""Action conditioning (the world model): one action per frame, frame-causal, through the KV cache and guidance."""

import pytest
import torch
from conftest import perturbed_tiny, random_context

from msc.sampling import sample_video
from msc.train import main as train_main
from msc.world import ACTIONS


@pytest.fixture(scope="module", params=["previous_frame", "action_kernel"])
def world_model(request):
    """A world model anchored on the previous frame, or on it through learned per-action kernels (perturbed away
    from the identity, so that every action moves the anchor its own way)."""
    return perturbed_tiny(prior=request.param, actions=len(ACTIONS))


def _actions(length: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, len(ACTIONS), (1, length), generator=torch.Generator().manual_seed(seed))


def test_a_frame_depends_on_the_actions_up_to_its_own_only(world_model):
    x, t = random_context(6), torch.rand(1, 6)
    actions = _actions(6)
    changed = actions.clone()
    changed[0, 3] = (changed[0, 3] + 1) % len(ACTIONS)
    a, b = world_model(x, t, actions=actions), world_model(x, t, actions=changed)
    assert torch.equal(a[:, :3], b[:, :3])  # frames before the changed action: untouched
    assert not torch.allclose(a[:, 3], b[:, 3])  # the frame it led to: changed


def test_sampled_frames_follow_only_earlier_actions_and_the_cache_is_exact(world_model):
    context, actions = random_context(3), _actions(3 + 5)
    kw = dict(steps=2, chunk=1, seed=2, actions=actions)
    video = sample_video(world_model, context, 5, **kw).video
    assert (video - sample_video(world_model, context, 5, use_cache=False, **kw).video).abs().max() <= 1e-4
    changed = actions.clone()
    changed[0, 5] = (changed[0, 5] + 2) % len(ACTIONS)  # the action that leads to frame 5
    other = sample_video(world_model, context, 5, steps=2, chunk=1, seed=2, actions=changed).video
    assert torch.equal(other[:, :5], video[:, :5]) and not torch.equal(other[:, 5], video[:, 5])
    guided = dict(kw, history_guidance=2.0)
    assert (sample_video(world_model, context, 5, **guided).video
            - sample_video(world_model, context, 5, use_cache=False, **guided).video).abs().max() <= 1e-4


def test_actions_are_checked(world_model, tiny_model):
    with pytest.raises(ValueError, match="conditioned on actions"):
        sample_video(world_model, random_context(2), 2)
    with pytest.raises(ValueError, match=r"\[B, K \+ frames\]"):
        sample_video(world_model, random_context(2), 2, actions=_actions(3))
    with pytest.raises(ValueError, match="must lie in"):
        sample_video(world_model, random_context(2), 2, actions=torch.full((1, 4), 9))
    with pytest.raises(ValueError, match="takes no actions"):
        sample_video(tiny_model, random_context(2), 2, actions=_actions(4))


def test_a_world_model_trains_on_world_episodes(tmp_path):
    train_main(["--config", "tiny", "--data", "world", "--set", "prior=previous_frame", f"actions={len(ACTIONS)}",
                         "--frames", "4", "--batch-size", "2", "--steps", "2", "--no-progress", "--out", str(tmp_path / "run")])
    assert (tmp_path / "run" / "final" / "model.safetensors").exists()


def test_the_action_following_bench_scores_true_other_and_frozen(world_model, tmp_path):
    from bench.world import action_following, format_table
    from msc.sampling import SamplerSettings

    sampler = SamplerSettings(steps=1, chunk=1, noise_schedule="shifted", shift=0.5)
    report = action_following(world_model, episodes=2, context=2, frames=3, sampler=sampler)
    assert set(report["scores"]) == {"true actions", "other actions", "copy-last"}
    assert report["other_actions_differ"] > 0 and isinstance(report["met"], bool)
    assert report["sampler"] == {"steps": 1, "chunk": 1, "noise_schedule": "shifted", "shift": 0.5}
    assert "true actions - other actions" in format_table(report) and "shifted levels" in format_table(report)


def test_the_long_rollout_measures_drift_sharpness_and_motion_from_nothing_or_held_out_frames(world_model, tmp_path):
    from PIL import Image

    from bench.world import long_rollout, write_rollout_sheet
    from msc.sampling import SamplerSettings

    report = long_rollout(world_model, frames=40, seeds=2, sampler=SamplerSettings(steps=1, chunk=1))
    assert report["videos"].shape == (2, 40, 3, 16, 16)
    assert report["colour_drift"] >= 0 and report["sharpness_ratio"] > 0 and isinstance(report["met"], bool)
    sheet = Image.open(write_rollout_sheet(str(tmp_path / "sheet.png"), report["videos"]))
    assert sheet.size == (2 * 16 * 5, 2 * 16 * 2)  # frames 0, 8, ..., 32 of each video, pixels doubled
    from bench.world import held_out_episodes

    start = held_out_episodes(2, 8, 16)
    continued = long_rollout(world_model, frames=40, seeds=2, sampler=SamplerSettings(steps=1, chunk=1), start=start)
    assert continued["videos"].shape == (2, 40, 3, 16, 16) and torch.equal(continued["videos"][:, :8], start[0])


def test_the_world_itself_is_scored_on_the_rollouts_seeds_and_actions():
    """The engine's reference rollout continues the held-out start a model continues, under the actions the model's
    rollout plays, and is scored by the same function."""
    from bench.world import engine_rollout, held_out_episodes, rollout_actions, rollout_scores
    from msc.data.procedural import TEST_SEED_OFFSET
    from msc.world import World

    report = engine_rollout(frames=40, seeds=2, size=16, context=8)
    assert set(rollout_scores(torch.zeros(1, 40, 3, 16, 16))) <= set(report) and report["seeds"] == 2
    clips, actions = held_out_episodes(1, 8, 16)
    world = World(TEST_SEED_OFFSET, 16)
    video = world.rollout(actions[0, 1:].tolist() + rollout_actions(0, 32).tolist())  # [40, 3, 16, 16]
    assert torch.equal(video[:8], clips[0])  # the held-out start, then the rollout's actions
    alone = rollout_scores(torch.stack([video, World(TEST_SEED_OFFSET + 1, 16).rollout(
        held_out_episodes(2, 8, 16)[1][1, 1:].tolist() + rollout_actions(1, 32).tolist())]))
    assert alone == {k: report[k] for k in alone}


def _assert_play_equals_sampling(model, context, actions, settings):
    """Playing ``actions`` ``[1, K + n]`` after ``context`` ``[1, K, ...]`` one frame per action (:class:`msc.play.Player`)
    makes the frames that sampling the whole action sequence at once makes."""
    from msc.play import Player

    k = context.shape[1]
    player = Player(model, context, actions[:, :k], settings)
    for a in actions[0, k:].tolist():
        player.step(a)
    expected = sample_video(model, context, actions.shape[1] - k, settings, actions=actions).video
    assert (player.video() - expected).abs().max() <= 1e-5


@pytest.mark.parametrize("guidance", [1.0, 2.0])
def test_live_play_equals_sampling_the_whole_action_sequence(world_model, guidance):
    from msc.play import Player
    from msc.sampling import SamplerSettings

    context, actions = random_context(3), _actions(3 + 4, seed=5)
    _assert_play_equals_sampling(world_model, context, actions, SamplerSettings(steps=2, chunk=1, seed=3,
                                                                                history_guidance=guidance, eta=0.2))
    from_nothing = Player(world_model, None, None, SamplerSettings(steps=2, chunk=1, first_frame_steps=3))
    from_nothing.step("left")
    again = sample_video(world_model, None, 2, SamplerSettings(steps=2, chunk=1, first_frame_steps=3), actions=torch.tensor([[0, 1]])).video
    assert (from_nothing.video() - again).abs().max() <= 1e-5
    with pytest.raises(ValueError, match="action must be one of"):
        from_nothing.step("jump")


def test_the_kernel_prior_anchors_chunks_of_any_size_and_trains(tmp_path):
    """Training anchors (all chunks at once) are the sampler's (:func:`anchor_frames`, chunk by chunk); a model with
    the action-kernel prior trains on world episodes and samples in chunks of several frames."""
    from msc.diffusion import anchor_frames, chunk_anchors

    model = perturbed_tiny(prior="action_kernel", actions=len(ACTIONS))
    x, actions = random_context(8, seed=1), _actions(8, seed=3)
    x = x.expand(3, -1, -1, -1, -1).contiguous()
    actions = actions.expand(3, -1).contiguous()
    anchor, anchored = chunk_anchors(x, torch.Generator().manual_seed(0), 4, "action_kernel", actions, model.action_kernels)
    copy, _ = chunk_anchors(x, torch.Generator().manual_seed(0), 4)  # the same cuts: the last frame before each chunk
    for clip in range(3):
        for i in range(8):
            if not anchored[clip, i]:
                continue
            source = next(s for s in range(i - 1, -1, -1) if torch.equal(copy[clip, i], x[clip, s]))
            expected = anchor_frames("action_kernel", None, x[clip : clip + 1, source], [i - source],
                                     actions[clip : clip + 1, source + 1 :], model.action_kernels)[0, 0]
            assert torch.allclose(anchor[clip, i], expected, atol=1e-5)
    video = sample_video(model, random_context(2), 5, steps=2, chunk=3, seed=1, actions=_actions(7)).video
    assert video.shape == (1, 7, 3, 16, 16) and torch.isfinite(video).all()
    from msc.diffusion import diffusion_loss

    model.train()
    loss = diffusion_loss(model, x, torch.Generator().manual_seed(1), clean_prefix_prob=0.5, max_chunk=4,
                          context_corruption=0.3, actions=actions)
    loss.backward()  # the kernels learn by their own loss (from clean frames), the network by the diffusion loss
    assert torch.isfinite(loss) and model.action_kernels.weight.grad.abs().sum() > 0
    model.eval()
    train_main(["--config", "tiny", "--data", "world", "--set", "prior=action_kernel", f"actions={len(ACTIONS)}",
                "--frames", "4", "--batch-size", "2", "--steps", "2", "--no-progress", "--out", str(tmp_path / "run")])
    assert (tmp_path / "run" / "final" / "model.safetensors").exists()


def test_action_kernels_learn_a_camera_step():
    """A kernel starts as the identity, shifts a frame exactly when its mass sits off centre, and learns a 2-pixel
    step from pairs of frames by its own regression loss."""
    from msc.diffusion import ActionKernels

    kernels = ActionKernels(2, 7)
    frame = torch.rand(4, 3, 16, 16) * 2 - 1
    assert (kernels(frame, torch.zeros(4, dtype=torch.long)) - frame).abs().mean() < 0.15  # close to the identity
    moved = torch.cat([frame[..., 2:], frame[..., -1:].expand(-1, -1, -1, 2)], dim=-1)  # 2 px left, edge replicated
    with torch.no_grad():
        kernels.weight[1] = 0
        kernels.weight[1, 3 * 7 + 5] = 1.0  # all the mass 2 px to the right of centre: the picture moves left
    assert torch.allclose(kernels(frame, torch.ones(4, dtype=torch.long)), moved, atol=1e-6)
    learner = ActionKernels(1, 7)
    optimizer = torch.optim.Adam(learner.parameters(), lr=0.01)
    for _ in range(200):
        optimizer.zero_grad()
        loss = (learner(frame, torch.zeros(4, dtype=torch.long)) - moved).pow(2).mean()
        loss.backward()
        optimizer.step()
    assert int(learner.kernels(torch.zeros(1, dtype=torch.long))[0].argmax()) == 3 * 7 + 5


def test_own_rollouts_are_the_models_frames_after_true_ones_and_train(tmp_path):
    """``--own-context-prob``: a step's context is 1..4 true frames, then frames the model samples after them with the
    clips' actions, one frame at a time (exactly :func:`sample_video`'s); a world model trains with it end to end."""
    from argparse import Namespace

    from msc.train import OWN_CONTEXT_TRUE_FRAMES, own_rollout

    model = perturbed_tiny(prior="action_kernel", actions=len(ACTIONS))
    clips = random_context(10, seed=1).expand(2, -1, -1, -1, -1).contiguous()
    actions = _actions(10, seed=3).expand(2, -1).contiguous()
    args = Namespace(own_context_prob=1.0, own_context_frames=5, own_context_steps=2, seed=0)
    lengths = set()
    for step in range(6):
        own = own_rollout(args, model, clips, actions, step, 0)
        k = next(i for i in range(own.shape[1] + 1) if i == own.shape[1] or not torch.equal(own[:, i], clips[:, i]))
        assert 1 <= k <= OWN_CONTEXT_TRUE_FRAMES and 1 <= own.shape[1] - k <= 5
        lengths.add(own.shape[1])
        again = own_rollout(args, model, clips, actions, step, 0)
        assert torch.equal(own, again)  # a function of (seed, step, rank)
    assert len(lengths) > 1 and model.training is False
    seed_of = torch.Generator().manual_seed(0 * 1_000_033 + 5 * 2017)  # step 5's draws, in own_rollout's order
    torch.rand((), generator=seed_of)
    k, r = int(torch.randint(1, OWN_CONTEXT_TRUE_FRAMES + 1, (), generator=seed_of)), int(torch.randint(1, 6, (), generator=seed_of))
    expected = sample_video(model, clips[:, :k], r, steps=2, chunk=1, batch=2, actions=actions[:, : k + r],
                            seed=int(torch.randint(0, 2**31, (), generator=seed_of))).video
    assert torch.equal(own, expected)
    assert own_rollout(Namespace(own_context_prob=0.0), model, clips, actions, 0, 0) is None
    train_main(["--config", "tiny", "--data", "world", "--set", "prior=action_kernel", f"actions={len(ACTIONS)}",
                "--frames", "6", "--batch-size", "2", "--steps", "2", "--no-progress", "--own-context-prob", "1",
                "--own-context-frames", "1", "--out", str(tmp_path / "run")])
    assert (tmp_path / "run" / "final" / "model.safetensors").exists()


def test_the_from_nothing_fvd_scores_videos_from_nothing_beside_the_engine_and_a_still_world(world_model, monkeypatch):
    """``bench.world --fvd``: N videos from nothing (the first frame drawn alone, the no-op first) against N held-out
    episodes, beside N other episodes and copy-first, through the FVD machinery (a stand-in feature network here: the
    I3D port has its own tests)."""
    import msc.i3d
    from bench.world import FVD_FRAMES, from_nothing_fvd
    from msc.sampling import SamplerSettings

    monkeypatch.setattr(msc.i3d, "load_i3d", lambda: lambda x: x.mean(dim=(3, 4)).flatten(1))  # [b, 3 T] "logits"
    report = from_nothing_fvd(world_model, count=3, sampler=SamplerSettings(steps=1, chunk=1, first_frame_steps=2))
    assert report["videos"].shape == (3, FVD_FRAMES, 3, 16, 16) and torch.isfinite(report["videos"]).all()
    assert min(report["fvd"], report["fvd_engine"], report["fvd_copy_first"]) >= 0 and report["first_frame_sharpness"] > 0


def test_first_frame_steps_train_every_frame_as_a_picture_from_nothing(tmp_path):
    """``--first-frame-prob``: a step's clips become one-frame clips with the no-op action, trained from nothing (no
    anchor, every frame scored); the other steps are unchanged."""
    from argparse import Namespace

    from msc.diffusion import diffusion_loss
    from msc.train import first_frames

    clips, actions = random_context(4, seed=1).expand(2, -1, -1, -1, -1).contiguous(), _actions(4).expand(2, -1)
    pictures, no_ops, from_nothing = first_frames(Namespace(first_frame_prob=1.0, seed=0), clips, actions, 0, 0)
    assert from_nothing and torch.equal(pictures, clips.flatten(0, 1)[:, None]) and not no_ops.any()
    assert no_ops.shape == (8, 1)
    assert first_frames(Namespace(first_frame_prob=0.0, seed=0), clips, actions, 0, 0)[2] is False
    model = perturbed_tiny(prior="action_kernel", actions=len(ACTIONS))
    loss = diffusion_loss(model, pictures, torch.Generator().manual_seed(0), clean_prefix_prob=1.0, from_nothing_prob=1.0,
                          context_corruption=0.3, actions=no_ops)
    assert torch.isfinite(loss)
    train_main(["--config", "tiny", "--data", "world", "--set", "prior=action_kernel", f"actions={len(ACTIONS)}",
                "--frames", "4", "--batch-size", "2", "--steps", "2", "--no-progress", "--first-frame-prob", "1",
                "--out", str(tmp_path / "run")])
    assert (tmp_path / "run" / "final" / "model.safetensors").exists()


def test_a_keep_mask_holds_what_the_camera_does_not_move():
    """``action_keep_mask``: each pixel is its keep share of the frame as it was plus the rest of the kernel's output;
    the masks start almost all kernel; a world model with them samples and plays as exactly as without."""
    from msc.diffusion import ActionKernels
    from msc.sampling import SamplerSettings

    kernels = ActionKernels(len(ACTIONS), 3, frame_size=16)
    plain = ActionKernels(len(ACTIONS), 3)
    frames, actions = torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 3])
    with torch.no_grad():
        plain.weight.copy_(torch.randn(plain.weight.shape))
        kernels.weight.copy_(plain.weight)
        assert (kernels.keep_masks(actions) < 0.003).all()
        assert torch.allclose(kernels(frames, actions), plain(frames, actions), atol=0.03)
        kernels.keep[1, :8] = 10.0  # action 1 keeps the top half of the view as it was
        kept = kernels(frames, actions)
    assert torch.allclose(kept[1, :, :8], frames[1, :, :8], atol=1e-6)
    assert torch.allclose(kept[1, :, 8:], plain(frames, actions)[1, :, 8:], atol=0.03)
    model = perturbed_tiny(prior="action_kernel", actions=len(ACTIONS), action_keep_mask=True)
    _assert_play_equals_sampling(model, random_context(2), _actions(6, seed=2), SamplerSettings(steps=2, chunk=1))


def test_hard_kernels_move_each_pixel_by_their_largest_tap_and_the_softmax_behind_them_is_trained():
    """``action_kernel_hard``: the anchors' kernel is its largest tap alone, so a frame moves by whole pixels without
    blur (a learned displacement); the kernels' regression (``soft``) still trains the softmax behind it; a world model
    with them samples and plays as exactly as without."""
    from msc.diffusion import ActionKernels
    from msc.sampling import SamplerSettings

    hard = ActionKernels(len(ACTIONS), 3, hard=True)
    with torch.no_grad():
        hard.weight.zero_()
        hard.weight[1, 3] = 0.1  # action 1: the largest tap is the left neighbour's (row 1, column 0)
    frames = torch.randn(2, 3, 8, 8)
    moved = hard(frames, torch.tensor([0, 1]))
    assert torch.equal(moved[1, :, :, 1:], frames[1, :, :, :-1])  # shifted one pixel right, no blend
    assert torch.equal(moved[1, :, :, 0], frames[1, :, :, 0])  # the edge replicated
    assert torch.equal(hard.kernels(torch.tensor([1])).flatten().sort().values[-2:], torch.tensor([0.0, 1.0]))
    assert not moved.requires_grad  # anchors are no regression target
    hard(frames, torch.tensor([0, 1]), soft=True).square().sum().backward()
    assert hard.weight.grad[1].abs().sum() > 0 and hard.kernels(torch.tensor([1]), soft=True).max() < 0.5  # the softmax: a blend
    model = perturbed_tiny(prior="action_kernel", actions=len(ACTIONS), action_keep_mask=True, action_kernel_hard=True)
    _assert_play_equals_sampling(model, random_context(2), _actions(6, seed=3), SamplerSettings(steps=2, chunk=1))


def test_circular_kernels_wrap_the_view_around_where_it_moved_in_from_beyond_the_edge():
    """``action_kernel_padding="circular"``: a whole-pixel move brings in the opposite edge (a roll), not a repeat of the
    near edge; the setting is checked and a world model with it samples and plays exactly."""
    from msc.diffusion import ActionKernels
    from msc.model import config_from_name
    from msc.sampling import SamplerSettings

    wrap = ActionKernels(len(ACTIONS), 3, hard=True, padding="circular")
    with torch.no_grad():
        wrap.weight.zero_()
        wrap.weight[1, 3] = 0.1  # action 1: the left neighbour's tap, a move one pixel right
    frames = torch.randn(2, 3, 8, 8)
    assert torch.equal(wrap(frames, torch.tensor([0, 1]))[1], frames[1].roll(1, dims=-1))
    with pytest.raises(ValueError, match="padding must be one of"):
        ActionKernels(len(ACTIONS), 3, padding="reflect")
    with pytest.raises(ValueError, match="action_kernel_padding must be one of"):
        config_from_name("tiny", prior="action_kernel", actions=len(ACTIONS), action_kernel_padding="zeros")
    model = perturbed_tiny(prior="action_kernel", actions=len(ACTIONS), action_kernel_hard=True,
                           action_kernel_padding="circular")
    assert model.action_kernels.padding == "circular"
    _assert_play_equals_sampling(model, random_context(2), _actions(6, seed=4), SamplerSettings(steps=2, chunk=1))


def test_a_model_with_a_new_keep_mask_starts_from_weights_without_one(tmp_path):
    from msc.model import MSCModel, config_from_name
    from msc.train import load_initial_weights

    source = perturbed_tiny(prior="action_kernel", actions=len(ACTIONS)).state_dict()
    model = MSCModel(config_from_name("tiny", prior="action_kernel", actions=len(ACTIONS), action_keep_mask=True))
    fresh = model.action_kernels.keep.detach().clone()
    load_initial_weights(model, source)
    assert torch.equal(model.action_kernels.weight, source["action_kernels.weight"])
    assert torch.equal(model.action_kernels.keep, fresh)  # as a new model's
    with pytest.raises(ValueError, match="do not fit"):
        load_initial_weights(model, {k: v for k, v in source.items() if k != "action_kernels.weight"})
    train_main(["--config", "tiny", "--data", "world", "--set", "prior=action_kernel", f"actions={len(ACTIONS)}",
                "--frames", "4", "--batch-size", "2", "--steps", "1", "--no-progress", "--out", str(tmp_path / "base")])
    train_main(["--config", "tiny", "--data", "world", "--set", "prior=action_kernel", f"actions={len(ACTIONS)}",
                "action_keep_mask=true", "--frames", "4", "--batch-size", "2", "--steps", "2", "--no-progress",
                "--init-from", str(tmp_path / "base" / "final"), "--out", str(tmp_path / "masked")])
    assert MSCModel.from_pretrained(str(tmp_path / "masked" / "final")).config.action_keep_mask


@pytest.mark.parametrize("bad", [["--rollout-seeds", "0"], ["--fvd", "1"], ["--fvd", "-2"]])
def test_the_world_bench_refuses_counts_it_cannot_score(bad, capsys):
    from bench.world import main as world_main

    with pytest.raises(SystemExit):
        world_main(["--weights", "weights/world", *bad])
    assert "--fvd 0 (none) or at least 2" in capsys.readouterr().err
