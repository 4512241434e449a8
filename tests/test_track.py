"""The MLflow seam: simultaneous starts on a new SQLite store, how a resumed run ends, heartbeats."""

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from conftest import REPO, make_split
from regolith import names, track, train
from test_train import run_direct
from test_train_resume import training_args


@pytest.fixture
def datasets(tmp_path) -> Path:
    root = tmp_path / "datasets"
    make_split(root / "train_dr", frames=8, size=32, seed=0)
    make_split(root / "test_photoreal", frames=4, size=32, seed=2)
    return root


def test_simultaneous_starts_on_a_new_sqlite_store_all_run(tmp_path, datasets, tiny_encoder):
    # Before the lock, two of three exited 1 with MLflow's schema migration colliding
    # ("duplicate column name", "Online migration expected to match one row") and left no run.
    uri = f"sqlite:///{tmp_path / 'new' / 'mlflow.db'}"
    (tmp_path / "new").mkdir()
    # Run from the temp dir, so the new store's artifact root (./mlruns) is there too.
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "REGOLITH_OUTPUT_DIR": str(tmp_path / "outputs"),
           "PYTHONPATH": str(REPO)}
    processes = [subprocess.Popen([sys.executable, "-m", "regolith.train",
                                   *training_args(datasets, tiny_encoder, 1, "--experiment", "together")],
                                  cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for _ in range(3)]
    outputs = [process.communicate(timeout=300)[0] for process in processes]
    assert [process.returncode for process in processes] == [0, 0, 0], "\n\n".join(out[-3000:] for out in outputs)
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("together").experiment_id])
    assert [run.info.status for run in runs] == ["FINISHED"] * 3


@pytest.fixture
def killed_run(store, datasets, tiny_encoder):
    """A run with one finished epoch and its state, left KILLED with the error a SIGTERM leaves."""
    argv = training_args(datasets, tiny_encoder, 1)
    assert run_direct(argv) == 0
    client = MlflowClient()
    run_id = client.search_runs(["0"])[0].info.run_id
    client.set_tag(run_id, names.ERROR, "interrupted (stopped by signal SIGTERM)")
    client.set_terminated(run_id, "KILLED", end_time=1_700_000_000_000)
    return run_id, argv


def test_a_refused_resume_leaves_a_killed_run_as_it_was(killed_run, capsys):
    run_id, argv = killed_run
    client = MlflowClient()
    state = Path(os.environ["REGOLITH_OUTPUT_DIR"]) / run_id / train.STATE_FILE
    refusals = [(lambda: None, ["--seed", "1"], "already records other parameter values"),  # by track.run
                (lambda: state.write_bytes(state.read_bytes()[:1000]), [], "is corrupt"),  # by train, in set-up
                (state.unlink, [], "no resumable state")]
    for damage, change, message in refusals:
        damage()
        assert run_direct([*argv, *change, "--resume", run_id]) == 2
        assert message in capsys.readouterr().err
        run = client.get_run(run_id)
        assert (run.info.status, run.info.end_time) == ("KILLED", 1_700_000_000_000), message
        assert run.data.tags[names.ERROR] == "interrupted (stopped by signal SIGTERM)", message


def test_a_resumed_run_that_finishes_has_no_earlier_error(killed_run):
    run_id, argv = killed_run
    assert run_direct([*argv, "--resume", run_id]) == 0
    run = MlflowClient().get_run(run_id)
    assert run.info.status == "FINISHED" and names.ERROR not in run.data.tags


def test_heartbeat_thread_shares_the_sqlite_store_with_the_main_thread(store, monkeypatch, capsys):
    monkeypatch.setattr(track, "HEARTBEAT_SECONDS", 0.01)  # a write every 10 ms, against the main thread's
    with track.run("beats") as (run_id, _):
        first = MlflowClient().get_run(run_id).data.tags
        threads = [t for t in threading.enumerate() if t.name.startswith("regolith-heartbeat")]
        for step in range(150):
            track.log_metrics({"x": step}, step=step)
        time.sleep(1.1)  # the heartbeat has a resolution of one second
    tags = MlflowClient().get_run(run_id).data.tags
    assert first[names.PID] == str(os.getpid()) and first[names.HOST] == track.host()[0]
    assert float(first[names.PROCESS_START]) == track.process_started(os.getpid())
    assert tags[names.HEARTBEAT] > first[names.HEARTBEAT]
    assert len(MlflowClient().get_metric_history(run_id, "x")) == 150
    assert "warning" not in capsys.readouterr().err
    assert threads and not any(t.is_alive() for t in threads)  # stopped with the run


def test_heartbeat_failures_warn_once_and_never_stop_the_run(store, monkeypatch, capsys):
    monkeypatch.setattr(track, "HEARTBEAT_SECONDS", 0.01)

    def unreachable(*args, **kwargs):
        raise ConnectionError("store away")

    with track.run("blip") as (run_id, _):
        with monkeypatch.context() as away:
            away.setattr(MlflowClient, "set_tag", unreachable)
            time.sleep(0.3)
    assert MlflowClient().get_run(run_id).info.status == "FINISHED"
    assert capsys.readouterr().err.count("could not refresh the heartbeat") == 1
