"""The fresh inference pass: it reproduces validation, logs back to the run, and refuses what it should.

The tiny run of conftest's ``trained`` fixture (one per session) is what every test here and in
test_pull and test_photos evaluates or resolves.
"""

import csv
import json
import math
import subprocess
from pathlib import Path

import mlflow
import pytest
import torch
from mlflow.tracking import MlflowClient
from torchmetrics.classification import MulticlassJaccardIndex

from conftest import REPO
from regolith import CLASSES, data, evaluate, model as segformer, store

CLASS_KEYS = [f"iou_{c}" for c in CLASSES] + ["miou"]
VERIFY_FILES = {"frames.csv", "confusion_per_frame.json", "overlays.png", "summary.json",
                # the run watched photos in training (-P real_images), so its verification counts their curve
                "curve.csv", "curve.json", "curve_counts.npz", "curve.png"}


def run_evaluate(*argv) -> int:
    """`python -m regolith.evaluate ...` in this process; returns the exit code."""
    try:
        evaluate.main(list(argv))
    except SystemExit as exit:
        return exit.code
    return 0


def verify_folders(run_id: str, prefix: str = "verify") -> list:
    """The run's ``prefix/<UTC time>`` folders (evaluate's verify/, export's export/)."""
    return sorted(info.path for info in MlflowClient().list_artifacts(run_id, prefix))


def latest_summary(run_id: str, tmp_path: Path) -> tuple:
    """(artifact folder, summary.json) of the run's newest evaluation, downloaded from the store."""
    folder = MlflowClient().get_run(run_id).data.tags["verify/artifacts"]
    local = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=folder, dst_path=str(tmp_path)))
    return local, json.loads((local / "summary.json").read_text())



def test_a_run_that_watched_photos_was_verified_with_its_curve_when_it_ended(in_store):
    # conftest's run trained with --real-images and no separate evaluate step: its first verification is its own.
    log = (in_store["root"] / "train.log").read_text()
    assert "verifying best.pt by a fresh pass, with the operating curve on" in log and "rock-IoU agrees" in log
    first = verify_folders(in_store["run_id"])[0]
    stored = {info.path.rsplit("/", 1)[-1] for info in MlflowClient().list_artifacts(in_store["run_id"], first)}
    assert VERIFY_FILES <= stored
    metrics = MlflowClient().get_run(in_store["run_id"]).data.metrics
    assert "verify/iou_rock_at_real_10pct" in metrics and "verify/real_share_at_argmax" in metrics

def test_fresh_pass_equals_training_time_iou(in_store, tmp_path, capsys):
    run_id = in_store["run_id"]
    before = verify_folders(run_id)
    assert run_evaluate("--run", in_store["name"]) == 0
    out = capsys.readouterr().out
    assert "rock-IoU agrees" in out and "the run's validation split" in out

    run = MlflowClient().get_run(run_id)
    for key in CLASS_KEYS:  # on CPU the fresh pass reproduces validation to the last digit
        assert run.data.metrics[f"verify/{key}"] == pytest.approx(run.data.metrics[f"best/{key}"], abs=1e-6), key
    assert run.data.tags["verify/split"] == str(in_store["val_split"])
    assert run.data.tags["verify/check"] == "pass"
    assert run.info.status == "FINISHED"  # logged to without reopening it

    folders = verify_folders(run_id)
    assert len(folders) == len(before) + 1 and run.data.tags["verify/artifacts"] in folders
    local, summary = latest_summary(run_id, tmp_path)
    assert {p.name for p in local.iterdir()} == VERIFY_FILES
    assert summary["check"] == "pass" and summary["frames"] == 4 and summary["checkpoint_epoch"] >= 1
    assert f"artifacts in {summary['artifacts']}/" in out

    # The per-frame confusion matrices sum to the split's, and the table has one row per frame.
    confusions = json.loads((local / "confusion_per_frame.json").read_text())
    total = torch.tensor(confusions["confusion"]).sum(0)
    rows = list(csv.DictReader((local / "frames.csv").open()))
    assert sorted(r["frame"] for r in rows) == confusions["frames"] == ["00000", "00001", "00002", "00003"]
    assert sum(int(r["rock_pixels"]) for r in rows) == int(total[1].sum())
    rock = [float(r["iou_rock"]) for r in rows]
    assert rock == sorted(rock, key=lambda v: (math.isnan(v), v))  # worst first

    # An independent IoU (torchmetrics) on the stored checkpoint's predictions agrees.
    net = segformer.model_from_checkpoint(segformer.load_checkpoint(stored_checkpoint(in_store, tmp_path)))
    split = data.load_split(in_store["val_split"])
    with torch.no_grad():
        predictions = segformer.logits_at_mask_size(net, split.images).argmax(1)
    jaccard = MulticlassJaccardIndex(num_classes=3, average=None, ignore_index=255)
    expected = jaccard(predictions, split.masks.long()).double()
    fresh = torch.tensor([summary["fresh"][f"iou_{c}"] for c in CLASSES], dtype=torch.float64)
    assert torch.allclose(fresh, expected, atol=1e-6)


@pytest.mark.parametrize("how", ["name", "id", "alias"])
def test_the_run_is_found_by_name_id_and_registry_alias(in_store, how, capsys):
    ref = {"name": in_store["name"], "id": in_store["run_id"], "alias": in_store["alias"]}[how]
    assert run_evaluate("--run", ref) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"dr_6 ({in_store['run_id'][:8]})")
    # By alias: the best.pt inside the version's MLflow model, the one it serves.
    source = "models:/regolith-segformer/1/artifacts/best.pt" if how == "alias" else f"runs:/{in_store['run_id']}/best.pt"
    assert f"from {source}" in out


def test_registry_alias_resolves_to_the_run_and_its_best_pt(in_store, tmp_path):
    client = MlflowClient()
    version = client.get_model_version_by_alias("regolith-segformer", "dr_6")
    assert version.run_id == in_store["run_id"]
    assert client.get_run(in_store["run_id"]).data.tags["regolith.model_version"] == "models:/regolith-segformer/1"
    assert version.source == client.get_run(in_store["run_id"]).data.tags["regolith.logged_model"]  # the MLflow model
    via_alias = mlflow.artifacts.download_artifacts(f"{in_store['alias']}/artifacts/best.pt", dst_path=str(tmp_path / "a"))
    via_run = mlflow.artifacts.download_artifacts(run_id=in_store["run_id"], artifact_path="best.pt",
                                                  dst_path=str(tmp_path / "r"))
    assert Path(via_alias).read_bytes() == Path(via_run).read_bytes()


def test_re_runs_never_overwrite_an_earlier_result(in_store, tmp_path):
    run_id = in_store["run_id"]
    before = verify_folders(run_id)
    assert run_evaluate("--run", run_id) == 0
    assert run_evaluate("--run", run_id) == 0
    after = verify_folders(run_id)
    assert len(after) == len(before) + 2 and set(before) < set(after)
    history = MlflowClient().get_metric_history(run_id, "verify/iou_rock")
    assert len(history) >= 2 and len({m.step for m in history}) == len(history)

    # Two evaluations within the same second get distinct folders.
    other = copy_of_run(in_store, "same-second", None)
    (tmp_path / "20990101T000000Z").mkdir()
    (tmp_path / "20990101T000000Z" / "summary.json").write_text("{}")
    MlflowClient().log_artifacts(other, str(tmp_path), "verify")
    assert store.fresh_folder(other, "verify", "20990101T000000Z") == ("verify/20990101T000000Z-2", 2)


def test_another_split_through_mlflow_run_reports_under_its_prefix_and_keeps_verify(in_store, tmp_path):
    trained = in_store
    # issue 23 1.3: `-e evaluate -P split=OTHER` rewrote verify/iou_rock and verify/split of a verified run.
    assert run_evaluate_cli(trained) == 0  # the run's own verification first
    client = MlflowClient(tracking_uri=trained["uri"])
    before = client.get_run(trained["run_id"]).data
    verified = {k: v for k, v in before.tags.items() if k.startswith("verify/")}
    verify_metrics = {k: v for k, v in before.metrics.items() if k.startswith("verify/")}
    assert verified["verify/check"] == "pass"

    other = trained["train_split"]  # labelled, but not the validation split
    done = run_evaluate_cli(trained, f"split={other}", capture=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "not the run's validation split" in done.stdout and "verify/ untouched" in done.stdout
    after = client.get_run(trained["run_id"]).data
    assert {k: v for k, v in after.tags.items() if k.startswith("verify/")} == verified
    assert {k: v for k, v in after.metrics.items() if k.startswith("verify/")} == verify_metrics
    prefix = "split/train_dr"
    assert after.tags[f"{prefix}/split"] == str(other) and after.tags[f"{prefix}/check"].startswith("not compared")
    assert all(f"{prefix}/{key}" in after.metrics for key in CLASS_KEYS)
    assert after.tags[f"{prefix}/artifacts"].startswith(f"{prefix}/")
    local = Path(mlflow.artifacts.download_artifacts(run_id=trained["run_id"], artifact_path=after.tags[f"{prefix}/artifacts"],
                                                     dst_path=str(tmp_path), tracking_uri=trained["uri"]))
    summary = json.loads((local / "summary.json").read_text())
    assert summary["frames"] == 6 and summary["difference"] is None and summary["prefix"] == prefix
    assert evaluate.read_frame_confusions(trained["run_id"]) is not None  # compare still finds the verification
    assert evaluate.read_split_confusions(trained["run_id"])["train_dr"]["frames"] == summary_frames(local)


def summary_frames(folder: Path) -> list:
    return json.loads((folder / "confusion_per_frame.json").read_text())["frames"]


def run_evaluate_cli(trained: dict, *params: str, capture: bool = False):
    """`mlflow run . -e evaluate -P run=<alias> [-P ...]` against the trained run's store."""
    cmd = ["mlflow", "run", str(REPO), "--env-manager", "local", "-e", "evaluate", "-P", f"run={trained['alias']}"]
    for param in params:
        cmd += ["-P", param]
    done = subprocess.run(cmd, cwd=trained["root"], env=trained["env"], capture_output=True, text=True, timeout=300)
    return done if capture else done.returncode


def copy_of_run(trained: dict, name: str, checkpoint: Path | None, metric_shift: float = 0.0) -> str:
    """A new run that records what the trained one does, with ``checkpoint`` (or none) as its best.pt."""
    client = MlflowClient()
    source = client.get_run(trained["run_id"])
    tags = {k: v for k, v in source.data.tags.items()
            if k.startswith("regolith.") and k not in ("regolith.model_version", "regolith.logged_model")}
    run_id = client.create_run(source.info.experiment_id, run_name=name, tags=tags).info.run_id
    for key in CLASS_KEYS:
        client.log_metric(run_id, f"best/{key}", source.data.metrics[f"best/{key}"] + metric_shift)
    if checkpoint is not None:
        client.log_artifact(run_id, str(checkpoint))
    client.set_terminated(run_id)
    return run_id


def stored_checkpoint(trained: dict, tmp_path: Path) -> Path:
    return Path(mlflow.artifacts.download_artifacts(run_id=trained["run_id"], artifact_path="best.pt",
                                                    dst_path=str(tmp_path)))


def test_a_disagreement_beyond_tolerance_exits_non_zero(in_store, tmp_path, capsys):
    run_id = copy_of_run(in_store, "drifted", stored_checkpoint(in_store, tmp_path), metric_shift=0.01)
    assert run_evaluate("--run", "drifted") == 1
    captured = capsys.readouterr()
    assert "rock-IoU DISAGREES" in captured.out and "-0.010000" in captured.out
    assert "differs from the training-time best/iou_rock by more than 0.001" in captured.err
    run = MlflowClient().get_run(run_id)
    assert run.data.tags["verify/check"] == "fail" and "verify/iou_rock" in run.data.metrics  # recorded anyway


class RunsCode:
    """Unpickling this writes ``marker``: what a tampered checkpoint could do instead."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('pickle code ran')",)


def malicious_checkpoint(directory: Path, marker: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "best.pt"
    torch.save({"model": RunsCode(marker), "epoch": 1}, path)
    return path


def test_a_checkpoint_that_would_run_code_is_refused(in_store, tmp_path, capsys):
    # The payload is live: an unsafe load does run it.
    proof = tmp_path / "proof"
    torch.load(malicious_checkpoint(tmp_path / "proof-dir", proof), weights_only=False)
    assert proof.exists()

    marker = tmp_path / "marker"
    copy_of_run(in_store, "tampered", malicious_checkpoint(tmp_path / "evil", marker))
    assert run_evaluate("--run", "tampered") == 2
    err = capsys.readouterr().err
    assert "not a regolith checkpoint that loads with weights_only=True" in err
    assert "nothing in it was executed" in err and "Traceback" not in err
    assert not marker.exists()


def test_clear_errors_for_no_checkpoint_unknown_and_ambiguous_names(in_store, capsys):
    copy_of_run(in_store, "no-checkpoint", None)
    assert run_evaluate("--run", "no-checkpoint") == 2
    assert "has no best.pt artifact (it has: no artifacts)" in capsys.readouterr().err

    assert run_evaluate("--run", "dr_9999") == 2
    assert "'dr_9999': no run with that id or name in experiment 'Default'" in capsys.readouterr().err

    twins = [copy_of_run(in_store, "twin", None) for _ in range(2)]
    assert run_evaluate("--run", "twin") == 2
    err = capsys.readouterr().err
    assert "run name 'twin' is ambiguous" in err and "2 runs have it" in err and "Pass the run id" in err
    assert all(run_id in err for run_id in twins)

    assert run_evaluate("--run", "models:/regolith-segformer@no_such_alias") == 2
    assert "no such registered model version" in capsys.readouterr().err

    assert run_evaluate("--run", in_store["name"], "--split", str(in_store["root"] / "nowhere")) == 2
    assert "nowhere (from --split): no such directory" in capsys.readouterr().err

    assert run_evaluate("--run", in_store["name"], "--experiment", "no-such-experiment") == 2
    assert "experiment 'no-such-experiment': no such experiment" in capsys.readouterr().err


def test_mlflow_run_evaluate_entry_point(trained):
    cmd = ["mlflow", "run", str(REPO), "--env-manager", "local", "-e", "evaluate", "-P", f"run={trained['alias']}"]
    done = subprocess.run(cmd, cwd=trained["root"], env=trained["env"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "rock-IoU agrees" in done.stdout
    # The run mlflow run opened for the verb is labelled, and the results went to the source run.
    client = MlflowClient(tracking_uri=trained["uri"])
    launchers = client.search_runs(["0"], "tags.`regolith.kind` = 'evaluate'")
    assert launchers and {r.data.tags["regolith.source_run"] for r in launchers} == {trained["run_id"]}
    assert all(r.info.run_name == "evaluate-dr_6" and r.info.status == "FINISHED" for r in launchers)


def test_pick_frames_takes_worst_median_best_once_each():
    rows = [{"iou_rock": v} for v in (0.5, float("nan"), 0.1, 0.9, 0.3, 0.7)]
    assert evaluate.pick_frames(rows, per_group=1) == [("worst", 2), ("median", 0), ("best", 3)]
    assert [i for _, i in evaluate.pick_frames(rows[:3], per_group=2)] == [2, 0]


def test_a_checkpoint_that_loads_safely_but_is_not_ours_is_refused(in_store, tmp_path, capsys):
    (tmp_path / "foreign").mkdir()
    torch.save({"hello": torch.zeros(2)}, tmp_path / "foreign" / "best.pt")
    copy_of_run(in_store, "not-ours", tmp_path / "foreign" / "best.pt")
    assert run_evaluate("--run", "not-ours") == 2
    err = capsys.readouterr().err
    assert "not a regolith checkpoint: lacks 'classes', 'config', 'model', 'preprocessing' (keys found: 'hello')" \
        in err and "Traceback" not in err


@pytest.mark.usefixtures("store")
def test_a_run_name_with_both_quotes_is_found_and_a_missing_one_refused_in_one_line(capsys):
    """MLflow's filter strings cannot quote a value holding ' and \": the name is still looked up exactly."""
    client = MlflowClient()
    experiment = client.get_experiment_by_name("Default").experiment_id
    wanted = client.create_run(experiment, run_name="a'b\"c").info.run_id
    for decoy in ("a\"b'c", "aXbXc", "a'b\"cd"):  # what the LIKE pattern also matches
        client.create_run(experiment, run_name=decoy)
    assert store.find_run("a'b\"c")["run_id"] == wanted
    assert run_evaluate("--run", "a''b\"\"c") == 2
    err = capsys.readouterr().err
    assert "no run with that id or name" in err and "Traceback" not in err


def test_an_alias_pointing_at_a_run_that_mlflow_gc_removed_is_refused_in_one_line(store, capsys):
    client = MlflowClient()
    run_id = client.create_run(client.get_experiment_by_name("Default").experiment_id, run_name="gone").info.run_id
    client.create_registered_model("regolith-segformer")
    version = client.create_model_version("regolith-segformer", f"runs:/{run_id}/best.pt", run_id=run_id)
    client.set_registered_model_alias("regolith-segformer", "dr_8", version.version)
    client.delete_run(run_id)
    gc = subprocess.run(["mlflow", "gc", "--backend-store-uri", store, "--run-ids", run_id],
                        capture_output=True, text=True, timeout=120)
    assert gc.returncode == 0, gc.stderr
    assert run_evaluate("--run", "models:/regolith-segformer@dr_8") == 2
    err = capsys.readouterr().err
    assert f"comes from run {run_id}, which is no longer in the tracking store" in err and "Traceback" not in err
