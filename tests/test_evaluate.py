"""The evaluation harness on a tiny untrained model (the bundled model's figures are in its card)."""

import json
from dataclasses import replace

import pytest
import torch

from msc.evaluate import EvalSettings, copy_last, evaluate, format_table, held_out_set, main
from msc.model import MSCModel, config_from_name
from msc.sampling import SamplerSettings


def test_copy_last_and_held_out_clips():
    clips = held_out_set("procedural", 2, 6, 16, None)
    assert clips.shape == (2, 6, 3, 16, 16)
    pred = copy_last(clips[:, :4], 3)
    assert torch.equal(pred[:, 2], clips[:, 3])


def test_evaluate_reports_every_method_and_the_rollout():
    torch.manual_seed(0)
    model = MSCModel(config_from_name("tiny")).eval()
    settings = EvalSettings(clips=2, context=4, horizon=4, rollout=12, rollout_clips=1, sampler=SamplerSettings(steps=2, chunk=2))
    finished = []  # the sets the callback saw, as each finished
    report = evaluate({"msc": model, "dense": MSCModel(config_from_name("tiny", attention="dense")).eval()}, settings,
                      guidance=(1.0, 2.0), callback=lambda r: finished.append(list(r["sets"])))
    assert finished == [["procedural"]]
    methods = report["sets"]["procedural"]["methods"]
    assert list(methods) == ["copy-last", "flow-extrapolation", "flow-splatting", "flow-splatting-whole", "flow-splatting-layered",
                            "msc", "msc w=2", "dense"]
    assert methods["msc w=2"]["history_guidance"] == 2.0
    for scores in methods.values():
        assert len(scores["psnr"]) == 4 and len(scores["ssim"]) == 4
        assert scores["trajectory_error"] >= 0 and scores["motion_ratio"] >= 0  # procedural: the sprites are known
    assert methods["copy-last"]["motion"] == 0 and methods["copy-last"]["motion_ratio"] == 0
    assert report["sets"]["procedural"]["trajectory_error_floor"] >= 0
    table = format_table(report)
    assert "motion ratio" in table and "sprite err px" in table
    rollout = report["rollout"]
    assert rollout["video"].shape == (1, 12, 3, 16, 16) and len(rollout["frame_mean"]) == 12
    assert isinstance(rollout["colour_kept"], bool) and len(rollout["colour_context"][0]) == 3
    assert rollout["sharpness_context"] > 0


def test_fvd_is_scored_for_every_method(tmp_path):
    """Two procedural clips of 5 + 4 frames, three methods' FVD (the smallest FVD run: seconds)."""
    from msc.i3d import I3D

    torch.manual_seed(0)
    i3d = I3D().eval()  # random weights: the bookkeeping, not the numbers (tests/test_fvd.py checks those)
    settings = EvalSettings(clips=2, context=5, horizon=4, rollout=0, sampler=SamplerSettings(steps=1, chunk=4), fvd=True)
    report = evaluate({"msc": MSCModel(config_from_name("tiny")).eval()}, settings, i3d=i3d)
    entry = report["sets"]["procedural"]
    assert entry["fvd"]["clips"] == 2 and entry["fvd"]["frames"] == 9 and entry["fvd"]["i3d_seconds"] > 0
    assert all(isinstance(m["fvd"], float) for m in entry["methods"].values())
    assert "FVD: 2 clips of 9 frames" in format_table(report)
    # with a feature cache: the same scores; a second evaluation computes only what its sampler draws anew (seed 1)
    cache = str(tmp_path / "i3d")
    cached = evaluate({"msc": MSCModel(config_from_name("tiny")).eval()}, settings, i3d=i3d, fvd_cache=cache)
    assert {n: m["fvd"] for n, m in cached["sets"]["procedural"]["methods"].items()} == \
        {n: m["fvd"] for n, m in entry["methods"].items()}
    reseeded = replace(settings, sampler=replace(settings.sampler, seed=1))
    calls = []
    hook = i3d.register_forward_hook(lambda module, inputs, output: calls.append(inputs[0].shape[0]))
    again = evaluate({"msc": MSCModel(config_from_name("tiny")).eval()}, reseeded, i3d=i3d, fvd_cache=cache)
    hook.remove()
    methods = again["sets"]["procedural"]["methods"]
    assert all(methods[n]["fvd"] == entry["methods"][n]["fvd"] for n in methods if n != "msc")
    assert calls == [2]  # one batch: the model's 2 new clips; the truth and the baselines came from the cache


def test_sets_that_need_prepared_data_say_so():
    with pytest.raises(ValueError, match="msc.data.prepare"):
        held_out_set("real", 2, 6, 16, None)


def test_cli_writes_json_videos_and_gates_plot(tmp_path):
    torch.manual_seed(0)
    MSCModel(config_from_name("tiny")).save_pretrained(tmp_path / "w")
    out = tmp_path / "eval.json"
    code = main(["--weights", str(tmp_path / "w"), "--clips", "2", "--context", "2", "--horizon", "2", "--steps", "2",
                 "--chunk", "2", "--rollout", "4", "--rollout-clips", "1", "--json", str(out),
                 "--videos", str(tmp_path / "v"), "--gates-plot", str(tmp_path / "gates.png")])
    assert code == 0
    report = json.loads(out.read_text())
    assert set(report["sets"]["procedural"]["methods"]) == {"copy-last", "flow-extrapolation", "flow-splatting", "flow-splatting-whole",
                                                            "flow-splatting-layered", "msc"}
    assert report["rollout"]["frames"] == 4
    assert len(report["gates"]["low_res_share"]) == 2
    assert (tmp_path / "v" / "continuation_procedural_msc.mp4").stat().st_size > 0
    assert (tmp_path / "gates.png").stat().st_size > 0


def test_cli_reports_a_missing_weights_folder(tmp_path, capsys):
    assert main(["--weights", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
