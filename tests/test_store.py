"""Finding runs as a new user would: which experiment, which store, and refusals recorded where mlflow run looks."""

import subprocess

import pytest
from mlflow.tracking import MlflowClient

from conftest import REPO
from regolith import Refused, evaluate, store as tracking_store


def _training_run(client, experiment: str, name: str) -> str:
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(experiment)
    run = client.create_run(experiment_id, run_name=name, tags={"regolith.kind": "train"})
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def test_a_run_name_is_looked_up_in_the_only_experiment_holding_training_runs(store, capsys):
    client = MlflowClient()
    run_id = _training_run(client, "regolith-demo", "dr_80")
    assert tracking_store.reading_experiment("") == "regolith-demo"
    assert tracking_store.find_run("dr_80")["run_id"] == run_id
    assert "'regolith-demo', the only one holding training runs" in capsys.readouterr().err
    _training_run(client, "other", "dr_80")
    with pytest.raises(Refused, match="holds no training runs; these do: 'other', 'regolith-demo'"):
        tracking_store.find_run("dr_80")
    assert tracking_store.find_run("dr_80", "other")["run_id"] != run_id  # a named experiment is always the one read


def test_a_refusal_under_mlflow_run_is_recorded_in_its_run(store, monkeypatch):
    client = MlflowClient()
    _training_run(client, "regolith-demo", "dr_80")
    launcher = client.create_run("0")  # what `mlflow run -e evaluate` opens in Default
    monkeypatch.setenv("MLFLOW_RUN_ID", launcher.info.run_id)
    with pytest.raises(SystemExit) as stopped:
        evaluate.main(["--run", "no_such_run"])
    assert stopped.value.code == 2
    run = client.get_run(launcher.info.run_id)
    assert run.info.status == "FAILED" and "'no_such_run': no run with that id or name" in run.data.tags[
        "regolith.error"]



def test_a_refusal_through_mlflow_run_is_named_after_its_verb(store, tmp_path):
    # The launcher run MLflow opened would otherwise keep a generated name ("bustling-cat-123") beside real runs.
    client = MlflowClient()
    _training_run(client, "regolith-demo", "dr_80")
    done = subprocess.run(["mlflow", "run", str(REPO), "--env-manager", "local", "--experiment-name", "regolith-demo",
                           "-e", "evaluate", "-P", "run=no_such_run"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode != 0
    experiment = client.get_experiment_by_name("regolith-demo").experiment_id
    refused = [run for run in client.search_runs([experiment]) if run.data.tags.get("regolith.kind") != "train"]
    assert [(run.info.run_name, run.info.status) for run in refused] == [("evaluate-refused", "FAILED")], done.stderr
    assert "'no_such_run': no run with that id or name" in refused[0].data.tags["regolith.error"]

def test_a_verb_names_its_store_and_a_new_empty_one_when_a_run_is_named(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db")  # as a user's shell has it, in another folder
    for name in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(Refused, match="did not exist and was just created empty in"):
        tracking_store.find_run("dr_80")
    assert f"tracking store: sqlite:///mlflow.db ({tmp_path / 'mlflow.db'}, a new empty file)" in capsys.readouterr().err
