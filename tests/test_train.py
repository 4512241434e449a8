"""The tracked training run: the real `mlflow run` CLI into a temp SQLite store, read back with MlflowClient."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import torch
from mlflow.tracking import MlflowClient
from PIL import Image

from conftest import REPO, make_split
from regolith import CLASSES, Refused, augment, data, engine, evaluate, model as segformer, results, state, train

EPOCH_METRICS = ["train/loss", "val/loss", "val/iou_regolith", "val/iou_rock", "val/iou_sky", "val/miou", "lr",
                 "time/epoch_s"]
BEST_METRICS = ["best/iou_rock", "best/iou_regolith", "best/iou_sky", "best/miou", "best/epoch", "stopped_epoch"]


@pytest.fixture
def datasets(tmp_path) -> Path:
    root = tmp_path / "datasets"
    make_split(root / "train_dr", frames=10, seed=0)
    make_split(root / "train_nodr", frames=6, seed=1)
    make_split(root / "test_photoreal", frames=4, seed=2)
    return root


def only_run(client, status=None):
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert len(runs) == 1, [r.info.run_name for r in runs]
    return runs[0]


def test_lr_schedule_is_cosine_from_peak_to_floor():
    lrs = [engine.get_lr(step, 100, 6e-5) for step in range(101)]
    assert lrs[0] == pytest.approx(6e-5) and lrs[-1] == pytest.approx(1e-7)
    assert lrs[50] == pytest.approx(1e-7 + 0.5 * (6e-5 - 1e-7))
    assert all(a > b for a, b in zip(lrs, lrs[1:]))


@pytest.mark.parametrize("name,dr,expected", [
    ("train_dr", "auto", True), ("train_nodr", "auto", False), ("train_dr_750", "auto", True),
    ("dr1500", "auto", True), ("nodr-750", "auto", False), ("hydrangea", "false", False), ("x", "true", True)])
def test_dr_from_the_split_name(name, dr, expected):
    assert train.resolve_dr(dr, Path(name)) is expected


def test_the_bar_over_batches_is_on_a_terminal_or_when_asked_and_never_on_other_ranks():
    assert train.progress_off(0, {}) is None  # tqdm asks isatty: a bar on a terminal, the epoch lines elsewhere
    assert train.progress_off(0, {"REGOLITH_PROGRESS": "bar"}) is False  # a sweep on a terminal, through its pipe
    assert train.progress_off(0, {"REGOLITH_PROGRESS": "off"}) is True
    assert train.progress_off(1, {"REGOLITH_PROGRESS": "bar"}) is True


def test_dr_auto_asks_for_the_parameter_when_the_name_does_not_say():
    with pytest.raises(Refused, match="pass -P dr=true or -P dr=false"):
        train.resolve_dr("auto", Path("hydrangea"))


def test_mlflow_run_records_everything(store, datasets, hub_cache, tmp_path):
    """`mlflow run . --env-manager local` end to end, with the encoder resolved from a hub id."""
    cache, repo_id, commit = hub_cache
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    cmd = ["mlflow", "run", str(REPO), "--env-manager", "local", "--experiment-name", "e2e",
           "-P", f"split={datasets / 'train_dr'}", "-P", f"pretrained={repo_id}", "-P", "epochs=2",
           "-P", "frames=8", "-P", "batch=4", "-P", "register=false"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "epoch   2/2" in done.stdout  # the per-epoch line

    client = MlflowClient()
    run = only_run(client)
    run_id = run.info.run_id
    # It ends with where to look and what to run next, by its id.
    assert f"see it:  http://127.0.0.1:5000/#/experiments/{run.info.experiment_id}/runs/{run_id}?workflowType=machine_learning" in done.stdout
    for verb in (f"regolith.evaluate --run {run_id}", f"regolith.photos --run {run_id}", f"regolith.pull {run_id}"):
        assert verb in done.stdout, verb
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "dr_8"  # shows as its variant, not a generated name

    params = run.data.params
    assert params["split"] == str(datasets / "train_dr") and params["val_split"] == "''"
    assert params["lr"] == "6e-5" and params["epochs"] == "2" and params["frames"] == "8"
    assert params["pretrained"] == repo_id and params["pretrained_id"] == f"{repo_id}@{commit}"
    assert params["image_size"] == "32x32"
    assert params["version.torch"] == torch.__version__ and "version.transformers" in params
    weights = [float(params[f"class_weight.{c}"]) for c in ("regolith", "rock", "sky")]
    shares = [float(params[f"pixel_share.{c}"]) for c in ("regolith", "rock", "sky")]
    assert sum(weights) == pytest.approx(3, abs=1e-5) and sum(shares) == pytest.approx(1, abs=1e-5)
    assert weights[1] > 10 * weights[0]  # rock is rare, so it weighs far more

    tags = run.data.tags
    train_split = data.load_split(datasets / "train_dr", frames=8)
    assert tags["regolith.dr"] == "true" and tags["regolith.variant"] == "dr_8"
    assert tags["regolith.split"] == "train_dr" and tags["regolith.frames"] == "8"
    assert tags["regolith.dataset_digest"] == train_split.digest
    assert tags["regolith.val_split"] == str(datasets / "test_photoreal")
    assert tags["regolith.val_is_train"] == "false"

    inputs = {d.dataset.name: (d.dataset.digest, [t.value for t in d.tags]) for d in run.inputs.dataset_inputs}
    assert inputs["train_dr"] == (train_split.digest, ["training"])
    assert inputs["test_photoreal"] == (data.load_split(datasets / "test_photoreal").digest, ["validation"])

    for key in EPOCH_METRICS:
        assert [m.step for m in client.get_metric_history(run_id, key)] == [1, 2], key
    for key in BEST_METRICS:
        assert key in run.data.metrics, key
    rock_history = [m.value for m in client.get_metric_history(run_id, "val/iou_rock")]
    assert run.data.metrics["best/iou_rock"] == max(rock_history)
    assert run.data.metrics["best/epoch"] == rock_history.index(max(rock_history)) + 1

    assert {a.path for a in client.list_artifacts(run_id)} >= {"best.pt", "metrics.jsonl", "summary.json"}
    local = Path(mlflow.artifacts.download_artifacts(run_id=run_id, dst_path=str(tmp_path / "download")))
    lines = [json.loads(line) for line in (local / "metrics.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [1, 2]
    summary = json.loads((local / "summary.json").read_text())
    assert summary["frames"] == 8 and summary["dataset_digest"] == train_split.digest
    assert summary["best"]["iou_rock"] == run.data.metrics["best/iou_rock"]

    # A fresh validation pass from the stored checkpoint gives the training-time rock-IoU.
    payload = torch.load(local / "best.pt", weights_only=True)
    assert set(payload) >= {"model", "config", "classes", "epoch", "metrics", "args", "preprocessing"}
    net = segformer.model_from_checkpoint(payload)
    class_weights = torch.tensor([float(params[f"class_weight.{c}"]) for c in ("regolith", "rock", "sky")])
    again = engine.validate(net, data.load_split(datasets / "test_photoreal"), batch=4, class_weights=class_weights,
                           precision="fp32", device=torch.device("cpu"))
    assert again["iou_rock"] == pytest.approx(run.data.metrics["best/iou_rock"], abs=1e-9)


def test_mlflow_run_keeps_a_name_the_user_gave(store, datasets, tiny_encoder):
    cmd = ["mlflow", "run", str(REPO), "--env-manager", "local", "--run-name", "my-own-name-1",
           "-P", f"split={datasets / 'train_nodr'}", "-P", f"pretrained={tiny_encoder}", "-P", "epochs=1",
           "-P", "register=false"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    run = only_run(MlflowClient())
    assert run.info.run_name == "my-own-name-1" and run.data.tags["regolith.variant"] == "nodr_6"


def run_direct(argv):
    """`python -m regolith.train ...` in this process; returns the exit code."""
    try:
        train.main(argv)
    except SystemExit as exit:
        return exit.code
    return 0


def test_direct_runs_log_params_like_mlflow_run_and_are_deterministic(store, datasets, tiny_encoder):
    argv = ["--split", str(datasets / "train_dr"), "--pretrained", str(tiny_encoder), "--epochs", "3",
            "--batch", "4", "--patience", "1", "--lr", "6e-4", "--register", "false", "--experiment", "direct"]
    assert run_direct(argv) == 0
    assert run_direct(argv) == 0
    client = MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name("direct").experiment_id])
    assert [r.info.status for r in runs] == ["FINISHED", "FINISHED"]
    first, second = (r.info.run_id for r in runs)
    # The second run of the same variant has artifacts of its own; the first's are untouched.
    assert runs[0].info.artifact_uri != runs[1].info.artifact_uri
    for run in runs:
        assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"best.pt", "summary.json"}
    assert runs[0].data.params["lr"] == "6e-4" and runs[0].data.params["val_split"] == "''"
    for key in EPOCH_METRICS[:-1]:  # everything but wall time is identical on CPU
        a = [(m.step, m.value) for m in client.get_metric_history(first, key)]
        b = [(m.step, m.value) for m in client.get_metric_history(second, key)]
        assert a == b, key
    # Early stopping: best is the earliest maximum, and the run stops `patience` epochs after it.
    metrics = runs[0].data.metrics
    rock = [m.value for m in client.get_metric_history(first, "val/iou_rock")]
    assert metrics["best/epoch"] == rock.index(max(rock)) + 1
    assert metrics["stopped_epoch"] == len(rock) == min(3, metrics["best/epoch"] + 1)


def test_bad_input_via_mlflow_run_ends_failed(store, datasets):
    (datasets / "train_dr" / "mask" / "mask_00004.png").unlink()
    cmd = ["mlflow", "run", str(REPO), "--env-manager", "local", "-P", f"split={datasets / 'train_dr'}",
           "-P", "pretrained=none", "-P", "register=false"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert "error: split" in done.stderr and "rgb_00004.png" in done.stderr
    assert "Traceback" not in done.stderr.split("error: split")[0]
    run = only_run(MlflowClient())
    assert run.info.status == "FAILED" and "rgb_00004.png" in run.data.tags["regolith.error"]


def _bad(datasets, case):
    """Spoil a copy of the data for one case; returns (extra argv, text the error must contain)."""
    from test_data import BAD_SPLITS
    if case == "frames_too_large":
        return ["--frames", "11"], "frames=11 is larger than split"
    if case == "no_val_split":
        import shutil
        shutil.rmtree(datasets / "test_photoreal")
        return [], "test_photoreal: no such directory"
    split, expected = BAD_SPLITS[case](datasets / "train_dr")
    return (["--split", str(split)] if split != datasets / "train_dr" else []), expected


@pytest.mark.parametrize("case", ["missing", "empty", "unpaired", "unreadable", "bad_label", "size_mismatch",
                                  "no_rock", "frames_too_large", "no_val_split"])
def test_bad_input_fails_the_run_before_training(store, datasets, case, capsys):
    extra, expected = _bad(datasets, case)
    argv = ["--split", str(datasets / "train_dr"), "--pretrained", "none", "--register", "false", *extra]
    assert run_direct(argv) not in (0, None)
    assert expected in capsys.readouterr().err
    run = only_run(MlflowClient())
    assert run.info.status == "FAILED"
    assert expected in run.data.tags["regolith.error"]
    assert "val/iou_rock" not in run.data.metrics  # nothing was trained


def test_torchrun_two_gloo_ranks_match_one_process_and_log_once(store, datasets, tiny_encoder):
    """DDP on CPU: `batch` stays the global batch, rank 0 alone logs, results match one process."""
    args = ["--split", str(datasets / "train_dr"), "--pretrained", str(tiny_encoder), "--epochs", "3",
            "--batch", "4", "--frames", "8", "--register", "false"]
    single = subprocess.run([sys.executable, "-m", "regolith.train", *args, "--experiment", "single"],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stdout + single.stderr
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          "-m", "regolith.train", *args, "--experiment", "ddp"],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert ddp.returncode == 0, ddp.stdout + ddp.stderr
    assert ddp.stdout.count("epoch   1/3") == 1  # one epoch line: rank 1 prints nothing

    client = MlflowClient()
    (one,) = client.search_runs([client.get_experiment_by_name("single").experiment_id])
    runs = client.search_runs([client.get_experiment_by_name("ddp").experiment_id])
    assert len(runs) == 1, "rank 1 must not start a run of its own"
    (two,) = runs
    assert two.info.status == "FINISHED" and two.data.params["batch"] == "4"
    for key in EPOCH_METRICS:
        assert [m.step for m in client.get_metric_history(two.info.run_id, key)] == [1, 2, 3], key
    # Each rank's batch norm sees half of each batch and draws its own dropout, so the two runs
    # agree closely but not bit for bit; the shared loss normalization keeps them this close.
    for key in ("best/iou_rock", "best/iou_regolith", "best/iou_sky", "best/miou"):
        assert two.data.metrics[key] == pytest.approx(one.data.metrics[key], abs=0.02), key
    for key in ("train/loss", "val/loss"):
        for a, b in zip(client.get_metric_history(one.info.run_id, key), client.get_metric_history(two.info.run_id, key)):
            assert b.value == pytest.approx(a.value, abs=0.01), key


# Compiled against eager, same weights and data: inductor fuses and reorders float sums, so the
# training losses agree to rounding (measured: 1.1e-7 relative at most). Validation is compared on
# the same weights through the fresh inference pass, to ``evaluate.TOLERANCE`` (measured: equal).
COMPILED_LOSS_REL = 1e-5


def test_compiled_run_is_one_graph_per_mode_and_matches_eager(store, tmp_path, tiny_encoder, capsys):
    """compile=true through torch.compile's default backend (inductor, on CPU here), end to end.

    Static shapes: 8 training frames at batch 4 leave no ragged batch, and 6 validation frames
    pad the last validation batch. The run must compile to exactly two graphs (the training step
    and the evaluation) with no graph break, so nothing recompiles after the first epoch. Inductor
    draws dropout from its own generator; ``fallback_random`` makes it draw eager's, so the two
    runs see the same masks and differ only by rounding. Without it, two compiled runs of one seed
    still agree with each other.
    """
    from torch._dynamo.utils import counters
    make_split(tmp_path / "train_dr", frames=8, seed=0)
    make_split(tmp_path / "test_photoreal", frames=6, seed=2)
    argv = ["--split", str(tmp_path / "train_dr"), "--pretrained", str(tiny_encoder), "--epochs", "3",
            "--batch", "4", "--lr", "6e-3", "--register", "false"]
    assert run_direct(argv + ["--compile", "false", "--experiment", "compiled"]) == 0
    torch._dynamo.reset()
    counters.clear()
    with torch._inductor.config.patch(fallback_random=True):
        assert run_direct(argv + ["--compile", "true", "--experiment", "compiled"]) == 0
    assert counters["stats"]["unique_graphs"] == 2, dict(counters["stats"])
    assert sum(counters["graph_break"].values()) == 0, dict(counters["graph_break"])

    client = MlflowClient()
    eager, compiled = sorted(client.search_runs([client.get_experiment_by_name("compiled").experiment_id]),
                             key=lambda run: run.data.tags["regolith.compiled"])
    assert (eager.data.tags["regolith.compiled"], compiled.data.tags["regolith.compiled"]) == ("false", "true")
    assert compiled.info.status == "FINISHED"
    losses = [[m.value for m in client.get_metric_history(run.info.run_id, "train/loss")] for run in (eager, compiled)]
    assert len(losses[0]) == len(losses[1]) == 3
    assert losses[1] == pytest.approx(losses[0], rel=COMPILED_LOSS_REL)

    # With inductor's own dropout generator (the default), the same seed still gives the same run.
    for _ in range(2):
        assert run_direct(argv + ["--compile", "true", "--experiment", "compiled-twice"]) == 0
    again = client.search_runs([client.get_experiment_by_name("compiled-twice").experiment_id])
    assert [[m.value for m in client.get_metric_history(run.info.run_id, "train/loss")] for run in again] == \
        [[m.value for m in client.get_metric_history(again[0].info.run_id, "train/loss")]] * 2

    # The compiled, padded validation against a fresh eager pass over the same best.pt.
    capsys.readouterr()
    assert evaluate.main(["--run", compiled.info.run_id]) is None
    metrics = client.get_run(compiled.info.run_id).data.metrics
    assert client.get_run(compiled.info.run_id).data.tags["verify/check"] == "pass"
    for name in CLASSES:
        assert metrics[f"verify/iou_{name}"] == pytest.approx(metrics[f"best/iou_{name}"], abs=evaluate.TOLERANCE)


def test_resume_reads_a_state_from_before_precision_was_a_parameter(tmp_path):
    args = train.build_parser().parse_args(["--split", str(tmp_path)])
    old = {key: value for key, value in state.resume_key(args).items() if key != "precision"}
    torch.save({"epoch": 0, "history": [], "args": old}, tmp_path / "state.pt")
    assert state.load(tmp_path / "state.pt", "run", args)["args"] == old
    args.precision = "fp32"  # that run did not ask for fp32: resuming it so would change its computation
    with pytest.raises(Refused, match="precision"):
        state.load(tmp_path / "state.pt", "run", args)


def test_bf16_run_records_its_precision_and_the_fresh_pass_computes_at_it(store, datasets, tiny_encoder, capsys):
    """precision=bf16 on the CPU: the autocast path a GPU run takes, through training, best.pt and evaluate."""
    argv = ["--split", str(datasets / "train_dr"), "--pretrained", str(tiny_encoder), "--epochs", "2",
            "--batch", "4", "--lr", "6e-3", "--register", "false", "--experiment", "bf16"]
    assert run_direct(argv + ["--precision", "bf16"]) == 0
    assert run_direct(argv + ["--precision", "fp32"]) == 0
    client = MlflowClient()
    runs = {run.data.params["precision"]: run
            for run in client.search_runs([client.get_experiment_by_name("bf16").experiment_id])}
    assert {p: run.data.tags["regolith.precision"] for p, run in runs.items()} == {"bf16": "bf16", "fp32": "fp32"}
    bf16, fp32 = (runs[p].info.run_id for p in ("bf16", "fp32"))
    # Different precisions compute different numbers, so the parameter reaches the model.
    assert client.get_metric_history(bf16, "train/loss")[0].value != client.get_metric_history(fp32, "train/loss")[0].value
    payload = segformer.load_checkpoint(mlflow.artifacts.download_artifacts(run_id=bf16, artifact_path="best.pt"))
    assert payload["precision"] == "bf16"

    capsys.readouterr()
    assert evaluate.main(["--run", bf16]) is None
    assert "(bf16, as validation)" in capsys.readouterr().out
    verified = client.get_run(bf16).data
    assert verified.tags["verify/check"] == "pass"
    for name in CLASSES:  # bf16 on both sides, the same kernels: the same numbers
        assert verified.metrics[f"verify/iou_{name}"] == pytest.approx(verified.metrics[f"best/iou_{name}"], abs=1e-6)


# ---- the original's recipe (issue 12) --------------------------------------------------------------

def test_per_epoch_cosine_is_the_originals_at_epochs_1_2_and_the_last():
    # CosineAnnealingLR(T_max=10, eta_min=1e-7) stepped once per epoch: epoch k trains at cos((k - 1) / 10).
    peak, floor = 6e-5, 1e-7
    expected = {1: peak, 2: floor + 0.5 * (peak - floor) * (1 + 0.9510565162951535),  # cos(pi / 10)
                10: floor + 0.5 * (peak - floor) * (1 - 0.9510565162951535)}  # cos(9 pi / 10)
    for epoch, lr in expected.items():
        assert engine.epoch_lr(epoch, 10, peak) == pytest.approx(lr, rel=1e-12)
    lr_at = engine.lr_schedule("epoch", peak, 10, steps_per_epoch=3)  # still a pure function of the step
    assert [lr_at(step) for step in (0, 2, 3, 29)] == pytest.approx([peak, peak, expected[2], expected[10]])
    per_step = engine.lr_schedule("step", peak, 10, steps_per_epoch=3)
    assert per_step(1) < peak and per_step(30) == pytest.approx(floor)


def test_a_flipped_pair_stays_aligned():
    masks = torch.tensor([[[0, 1, 2, 2], [0, 0, 1, 255]], [[2, 2, 1, 0], [255, 1, 0, 0]]])
    images = torch.stack([masks * 60] * 3, 1).to(torch.uint8)  # each pixel's value encodes its label
    flipped, flipped_masks = augment.hflip(images, masks, torch.tensor([True, False]))
    assert flipped_masks[0].tolist() == [[2, 2, 1, 0], [255, 1, 0, 0]] and torch.equal(flipped_masks[1], masks[1])
    assert torch.equal(flipped, torch.stack([flipped_masks * 60] * 3, 1).to(torch.uint8))  # still aligned


def test_patience_zero_never_stops_early():
    assert not train.stop_early({"epochs_without_gain": 99}, 0)
    assert train.stop_early({"epochs_without_gain": 3}, 3) and not train.stop_early({"epochs_without_gain": 2}, 3)


def test_hflip_changes_training_and_stays_deterministic(store, datasets, tiny_encoder):
    argv = ["--split", str(datasets / "train_dr"), "--pretrained", str(tiny_encoder), "--epochs", "2",
            "--batch", "4", "--lr", "6e-4", "--register", "false", "--experiment", "augment"]
    for augment in ("hflip", "hflip", "none"):
        assert run_direct(argv + ["--augment", augment]) == 0
    client = MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name("augment").experiment_id],
                              order_by=["attributes.start_time ASC"])
    losses = [[m.value for m in client.get_metric_history(run.info.run_id, "train/loss")] for run in runs]
    assert [run.data.params["augment"] for run in runs] == ["hflip", "hflip", "none"]
    assert losses[0] == losses[1]  # the flips are drawn from the seeded data generator
    assert losses[0] != losses[2]
    for run in runs:  # the training batches' own IoU, beside the original's strict rule on validation
        assert {"train/iou_rock", "train/miou", "val/iou_rock_strict", "val/miou_strict",
                "best/iou_rock_strict"} <= set(run.data.metrics)
        assert run.data.metrics["val/iou_rock_strict"] <= run.data.metrics["val/iou_rock"]  # 255 pixels only add fp


def test_out_dir_gets_the_results_with_the_originals_keys_and_is_never_overwritten(store, datasets, tiny_encoder,
                                                                                     tmp_path, capsys):
    results = tmp_path / "results"
    argv = ["--split", str(datasets / "train_dr"), "--pretrained", str(tiny_encoder), "--epochs", "3",
            "--batch", "4", "--patience", "0", "--register", "false", "--out", str(results)]
    assert run_direct(argv) == 0
    assert {path.name for path in results.iterdir()} == {"best.pt", "metrics.jsonl", "summary.json"}
    summary = json.loads((results / "summary.json").read_text())
    assert summary["epochs_requested"] == summary["epochs_run"] == 3  # patience 0: every epoch ran
    assert {"best_epoch", "best_val_rock_iou", "best_val_miou", "best_val_class_iou", "wall_time_s"} <= set(summary)
    assert set(summary["best_val_class_iou"]) == set(CLASSES) and summary["wall_time_s"] > 0
    run = only_run(MlflowClient())
    assert summary["best_val_rock_iou"] == run.data.metrics["best/iou_rock"] and run.data.params["patience"] == "0"
    assert len((results / "metrics.jsonl").read_text().splitlines()) == 3

    kept = {path.name: path.read_bytes() for path in results.iterdir()}
    capsys.readouterr()
    assert run_direct(argv) == 2  # a finished result in out= is never overwritten: refused before training
    assert "already holds a finished result" in capsys.readouterr().err
    assert {path.name: path.read_bytes() for path in results.iterdir()} == kept


@pytest.mark.parametrize("flag,value,expected", [
    ("--lr", "inf", "lr=inf: expected a finite learning rate"), ("--frames", "-1", "frames=-1: expected 0"),
    ("--seed", str(2 ** 64), f"seed={2 ** 64}: expected an integer from 0 to 2**64 - 1"),
    ("--seed", "-1", "seed=-1: expected an integer"),
    ("--pretrained", "./nowhere/mit-b0", "pretrained='./nowhere/mit-b0': no such directory")])
def test_bad_numbers_are_refused_before_any_data_is_read(store, tmp_path, flag, value, expected, capsys):
    # The split does not exist: the number must be refused first, and the run recorded as FAILED for it.
    argv = ["--split", str(tmp_path / "nowhere"), "--pretrained", "none", "--register", "false", flag, value]
    assert run_direct(argv) == 2
    assert expected in capsys.readouterr().err
    run = only_run(MlflowClient())
    assert run.info.status == "FAILED" and expected in run.data.tags["regolith.error"]


@pytest.mark.parametrize("inside", ["real_images", "val_split/results"])
def test_an_out_folder_that_is_an_input_folder_is_refused_before_anything_is_written(store, datasets, tmp_path,
                                                                                     inside, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (40, 30), (90, 90, 90)).save(photos / "a.jpg")
    folders = {"real_images": photos, "split": datasets / "train_dr", "val_split": datasets / "test_photoreal"}
    out = folders[inside.split("/")[0]] / (inside.split("/")[1] if "/" in inside else "")
    before = {p: p.stat().st_mtime_ns for folder in folders.values() for p in folder.rglob("*")}
    argv = ["--split", str(datasets / "train_dr"), "--pretrained", "none", "--register", "false",
            "--epochs", "1", "--real-images", str(photos), "--out", str(out)]
    assert run_direct(argv) == 2
    assert f"out={out}: is " in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for folder in folders.values() for p in folder.rglob("*")} == before
    assert not (out / "summary.json").exists() and only_run(MlflowClient()).info.status == "FAILED"


def test_training_into_a_deleted_experiment_is_refused_in_one_line(store, tmp_path, capsys):
    client = MlflowClient()
    client.delete_experiment(client.create_experiment("gone"))
    argv = ["--split", str(tmp_path / "nowhere"), "--pretrained", "none", "--experiment", "gone"]
    assert run_direct(argv) == 2
    assert "experiment 'gone' is deleted in the tracking store" in capsys.readouterr().err
    assert client.search_runs([client.get_experiment_by_name("gone").experiment_id], run_view_type=3) == []


@pytest.mark.parametrize("how", ["same folder", "a copy"])
def test_validation_on_the_training_split_warns_and_tags_the_run(store, datasets, tmp_path, how, capsys):
    import shutil
    val = datasets / "train_nodr"
    if how == "a copy":
        val = shutil.copytree(datasets / "train_nodr", tmp_path / "elsewhere" / "val_copy")
    argv = ["--split", str(datasets / "train_nodr"), "--val-split", str(val), "--pretrained", "none",
            "--epochs", "1", "--register", "false"]
    assert run_direct(argv) == 0
    assert "warning: VALIDATION ON THE TRAINING SPLIT" in capsys.readouterr().err
    assert only_run(MlflowClient()).data.tags["regolith.val_is_train"] == "true"


def read_only_folder(path: Path) -> Path:
    """A folder no file can be created in; skips where permissions do not bind (root with CAP_DAC_OVERRIDE)."""
    path.mkdir(parents=True)
    path.chmod(0o555)
    try:
        (path / "probe").touch()
    except PermissionError:
        return path
    pytest.skip("permissions do not bind here (root); the 'under a file' case covers the check")


@pytest.mark.parametrize("where", ["output", "store", "artifacts"])
@pytest.mark.parametrize("how", ["under a file", "read-only"])
def test_unwritable_storage_is_refused_at_once_before_any_data_is_read(store, tmp_path, monkeypatch, capsys,
                                                                       where, how):
    (tmp_path / "file").write_text("")
    bad = tmp_path / "file" / "below" if how == "under a file" else read_only_folder(tmp_path / "ro")
    argv = ["--split", str(tmp_path / "nowhere"), "--pretrained", "none", "--register", "false"]
    if where == "output":
        monkeypatch.setenv("REGOLITH_OUTPUT_DIR", str(bad))
        expected = f"REGOLITH_OUTPUT_DIR={bad}: cannot write the run's files in {bad}/"
    elif where == "store":
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{bad / 'mlflow.db'}")
        expected = f"tracking store sqlite:///{bad / 'mlflow.db'}: "
    else:
        MlflowClient().create_experiment("bad-artifacts", artifact_location=str(bad))
        argv += ["--experiment", "bad-artifacts"]
        expected = f"artifact store {bad}/"
    started = time.monotonic()
    assert run_direct(argv) == 2
    assert time.monotonic() - started < 30  # no minutes of retries
    err = capsys.readouterr().err
    assert expected in err and ("not a directory" if how == "under a file" else "permission denied") in err.lower()
    if where != "store":  # a store that cannot be written cannot record the run either
        run = only_run(MlflowClient())
        assert run.info.status == "FAILED" and expected in run.data.tags["regolith.error"]


def test_a_full_disk_at_the_first_checkpoint_fails_the_run_and_leaves_no_partial_file(store, datasets, tmp_path):
    from conftest import small_disk_command
    client = MlflowClient()
    run_id = client.create_run(client.create_experiment("full-disk")).info.run_id
    outputs = tmp_path / "small-disk"
    out = outputs / run_id
    # A 256 kB disk takes the run's environment.txt, not its first best.pt (B0, random init: about 15 MB).
    cmd = small_disk_command(outputs, 256, [sys.executable, "-m", "regolith.train", "--split",
                                            str(datasets / "train_nodr"), "--pretrained", "none", "--epochs", "1",
                                            "--register", "false", "--epoch-images", "false"])
    if cmd is None:
        pytest.skip("needs unshare -rm (user namespaces) for a real full disk")
    env = {**os.environ, "MLFLOW_RUN_ID": run_id, "REGOLITH_OUTPUT_DIR": str(outputs), "PYTHONPATH": str(REPO)}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stdout + done.stderr
    expected = f"{out / 'best.pt'}: could not write it (No space left on device): the disk is full"
    assert expected in done.stderr and "Traceback" not in done.stderr
    # No state.pt yet: there is nothing to --resume, and the message does not say there is.
    assert f"free space on {out}, then run it again" in done.stderr
    run = client.get_run(run_id)
    assert run.info.status == "FAILED" and expected in run.data.tags["regolith.error"]
    left = [line.split()[1] for line in done.stdout.splitlines() if line.startswith("FILE ")]
    assert not [name for name in left if "partial" in name or name.endswith("best.pt")], left


def test_a_link_planted_in_the_out_folder_is_not_written_through(store, datasets, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("mine")
    results = tmp_path / "res"
    results.mkdir()
    (results / "summary.json.partial").symlink_to(victim)
    argv = ["--split", str(datasets / "train_nodr"), "--pretrained", "none", "--epochs", "1", "--register", "false",
            "--epoch-images", "false", "--out", str(results)]
    assert run_direct(argv) == 0
    assert victim.read_text() == "mine"
    assert json.loads((results / "summary.json").read_text())["epochs_run"] == 1


@pytest.mark.parametrize("param,expected", [("frames=2.5", "argument --frames: invalid int value: '2.5'"),
                                            ("bogus=1", "unrecognized arguments: --bogus 1")])
def test_a_parameter_argparse_refuses_under_mlflow_run_is_recorded_in_the_run(store, datasets, param, expected):
    # MLflow passes a -P the entry point does not declare on as --NAME VALUE; argparse refuses it.
    cmd = ["mlflow", "run", str(REPO), "--env-manager", "local", "-P", f"split={datasets / 'train_dr'}",
           "-P", "pretrained=none", "-P", param]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and expected in done.stderr
    run = only_run(MlflowClient())
    assert run.info.status == "FAILED" and expected in run.data.tags["regolith.error"]


def test_a_folder_another_live_run_claimed_is_refused_and_a_dead_ones_claim_is_taken_over(store, datasets, tmp_path,
                                                                                          capsys):
    from regolith import liveness
    results = tmp_path / "res"
    results.mkdir()
    claim = results / ".regolith-claim"
    claim.write_text(json.dumps({"run_id": "other-run", **liveness.where()}))  # this very process: alive
    argv = ["--split", str(datasets / "train_nodr"), "--pretrained", "none", "--epochs", "1", "--register", "false",
            "--epoch-images", "false", "--out", str(results)]
    assert run_direct(argv) == 2
    assert f"out={results}: claimed by run other-run (pid {os.getpid()}" in capsys.readouterr().err
    assert [p.name for p in results.iterdir()] == [".regolith-claim"]
    dead = subprocess.run(["sh", "-c", "echo $$"], capture_output=True, text=True).stdout.strip()
    claim.write_text(json.dumps({"run_id": "other-run", **liveness.where(), "regolith.pid": dead}))
    assert run_direct(argv) == 0  # the claim of a process that is gone is taken over; released at the end
    assert {p.name for p in results.iterdir()} == {"best.pt", "metrics.jsonl", "summary.json"}


def test_results_are_not_copied_into_a_folder_claimed_meanwhile(tmp_path):
    out, folder = tmp_path / "outputs" / "run-a", tmp_path / "res"
    out.mkdir(parents=True)
    for name in ("best.pt", "metrics.jsonl", "summary.json"):
        (out / name).write_text(name)
    with results.claimed_out(str(folder), "run-a", rank=0):
        (folder / ".regolith-claim").write_text(json.dumps({"run_id": "run-b"}))  # the other run took it
        with pytest.raises(Refused, match="no longer claimed by this run .held by run-b"):
            results.copy_results(out, str(folder), "run-a")
    assert [p.name for p in folder.iterdir()] == [".regolith-claim"]  # run-b's claim stays, nothing copied


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_best_pt_the_artifact_store_refuses_fails_the_run_unregistered_and_resume_retries(store, datasets, tmp_path,
                                                                                            monkeypatch, capsys):
    client = MlflowClient()
    experiment = client.create_experiment("full-store", artifact_location=str(tmp_path / "art"))
    run_id = client.create_run(experiment).info.run_id
    monkeypatch.setenv("MLFLOW_RUN_ID", run_id)  # as `mlflow run` would, so the run's artifact folder is known
    artifacts = tmp_path / "art" / run_id / "artifacts"
    artifacts.mkdir(parents=True)
    (artifacts / "best.pt").symlink_to("/dev/full")  # the upload of best.pt fails with ENOSPC, as on a full store
    argv = ["--split", str(datasets / "train_nodr"), "--pretrained", "none", "--epochs", "1", "--epoch-images",
            "false"]
    assert run_direct(argv) == 2
    assert "best.pt: could not upload it to the artifact store" in capsys.readouterr().err
    run = client.get_run(run_id)
    assert run.info.status == "FAILED" and "not registered" in run.data.tags["regolith.error"]
    assert not client.search_model_versions() and "regolith.model_version" not in run.data.tags
    (artifacts / "best.pt").unlink()  # room again: the resume retries the upload and finishes
    assert run_direct([*argv, "--resume", run_id]) == 0
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and (artifacts / "best.pt").stat().st_size > 0
    assert [v.run_id for v in client.search_model_versions()] == [run_id]


def test_a_refusal_naming_an_undecodable_file_name_still_ends_the_run_failed(store, datasets, capsys):
    rgb = datasets / "train_nodr" / "rgb"
    (rgb / "rgb_00000.png").rename(rgb / os.fsdecode(b"rgb_\xff.png"))  # a name that is not UTF-8
    argv = ["--split", str(datasets / "train_nodr"), "--pretrained", "none", "--epochs", "1", "--register", "false"]
    assert run_direct(argv) == 2
    assert "error: " in capsys.readouterr().err
    run = only_run(MlflowClient())
    assert run.info.status == "FAILED"  # not left open for MLflow's exit hook to end FINISHED
    assert "rgb_\\xff.png" in run.data.tags["regolith.error"]  # the byte, escaped
    import mlflow
    assert mlflow.active_run() is None


def _failed_run_with_an_epoch(client, experiment: str) -> str:
    """A run that trained an epoch, then ended FAILED: one that --resume continues."""
    run_id = client.create_run(client.create_experiment(experiment), run_name="dr_10").info.run_id
    client.log_metric(run_id, "val/iou_rock", 0.5, step=1)
    client.set_terminated(run_id, "FAILED")
    return run_id


def test_a_refused_resume_keeps_the_runs_name(store, datasets, capsys):
    client = MlflowClient()
    run_id = _failed_run_with_an_epoch(client, "names")
    argv = ["--split", str(datasets / "train_dr"), "--pretrained", "none", "--resume", run_id, "--run-name", "renamed"]
    assert run_direct(argv) == 2
    assert "no resumable state" in capsys.readouterr().err  # its outputs/<run id>/state.pt does not exist
    run = client.get_run(run_id)
    assert (run.info.run_name, run.info.status) == ("dr_10", "FAILED")


def test_a_resume_into_another_experiment_is_refused(store, datasets, capsys):
    client = MlflowClient()
    run_id = _failed_run_with_an_epoch(client, "first")
    argv = ["--split", str(datasets / "train_dr"), "--pretrained", "none", "--resume", run_id, "--experiment", "other"]
    assert run_direct(argv) == 2
    assert f"run {run_id} is in experiment 'first', not 'other'" in capsys.readouterr().err
    assert client.get_run(run_id).info.status == "FAILED" and client.get_experiment_by_name("other") is None
