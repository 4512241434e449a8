"""The MLflow seam on real stores: simultaneous starts on a new SQLite store, how a resumed run ends, heartbeats,
system metrics, and which registered version a variant's alias names."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import mlflow
import pytest
import torch
from mlflow.tracking import MlflowClient

from conftest import REPO, make_datasets
from regolith import Refused, files, liveness, names, track, train
from test_train import run_direct
from test_train_resume import training_args


@pytest.fixture
def datasets(tmp_path) -> Path:
    return make_datasets(tmp_path / "datasets", train_frames=8, val_frames=4, size=32)


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
    state = Path(os.environ["REGOLITH_OUTPUT_DIR"]) / run_id / files.STATE_FILE
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
    monkeypatch.setattr(liveness, "HEARTBEAT_SECONDS", 0.01)  # a write every 10 ms, against the main thread's
    with track.run("beats") as (run_id, _):
        first = MlflowClient().get_run(run_id).data.tags
        threads = [t for t in threading.enumerate() if t.name.startswith("regolith-heartbeat")]
        for step in range(150):
            track.log_metrics({"x": step}, step=step)
        time.sleep(1.1)  # the heartbeat has a resolution of one second
    tags = MlflowClient().get_run(run_id).data.tags
    assert first[names.PID] == str(os.getpid()) and first[names.HOST] == liveness.host()[0]
    assert float(first[names.PROCESS_START]) == liveness.process_started(os.getpid())
    assert tags[names.HEARTBEAT] > first[names.HEARTBEAT]
    assert len(MlflowClient().get_metric_history(run_id, "x")) == 150
    assert "warning" not in capsys.readouterr().err
    assert threads and not any(t.is_alive() for t in threads)  # stopped with the run


def test_heartbeat_failures_warn_once_and_never_stop_the_run(store, monkeypatch, capsys):
    monkeypatch.setattr(liveness, "HEARTBEAT_SECONDS", 0.01)

    def unreachable(*args, **kwargs):
        raise ConnectionError("store away")

    with track.run("blip") as (run_id, _):
        with monkeypatch.context() as away:
            away.setattr(MlflowClient, "set_tag", unreachable)
            time.sleep(0.3)
    assert MlflowClient().get_run(run_id).info.status == "FINISHED"
    assert capsys.readouterr().err.count("could not refresh the heartbeat") == 1


def system_keys(run_id):
    return sorted(key for key in MlflowClient().get_run(run_id).data.metrics if key.startswith("system/"))


@pytest.fixture
def fast_sampling(monkeypatch):
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.1")
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLES_BEFORE_LOGGING", "1")


@pytest.mark.parametrize("setting", ["on", "off"])
def test_a_training_run_logs_system_metrics_when_on(store, datasets, tiny_encoder, fast_sampling, monkeypatch, setting):
    monkeypatch.setenv("REGOLITH_SYSTEM_METRICS", setting)
    set_up = track.start

    def slow_start(*args, **kwargs):  # a tiny run ends in well under a second: keep it open for several samples
        set_up(*args, **kwargs)
        time.sleep(1)

    monkeypatch.setattr(track, "start", slow_start)
    assert run_direct(training_args(datasets, tiny_encoder, 2)) == 0
    keys = system_keys(MlflowClient().search_runs(["0"])[0].info.run_id)
    if setting == "on":
        assert "system/cpu_utilization_percentage" in keys and "system/system_memory_usage_megabytes" in keys, keys
    else:
        assert keys == []


def test_system_metrics_are_labelled_by_node_under_torchrun(store, fast_sampling, monkeypatch):
    monkeypatch.setenv("REGOLITH_SYSTEM_METRICS", "on")
    for name, value in {"WORLD_SIZE": "4", "LOCAL_RANK": "0", "GROUP_RANK": "0"}.items():
        monkeypatch.setenv(name, value)
    with track.run("ddp") as (run_id, _):
        monkeypatch.setenv("GROUP_RANK", "1")  # the first rank of the second node, in the same run
        with track.node_system_metrics(run_id):
            time.sleep(0.8)
    keys = system_keys(run_id)
    assert "system/node_0/cpu_utilization_percentage" in keys and "system/node_1/cpu_utilization_percentage" in keys
    assert not [key for key in keys if not key.startswith(("system/node_0/", "system/node_1/"))]
    assert "MLFLOW_SYSTEM_METRICS_NODE_ID" not in os.environ


def test_system_metrics_setting(monkeypatch, capsys):
    monkeypatch.delenv("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", raising=False)
    monkeypatch.setenv("REGOLITH_SYSTEM_METRICS", "off")
    assert track.system_metrics_wanted() is False
    monkeypatch.setenv("REGOLITH_SYSTEM_METRICS", "auto")
    assert track.system_metrics_wanted() is torch.cuda.is_available()
    monkeypatch.setenv("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", "true")
    assert track.system_metrics_wanted() is True
    monkeypatch.setenv("REGOLITH_SYSTEM_METRICS", "sometimes")
    with pytest.raises(Refused, match="expected on, off or auto"):
        track.system_metrics_wanted()
    real = track.importlib.util.find_spec
    monkeypatch.setattr(track.importlib.util, "find_spec",
                        lambda name, *args: None if name == "psutil" else real(name, *args))
    monkeypatch.setenv("REGOLITH_SYSTEM_METRICS", "on")
    with pytest.raises(Refused, match="need psutil"):
        track.system_metrics_wanted()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("REGOLITH_SYSTEM_METRICS", "auto")
    monkeypatch.delenv("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING")
    assert track.system_metrics_wanted() is False  # auto on a GPU without psutil: a warning, not a failure
    assert "need psutil" in capsys.readouterr().err


def finished_run(client, experiment: str, rock: float, val_digest: str = "v1", val_is_train: str = "false") -> str:
    """A finished training run as the store records it: its best rock-IoU and validation split."""
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(experiment)
    run_id = client.create_run(experiment_id, tags={"regolith.val_digest": val_digest,
                                                    "regolith.val_is_train": val_is_train}).info.run_id
    client.log_metric(run_id, "best/iou_rock", rock)
    client.set_terminated(run_id)
    return run_id


def test_the_variant_alias_moves_only_to_a_run_at_least_as_good_on_the_same_validation_split(store):
    client = MlflowClient()

    def holder():
        return client.get_model_version_by_alias("regolith-segformer", "dr_750").run_id

    def register(run_id):  # what a finishing training run does (train.register: alias.stays, then track)
        model = mlflow.initialize_logged_model(name="model", source_run_id=run_id,
                                               experiment_id=client.get_run(run_id).info.experiment_id)
        return train.register(lambda *_: None, "dr_750", run_id, f"models:/{model.model_id}")

    study = finished_run(client, "study", 0.80)
    registered = register(study)
    assert holder() == study and registered == ("models:/regolith-segformer/1", None)
    for rock, digest, val_is_train, why in [(0.50, "v1", "false", "this run's best/iou_rock 0.5000 is lower"),
                                            (0.90, "v2", "false", "validated on another split"),
                                            (0.95, "v1", "true", "validated on its own training frames")]:
        scratch = finished_run(client, "scratch", rock, digest, val_is_train)  # another experiment, same variant
        version, stays = register(scratch)
        assert holder() == study, why
        assert "@dr_750 stays at models:/regolith-segformer/1" in stays and why in stays
        assert client.get_run(scratch).data.tags["regolith.model_version"] == version  # registered all the same
    as_good = finished_run(client, "scratch", 0.80)  # ties go to the newer run
    assert register(as_good) == ("models:/regolith-segformer/5", None) and holder() == as_good
    # A quick run from a random encoder (the demo's pretrained=none) is registered but never takes the alias,
    # however high it scores.
    quick = finished_run(client, "scratch", 0.99)
    client.log_param(quick, "pretrained_id", "none (random init)")
    version, stays = register(quick)
    assert holder() == as_good and "random encoder (pretrained=none)" in stays and version.endswith("/6")


def test_a_heartbeat_thread_the_memory_limit_cannot_start_is_refused_by_name(tmp_path):
    from test_files import under_memory_limit
    # A thread's stack larger than the room left: "can't start new thread", as under a tight ulimit -v.
    done = under_memory_limit(f"""
        import threading
        from mlflow.tracking import MlflowClient
        from regolith import Refused, track
        client = MlflowClient("sqlite:///{tmp_path / 'mlflow.db'}")
        run_id = client.create_run(client.create_experiment("tight")).info.run_id
        __import__("mlflow").set_tracking_uri("sqlite:///{tmp_path / 'mlflow.db'}")
        threading.stack_size(512 * 1024 * 1024)
        # limit
        try:
            track.Heartbeat(run_id).start()
        except Refused as error:
            print("refused:", error)
        """, headroom_mb=128)
    assert done.returncode == 0, done.stderr
    assert "refused: run " in done.stdout and "cannot start its heartbeat thread (can't start new thread)" in done.stdout
    assert "(ulimit -v " in done.stdout


def test_an_entry_point_killed_outright_gets_a_reason_and_one_that_gave_its_own_keeps_it(store, monkeypatch):
    from regolith import launch
    client = MlflowClient()
    killed, refused, finished = (client.create_run(client.create_experiment(name)).info.run_id
                                 for name in ("killed", "refused", "finished"))
    client.set_tag(refused, names.ERROR, "split /x: no such directory")
    client.set_terminated(finished, "FINISHED")
    for run_id, status in ((killed, 137), (refused, 2), (finished, 1)):
        monkeypatch.setenv("MLFLOW_RUN_ID", run_id)
        launch.record(status, "regolith.train")
    run = client.get_run(killed)
    assert run.info.status == "FAILED" and run.data.tags[names.ERROR] == (
        "regolith.train was killed by SIGKILL (kill -9, or the OOM killer), exit status 137, before it could "
        "record why")
    assert run.info.run_name == "train-failed"  # no longer MLflow's generated name
    assert client.get_run(refused).data.tags[names.ERROR] == "split /x: no such directory"
    assert client.get_run(finished).info.status == "FINISHED" and names.ERROR not in client.get_run(finished).data.tags
    missing = client.create_run(client.get_experiment_by_name("finished").experiment_id).info.run_id
    monkeypatch.setenv("MLFLOW_RUN_ID", missing)
    with pytest.raises(SystemExit) as exit:  # a verb that fails before it can say why (here: no such module)
        launch.main(["regolith.no_such_verb", "--flag"])
    assert exit.value.code == 1
    assert client.get_run(missing).data.tags[names.ERROR] == (
        "regolith.no_such_verb exited with status 1 without recording why (see its console output)")


def _mlflow_train(tmp_path, encoder, epochs):
    """``mlflow run`` of the main entry point as a terminal would start it: a process group of its own."""
    datasets = make_datasets(tmp_path / "datasets", train_frames=16, val_frames=4, size=32)
    cmd = ["mlflow", "run", str(REPO), "--env-manager", "local", "-P", f"split={datasets / 'train_dr'}",
           "-P", f"pretrained={encoder}", "-P", f"epochs={epochs}", "-P", "batch=4", "-P", f"patience={epochs}",
           "-P", "register=false", "-P", "epoch_images=false"]
    return subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def _training_pid(client, process, timeout=180) -> tuple:
    """The run ``mlflow run`` opened and the pid of the training process in it, once an epoch has finished."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for run in client.search_runs([exp.experiment_id for exp in client.search_experiments()]):
            if names.PID in run.data.tags and client.get_metric_history(run.info.run_id, "val/iou_rock"):
                return run.info.run_id, int(run.data.tags[names.PID])
        assert process.poll() is None, process.stdout.read()
        time.sleep(0.2)
    pytest.fail("no epoch finished under mlflow run")


def test_mlflow_run_whose_training_process_is_killed_outright_records_why(store, tmp_path, tiny_encoder):
    client = MlflowClient()
    client.search_experiments()  # the schema first: polling a SQLite file mlflow run is creating races its migration
    process = _mlflow_train(tmp_path, tiny_encoder, 40)
    run_id, pid = _training_pid(client, process)
    os.kill(pid, signal.SIGKILL)  # the training process itself, not its launcher: as the OOM killer does
    out, _ = process.communicate(timeout=120)
    assert process.returncode != 0, out
    run = client.get_run(run_id)
    assert run.info.status == "FAILED", out
    assert run.data.tags[names.ERROR].startswith("regolith.train was killed by SIGKILL (kill -9, or the OOM killer)")


def test_ctrl_c_of_mlflow_run_ends_the_run_killed_once(store, tmp_path, tiny_encoder):
    # Ctrl-C reaches the whole group (mlflow, the launcher, the training process); mlflow then cancels with a
    # SIGTERM the launcher passes on. The run takes the first request and ends KILLED, keeping its checkpoint.
    client = MlflowClient()
    client.search_experiments()  # the schema first: polling a SQLite file mlflow run is creating races its migration
    process = _mlflow_train(tmp_path, tiny_encoder, 40)
    run_id, _ = _training_pid(client, process)
    os.killpg(process.pid, signal.SIGINT)
    out, _ = process.communicate(timeout=120)
    run = client.get_run(run_id)
    # The run ends itself KILLED; MLflow 3's CLI then sets FAILED over it, as its check of whether the run
    # already ended compares the status text with RunStatus's numbers. The reason and the state stay.
    assert run.info.status in ("KILLED", "FAILED"), out
    assert run.data.tags[names.ERROR] == "interrupted (stopped by signal SIGINT)", out
    assert "run ended as KILLED" in out
    assert "Traceback" not in out.split("run ended as KILLED")[0], out
    assert "best.pt" in {artifact.path for artifact in client.list_artifacts(run_id)}
