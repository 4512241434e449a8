"""ONNX export: the file, its parity with PyTorch and its speed, recorded on the run; failures that say what failed.

The trained tiny run (32 px frames) exports with height and width fixed (under the dynamic graph's
64 px); a run with a 64 px checkpoint exports fully dynamic, through `mlflow run -e export`.
"""

import importlib.util
import json
import subprocess
from pathlib import Path

import mlflow
import numpy as np
import onnxruntime
import pytest
import torch
from mlflow.tracking import MlflowClient

from conftest import REPO, make_split, tiny_config
from regolith import Refused, data, export, model as segformer
from test_evaluate import copy_of_run, stored_checkpoint, verify_folders

FILES = {"model.onnx", "preprocessing.json", "report.json"}


def run_export(*argv) -> int:
    """`python -m regolith.export ...` in this process; returns the exit code."""
    try:
        export.main(list(argv))
    except SystemExit as exit:
        return exit.code
    return 0


def export_folders(run_id: str) -> list:
    return verify_folders(run_id, "export")


def test_the_registered_model_exports_checked_and_recorded_on_its_run(in_store, tmp_path, capsys):
    before = export_folders(in_store["run_id"])
    out = tmp_path / "onnx"
    assert run_export(in_store["alias"], "--out", str(out), "--rounds", "1") == 0
    printed = capsys.readouterr().out
    assert {p.name for p in out.iterdir()} == FILES
    report = json.loads((out / "report.json").read_text())
    assert report["checkpoint"] == "models:/regolith-segformer/1/artifacts/best.pt"  # what the version serves
    assert report["check"] == "pass" and report["split_relation"] == "the run's validation split"
    parity = report["parity"]
    assert parity["class_agreement"] >= 0.9999 and parity["pixels"] == 4 * 32 * 32
    assert parity["max_abs_logit_diff"] < 1e-4
    run = MlflowClient().get_run(in_store["run_id"])
    assert parity["iou_rock"]["pytorch"] == pytest.approx(run.data.metrics["best/iou_rock"], abs=1e-6)
    assert parity["iou_rock"]["onnxruntime"] == pytest.approx(parity["iou_rock"]["pytorch"], abs=1e-4)
    # 32 px frames are under the dynamic graph's 64: height and width fixed, and said
    assert report["onnx"]["dynamic"]["height"] is None and report["onnx"]["dynamic"]["fixed_side"] == 32
    assert "64 px" in report["onnx"]["dynamic"]["why_fixed"] and report["odd_size"] is None
    assert report["onnx"]["dims"] == {"images": ["batch", 3, 32, 32], "logits": ["batch", 3, 32, 32],
                                      "labels": ["batch", 32, 32]}
    for batch in ("batch_1", "batch_8"):
        row = report["latency"][batch]
        assert row["onnxruntime"]["median_ms"] > 0 and row["pytorch"]["images_per_s"] > 0
    assert "check: pass" in printed and "height and width fixed at 32" in printed

    # Recorded on the run, in a folder of its own, with what it found.
    folder = run.data.tags["export/artifacts"]
    assert export_folders(in_store["run_id"]) == sorted([*before, folder])
    assert {Path(info.path).name for info in MlflowClient().list_artifacts(in_store["run_id"], folder)} == FILES
    assert run.data.tags["export/check"] == "pass" and run.data.metrics["export/class_agreement"] >= 0.9999

    # A deployer's side: onnxruntime and numpy only, raw uint8 frames in, the classes out.
    split = data.load_split(in_store["val_split"])
    session = onnxruntime.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    logits, labels = session.run(None, {"images": split.images[:3].numpy()})
    net = segformer.model_from_checkpoint(segformer.load_checkpoint(stored_checkpoint(in_store, tmp_path)))
    with torch.no_grad():
        expected = segformer.logits_at_mask_size(net, split.images[:3])
    assert labels.dtype == np.uint8 and labels.shape == (3, 32, 32)
    assert np.abs(logits - expected.numpy()).max() < 1e-4 and (labels == expected.argmax(1).numpy()).mean() >= 0.9999
    preprocessing = json.loads((out / "preprocessing.json").read_text())
    assert preprocessing["frame"] == {**preprocessing["frame"], "side": 32, "fit": "letterbox"}
    assert preprocessing["in_graph"]["mean"] == segformer.PREPROCESSING["mean"]


def test_an_export_logged_as_an_mlflow_onnx_model_never_overwrites_an_earlier_one(in_store, tmp_path):
    before = export_folders(in_store["run_id"])  # the test above's, when run with it
    assert run_export(in_store["run_id"], "--out", str(tmp_path / "b"), "--rounds", "1", "--log-model", "true") == 0
    after = export_folders(in_store["run_id"])
    assert set(before) < set(after) and len(after) == len(before) + 1
    report = json.loads((tmp_path / "b" / "report.json").read_text())
    model = mlflow.get_logged_model(report["mlflow_model"].removeprefix("models:/"))
    assert model.source_run_id == in_store["run_id"] and model.name == "onnx"
    assert MlflowClient().get_run(in_store["run_id"]).info.status == "FINISHED"  # not reopened
    images = data.load_split(in_store["val_split"]).images[:2].numpy()
    predicted = mlflow.pyfunc.load_model(report["mlflow_model"]).predict({"images": images})
    session = onnxruntime.InferenceSession(str(tmp_path / "b" / "model.onnx"), providers=["CPUExecutionProvider"])
    assert (predicted["labels"] == session.run(None, {"images": images})[1]).all()


def test_a_64_px_checkpoint_exports_fully_dynamic_through_mlflow_run(in_store, tmp_path):
    torch.manual_seed(0)
    config = tiny_config()
    net = segformer.random_init(config)
    (tmp_path / "ckpt").mkdir()
    torch.save(segformer.checkpoint(net, 1, {}, {"batch": 4}, segformer.PREPROCESSING, "fp32"),
               tmp_path / "ckpt" / "best.pt")
    run_id = copy_of_run(in_store, "frames-64", tmp_path / "ckpt" / "best.pt")
    MlflowClient().log_param(run_id, "image_size", "64x64")
    split = make_split(tmp_path / "val64", frames=3, size=64)
    out = tmp_path / "onnx"
    cmd = ["mlflow", "run", str(REPO), "--env-manager", "local", "-e", "export", "-P", f"run={run_id}",
           "-P", f"out={out}", "-P", f"split={split}", "-P", "rounds=1"]
    done = subprocess.run(cmd, cwd=in_store["root"], env=in_store["env"], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["onnx"]["dynamic"] == {"batch": [1, 1024], "height": [64, 4096], "width": [64, 4096],
                                         "fixed_side": None, "why_fixed": None}
    assert report["onnx"]["dims"]["labels"] == ["batch", "height", "width"]
    assert report["split_relation"].startswith("not the run's validation split")
    assert report["odd_size"]["shape"] == [2, 3, 77, 93] and report["odd_size"]["class_agreement"] >= 0.9999
    session = onnxruntime.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    images = torch.randint(0, 256, (3, 3, 100, 161), dtype=torch.uint8, generator=torch.Generator().manual_seed(5))
    logits, labels = session.run(None, {"images": images.numpy()})
    with torch.no_grad():
        expected = segformer.logits_at_mask_size(net.eval(), images)
    assert logits.shape == (3, 3, 100, 161) and np.abs(logits - expected.numpy()).max() <= 1e-5 * max(
        1.0, expected.abs().max().item())
    launcher = [r for r in MlflowClient().search_runs([MlflowClient().get_run(run_id).info.experiment_id])
                if r.data.tags.get("regolith.kind") == "export"]
    assert launcher and launcher[0].data.tags["regolith.source_run"] == run_id


class Eigenvalues(torch.nn.Module):
    """An operator with no ONNX translation."""

    def forward(self, images):
        return torch.linalg.eigvals(images[0, 0].float()).real


class PadToThirtyTwo(torch.nn.Module):
    """A shape guard (height % 32) that torch.export cannot keep dynamic."""

    def forward(self, images):
        x = images.float()
        if x.shape[2] % 32:
            x = torch.nn.functional.pad(x, (0, 0, 0, 32 - x.shape[2] % 32))
        return x.mean(1), x.mean(1).to(torch.uint8)


def test_export_failures_name_the_operator_and_the_shape(tmp_path):
    with pytest.raises(Refused, match=r"ONNX conversion failed: .*operator aten\.linalg_eig"):
        export.to_onnx(Eigenvalues(), 32, tmp_path / "eig.onnx")
    fallback = export.to_onnx(PadToThirtyTwo(), 64, tmp_path / "pad.onnx")["dynamic"]
    assert fallback["height"] is None and fallback["fixed_side"] == 64
    assert "dynamic height and width failed" in fallback["why_fixed"] and "height" in fallback["why_fixed"]


def test_a_parity_miss_names_the_numbers():
    report = {"split": "/data/test_photoreal", "odd_size": None,
              "parity": {"class_agreement": 0.9990, "pixels": 10_000, "max_abs_logit_diff": 0.25}}
    assert export.verdict(report) == ("class maps agree on 99.900000% of 10000 pixels of /data/test_photoreal "
                                      "(goal 99.99%; max |logit difference| 0.25)")
    report["parity"]["class_agreement"] = 1.0
    assert export.verdict(report) == "pass"


def test_without_the_onnx_extra_one_line_says_how_to_install_it(monkeypatch, tmp_path, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None if name == "onnxruntime" else
                        real(name, *args))
    assert run_export("dr_6", "--out", str(tmp_path / "out")) == 2
    err = capsys.readouterr().err
    assert err == "error: ONNX export needs onnxruntime (the onnx extra): pip install -e '.[onnx]'\n"
    assert not (tmp_path / "out").exists()


def test_a_split_of_frames_the_graph_does_not_take_is_refused_before_parity():
    from types import SimpleNamespace
    fixed = {"height": None, "fixed_side": 32, "why_fixed": "the checkpoint's frames are 32 px"}
    with pytest.raises(Refused, match=r"frames of 64x64, but the graph's height and width are fixed at 32"):
        export.check_sizes(SimpleNamespace(path="val64", image_size=(64, 64)), fixed)
    export.check_sizes(SimpleNamespace(path="val32", image_size=(32, 32)), fixed)
    dynamic = {"height": [64, 4096], "fixed_side": None, "why_fixed": None}
    with pytest.raises(Refused, match=r"frames of 48x64, outside the 64 to 4096 px the graph takes"):
        export.check_sizes(SimpleNamespace(path="val", image_size=(64, 48)), dynamic)
