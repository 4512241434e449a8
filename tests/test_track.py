"""The MLflow seam: simultaneous starts on a new SQLite store."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from conftest import REPO, make_split
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
