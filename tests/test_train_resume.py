"""Interruption and faults with real processes: kill -9 and resume, SIGTERM, NaN, a tracking server that blips."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from conftest import REPO, free_port, make_datasets, save_legacy_encoder, start_server, stop_server

# The kill -9 test runs with every augmentation on: each draw comes from the generator state.pt saves.
EVERY = ["--augment", "hflip,gray,photometric,noise,blur"]
KEYS = ["train/loss", "val/loss", "val/iou_regolith", "val/iou_rock", "val/iou_sky", "val/miou", "lr"]


@pytest.fixture
def datasets(tmp_path) -> Path:
    return make_datasets(tmp_path / "datasets", train_frames=24, val_frames=6, size=48)


def training_args(datasets, encoder, epochs, *extra):
    return ["--split", str(datasets / "train_dr"), "--pretrained", str(encoder), "--epochs", str(epochs),
            "--batch", "4", "--patience", str(epochs), "--lr", "3e-4", "--register", "false", *extra]


def start(argv, env=None):
    return subprocess.Popen([sys.executable, "-m", "regolith.train", *argv], cwd=REPO, env=env or os.environ,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for_epoch(process, epoch: int, timeout: float = 120) -> str:
    """Poll the run's local metrics.jsonl until ``epoch`` is finished; returns the run id."""
    outputs = Path(os.environ["REGOLITH_OUTPUT_DIR"])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for history in outputs.glob("*/metrics.jsonl"):
            if len(history.read_text().splitlines()) >= epoch:
                return history.parent.name
        assert process.poll() is None, process.stdout.read()
        time.sleep(0.01)
    pytest.fail(f"epoch {epoch} did not finish in {timeout}s")


def histories(client, run_id):
    return {key: [(m.step, m.value) for m in client.get_metric_history(run_id, key)] for key in KEYS}


@pytest.fixture
def uninterrupted(store, datasets, tiny_encoder, tmp_path):
    """The reference: the same run, never interrupted, in its own experiment and output folder."""
    env = {**os.environ, "REGOLITH_OUTPUT_DIR": str(tmp_path / "reference-outputs")}
    done = subprocess.run([sys.executable, "-m", "regolith.train",
                           *training_args(datasets, tiny_encoder, 4, "--experiment", "reference", *EVERY)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    client = MlflowClient()
    run = client.search_runs([client.get_experiment_by_name("reference").experiment_id])[0]
    return histories(client, run.info.run_id), run.data.metrics


def test_kill_9_then_resume_equals_an_uninterrupted_run(store, datasets, tiny_encoder, uninterrupted):
    process = start(training_args(datasets, tiny_encoder, 4, *EVERY))
    run_id = wait_for_epoch(process, 2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    client = MlflowClient()
    assert client.get_run(run_id).info.status == "RUNNING"  # kill -9 leaves no chance to say otherwise
    history = Path(os.environ["REGOLITH_OUTPUT_DIR"]) / run_id / "metrics.jsonl"
    killed_at = len(history.read_text().splitlines())  # epochs in the saved state
    assert 2 <= killed_at < 4, "the run was not interrupted mid-way"
    # The store may be one epoch behind the state (killed between the two); resume replays it.
    in_store = [m.step for m in client.get_metric_history(run_id, "val/iou_rock")]
    assert in_store in (list(range(1, killed_at + 1)), list(range(1, killed_at)))

    done = subprocess.run([sys.executable, "-m", "regolith.train",
                           *training_args(datasets, tiny_encoder, 4, "--resume", run_id, *EVERY)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"resuming run {run_id} after epoch {killed_at}" in done.stdout
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    reference_history, reference_metrics = uninterrupted
    assert histories(client, run_id) == reference_history  # every step once, values identical on CPU
    for key in ("best/iou_rock", "best/miou", "best/epoch", "stopped_epoch"):
        assert run.data.metrics[key] == reference_metrics[key], key
    assert [json.loads(line)["epoch"] for line in history.read_text().splitlines()] == [1, 2, 3, 4]
    # each lever recorded: the list as applied, its ranges, and in the variant's name
    assert run.data.tags["regolith.augment"] == "hflip,gray,photometric,noise,blur"
    assert run.data.tags["regolith.variant"] == "dr_24+gray+photometric+noise+blur"
    assert run.data.params["augment_range.photometric.gamma"] == "0.7..1.4" and run.data.params["augment_p"] == "0.5"
    assert run.data.tags["regolith.encoder"] == "custom" and int(run.data.params["flops_per_frame"]) > 0


def test_sigterm_ends_killed_keeping_best_pt_and_mlflow_run_resumes_it(store, datasets, tiny_encoder):
    process = start(training_args(datasets, tiny_encoder, 4))
    run_id = wait_for_epoch(process, 1)
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=120)
    assert process.returncode == 143, out
    assert "run ended as KILLED" in out
    client = MlflowClient()
    run = client.get_run(run_id)
    assert run.info.status == "KILLED"
    assert "best.pt" in {a.path for a in client.list_artifacts(run_id)}

    # The second way to resume: through the MLproject, with the same parameters.
    cmd = ["mlflow", "run", str(REPO), "--env-manager", "local", "--run-id", run_id,
           "-P", f"split={datasets / 'train_dr'}", "-P", f"pretrained={tiny_encoder}", "-P", "epochs=4",
           "-P", "batch=4", "-P", "patience=4", "-P", "lr=3e-4", "-P", "register=false"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run_id, "val/iou_rock")] == [1, 2, 3, 4]


def test_resume_refuses_missing_state_and_other_parameters(store, datasets, tiny_encoder):
    process = start(training_args(datasets, tiny_encoder, 3))
    run_id = wait_for_epoch(process, 1)
    process.send_signal(signal.SIGTERM)
    first, _ = process.communicate(timeout=120)
    client = MlflowClient()
    assert client.get_run(run_id).info.status == "KILLED", first
    assert [m.step for m in client.get_metric_history(run_id, "val/iou_rock")] in ([1], [1, 2]), first
    kept = [m.step for m in client.get_metric_history(run_id, "val/iou_rock")]

    changed = subprocess.run([sys.executable, "-m", "regolith.train",
                              *training_args(datasets, tiny_encoder, 3, "--resume", run_id, "--seed", "1")],
                             cwd=REPO, capture_output=True, text=True, timeout=300)
    assert changed.returncode == 2 and "seed" in changed.stderr

    state = Path(os.environ["REGOLITH_OUTPUT_DIR"]) / run_id / "state.pt"
    state.write_bytes(state.read_bytes()[:1000])  # a torn copy
    corrupt = subprocess.run([sys.executable, "-m", "regolith.train",
                              *training_args(datasets, tiny_encoder, 3, "--resume", run_id)],
                             cwd=REPO, capture_output=True, text=True, timeout=300)
    assert corrupt.returncode == 2 and "is corrupt" in corrupt.stderr and "refusing to resume" in corrupt.stderr

    state.unlink()
    missing = subprocess.run([sys.executable, "-m", "regolith.train",
                              *training_args(datasets, tiny_encoder, 3, "--resume", run_id)],
                             cwd=REPO, capture_output=True, text=True, timeout=300)
    assert missing.returncode == 2 and "no resumable state" in missing.stderr
    assert [m.step for m in client.get_metric_history(run_id, "val/iou_rock")] == kept  # nothing trained again


def test_nan_loss_fails_the_run_naming_the_epoch(store, datasets, tmp_path):
    # A real fault, not a hook: an encoder whose weights hold a NaN makes the very first loss NaN.
    encoder = tmp_path / "nan-encoder"
    save_legacy_encoder(encoder)
    from safetensors.torch import load_file, save_file
    weights = load_file(str(encoder / "model.safetensors"))
    weights["segformer.encoder.patch_embeddings.0.proj.weight"][0, 0, 0, 0] = float("nan")
    save_file(weights, str(encoder / "model.safetensors"), metadata={"format": "pt"})

    done = subprocess.run([sys.executable, "-m", "regolith.train", *training_args(datasets, encoder, 2)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert "training loss is nan in epoch 1 at step 1" in done.stderr
    run = MlflowClient().search_runs(["0"])[0]
    assert run.info.status == "FAILED" and "epoch 1" in run.data.tags["regolith.error"]


def test_unreachable_server_fails_fast_before_decoding(datasets, tiny_encoder, tmp_path):
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}",
           "REGOLITH_OUTPUT_DIR": str(tmp_path / "outputs")}
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "regolith.train", *training_args(datasets, tiny_encoder, 1)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "is not reachable" in done.stderr
    assert time.monotonic() - started < 60
    assert not (tmp_path / "outputs").exists()


def test_a_server_stopped_and_restarted_mid_run_loses_no_metric(store, datasets, tiny_encoder, tmp_path):
    port, log = free_port(), tmp_path / "server.log"
    server = start_server(store, tmp_path / "served", port, log)
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}"}
    process = start(training_args(datasets, tiny_encoder, 6, "--experiment", "blip"), env)
    try:
        run_id = wait_for_epoch(process, 1)
        stop_server(server)
        wait_for_epoch(process, 3)  # training goes on while the server is away
        server = start_server(store, tmp_path / "served", port, log)
        out, _ = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
        stop_server(server)
    assert process.returncode == 0, out
    assert "tracking store unreachable" in out
    client = MlflowClient()  # the SQLite store behind the server
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    for key in KEYS:
        assert [m.step for m in client.get_metric_history(run_id, key)] == [1, 2, 3, 4, 5, 6], key
    assert "best/iou_rock" in run.data.metrics
