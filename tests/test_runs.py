"""Runs left RUNNING by a dead process: the pure judgement on small tables, then a real kill -9 found and marked."""

import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from unittest import mock

import pytest
import yaml
from mlflow.tracking import MlflowClient

from conftest import REPO, make_split
from regolith import Refused, ablation, liveness, names, runs, sweep, track
from regolith import store as tracking_store
from test_train_resume import start, training_args, wait_for_epoch

HERE = ("box-a", "pid:[1]")
NOW = 1_800_000_000.0


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="seconds")


def row(run_id, status="RUNNING", host=HERE, pid=100, beat_age=5.0, started_age=3600.0, kind=names.KIND_TRAIN):
    tags = {names.KIND: kind} if kind else {}
    if host:
        tags.update({names.HOST: host[0], names.PID_NAMESPACE: host[1], names.PID: str(pid),
                     names.PROCESS_START: "1700000000.5", names.HEARTBEAT: iso(NOW - beat_age)})
    return {"run_id": run_id, "run_name": f"name-{run_id}", "status": status,
            "start_time": int((NOW - started_age) * 1000), "tags": tags, "params": {}, "metrics": {}}


def test_stale_runs_on_a_small_table():
    alive_pids = {100}
    seen = []

    def alive(pid, started):
        seen.append((pid, started))
        return pid in alive_pids

    rows = [
        row("live"),                                                   # this host, process alive
        row("dead", pid=200, beat_age=4000),                            # this host, process gone
        row("finished", status="FINISHED", pid=200),                    # not RUNNING: never judged
        row("killed", status="KILLED", pid=200),
        row("far-fresh", host=("box-b", "pid:[1]"), beat_age=30),       # elsewhere, heartbeat fresh
        row("far-old", host=("box-b", "pid:[1]"), beat_age=700),        # elsewhere, heartbeat older than the timeout
        row("container", host=("box-a", "pid:[2]"), pid=200, beat_age=30),  # same name, another pid namespace
        row("legacy-old", host=None, started_age=4000),                 # recorded before heartbeats
        row("legacy-young", host=None, started_age=60),
        row("wrapper", host=None, kind=None, started_age=4000),         # an mlflow run wrapper: not judged
    ]
    stale = liveness.stale_runs(rows, HERE, NOW, 600, alive)
    by_id = {entry["run_id"]: entry for entry in stale}
    assert list(by_id) == ["legacy-old", "dead", "far-old"]  # oldest first
    assert by_id["dead"]["markable"] and "pid 200 on box-a" in by_id["dead"]["reason"]
    assert by_id["far-old"]["markable"] and "no heartbeat from box-b for 700 s" in by_id["far-old"]["reason"]
    assert not by_id["legacy-old"]["markable"] and by_id["legacy-old"]["reason"].startswith("unknown")
    assert by_id["far-old"]["heartbeat"] == NOW - 700
    # Only processes of this host and pid namespace are looked up, with their recorded start (pid reuse).
    assert sorted(seen) == [(100, 1700000000.5), (200, 1700000000.5)]
    # The timeout is what it says: the same run is fresh under a longer one.
    assert [e["run_id"] for e in liveness.stale_runs(rows, HERE, NOW, 800, alive)] == ["legacy-old", "dead"]


def test_process_alive_tells_gone_zombie_and_reused_pids():
    me = os.getpid()
    assert liveness.process_alive(me, liveness.process_started(me))
    assert not liveness.process_alive(me, liveness.process_started(me) - 50)  # the pid, but another process: reused
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 30
    while liveness.process_alive(child.pid) and time.monotonic() < deadline:  # exits, and is a zombie until reaped
        time.sleep(0.05)
    assert not liveness.process_alive(child.pid)
    child.wait()
    assert not liveness.process_alive(child.pid)
    assert liveness.process_alive(0) and liveness.process_alive(-1)  # never a whole process group


def test_runs_entry_point_mirrors_the_flags():
    entry = yaml.safe_load((REPO / "MLproject").read_text())["entry_points"]["runs"]
    parser = runs.build_parser()
    defaults = {action.dest: action.default for action in parser._actions if action.dest != "help"}
    assert {name: str(spec["default"]) for name, spec in entry["parameters"].items()} == \
        {name: str(value) for name, value in defaults.items()}
    for name in entry["parameters"]:
        assert f"--{name} {{{name}}}" in entry["command"]
    assert runs.build_parser().parse_args(["--mark"]).mark == "true"


def fake_run(client, experiment_id, name, tags):
    created = client.create_run(experiment_id, run_name=name, tags={names.KIND: names.KIND_TRAIN, **tags})
    return created.info.run_id


def test_kill_9_is_found_and_marked_live_runs_are_not_and_resume_continues(store, tmp_path, tiny_encoder, capsys):
    datasets = tmp_path / "datasets"
    make_split(datasets / "train_dr", frames=8, size=32, seed=0)
    make_split(datasets / "test_photoreal", frames=4, size=32, seed=2)
    client = MlflowClient()
    experiment_id = client.create_experiment("reap")  # here, so its artifacts are in the temp dir
    argv = training_args(datasets, tiny_encoder, 10, "--experiment", "reap")
    process = start(argv)
    run_id = wait_for_epoch(process, 2)  # the store has epoch 1 at least (state first, then the store)
    process.send_signal(signal.SIGKILL)
    process.wait()

    killed = client.get_run(run_id)
    assert killed.info.status == "RUNNING"
    assert killed.data.tags[names.PID] == str(process.pid) and killed.data.tags[names.HOST] == liveness.host()[0]
    me = os.getpid()
    name, namespace = liveness.host()
    here = {names.HOST: name, names.PID_NAMESPACE: namespace}
    live = fake_run(client, experiment_id, "live", {**here, names.PID: str(me), names.HEARTBEAT: liveness.heartbeat_now(),
                                                    names.PROCESS_START: str(liveness.process_started(me))})
    old_beat = iso(time.time() - 3600)
    far_old = fake_run(client, experiment_id, "far-old", {names.HOST: "elsewhere", names.PID_NAMESPACE: namespace,
                                                          names.PID: "1", names.HEARTBEAT: old_beat})
    far_fresh = fake_run(client, experiment_id, "far-fresh", {names.HOST: "elsewhere", names.PID: "1",
                                                              names.PID_NAMESPACE: namespace,
                                                              names.HEARTBEAT: liveness.heartbeat_now()})

    runs.main(["--experiment", "reap"])
    listed = capsys.readouterr().out
    assert run_id in listed and far_old in listed and live not in listed and far_fresh not in listed
    assert f"its process (pid {process.pid} on {name}) is gone" in listed
    epochs_in_store = max(m.step for m in client.get_metric_history(run_id, names.EPOCH_MARKER))
    assert epochs_in_store < 10
    assert f"last finished epoch in the store: {epochs_in_store}" in listed
    assert f"--resume {run_id}" in listed and f"--run-id {run_id}" in listed
    assert client.get_run(run_id).info.status == "RUNNING"  # listing changes nothing

    # compare and sweep name it instead of counting it as running.
    rows = tracking_store.read_runs("reap")
    stale = [entry["run_id"] for entry in liveness.find_stale(rows)]
    assert ablation.select_runs(rows, stale)[1]["stale"] == 2 and ablation.select_runs(rows, stale)[1]["running"] == 2
    with mock.patch.dict(os.environ, {"MLFLOW_EXPERIMENT_NAME": "reap"}):
        sweep.store_rows()  # what a sweep reads before it trains anything
    out, err = capsys.readouterr()
    assert out == "" and f"warning: run {run_id} (dr_8 seed 0) is RUNNING" in err and f"--resume {run_id}" in err

    runs.main(["--experiment", "reap", "--mark"])
    assert capsys.readouterr().out.count("marked KILLED") == 2
    statuses = {r: client.get_run(r).info.status for r in (run_id, live, far_old, far_fresh)}
    assert statuses == {run_id: "KILLED", live: "RUNNING", far_old: "KILLED", far_fresh: "RUNNING"}
    assert "process gone" in client.get_run(run_id).data.tags[names.ERROR]

    done = subprocess.run([sys.executable, "-m", "regolith.train", *training_args(datasets, tiny_encoder, 10,
                                                                                  "--resume", run_id)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    resumed = client.get_run(run_id)
    assert resumed.info.status == "FINISHED" and names.ERROR not in resumed.data.tags
    assert [m.step for m in client.get_metric_history(run_id, names.EPOCH_MARKER)] == list(range(1, 11))


def test_a_resume_of_a_live_run_is_refused(store, capsys):
    client = MlflowClient()
    me = os.getpid()
    name, namespace = liveness.host()
    run_id = fake_run(client, "0", "live", {names.HOST: name, names.PID_NAMESPACE: namespace, names.PID: str(me),
                                            names.PROCESS_START: str(liveness.process_started(me)),
                                            names.HEARTBEAT: liveness.heartbeat_now()})
    with pytest.raises(Refused, match=f"RUNNING and may be alive: pid {me}"):
        with track.run(resume=run_id):
            pass
    assert client.get_run(run_id).info.status == "RUNNING"


def test_a_run_mlflow_run_opened_whose_process_never_said_where_is_judged_by_its_age():
    opened = {names.ENTRY_POINT: "main"}
    rows = [row("killed-at-once", host=None, kind=None, started_age=4000), row("starting", host=None, kind=None,
                                                                                started_age=20),
            row("sweep-wrapper", host=None, kind=None, started_age=4000)]
    rows[0]["tags"].update(opened)
    rows[1]["tags"].update(opened)
    rows[2]["tags"].update({names.ENTRY_POINT: "sweep"})  # a recipe's wrapper: never says where it runs
    stale = liveness.stale_runs(rows, HERE, NOW, 600, lambda pid, started: True)
    assert [(e["run_id"], e["markable"]) for e in stale] == [("killed-at-once", True)]
    assert "no host or process recorded: RUNNING for 4000 s" in stale[0]["reason"]


def test_runs_marks_a_run_killed_before_its_process_tagged_it(store, capsys):
    client = MlflowClient()
    experiment_id = client.create_experiment("at-once")
    started = int((time.time() - 3600) * 1000)
    run_id = client.create_run(experiment_id, start_time=started, tags={names.ENTRY_POINT: "main"}).info.run_id
    runs.main(["--experiment", "at-once", "--mark"])
    out = capsys.readouterr().out
    assert "1 RUNNING run(s) whose process is gone" in out and "marked KILLED" in out
    run = client.get_run(run_id)
    assert run.info.status == "KILLED" and "no host or process recorded" in run.data.tags[names.ERROR]


def test_a_run_mlflow_run_opened_gets_host_and_pid_before_anything_else(store, monkeypatch):
    client = MlflowClient()
    run_id = client.create_run(client.create_experiment("early")).info.run_id
    monkeypatch.setenv("MLFLOW_RUN_ID", run_id)
    monkeypatch.setenv("REGOLITH_SYSTEM_METRICS", "bogus")  # refused in _open, before the run is opened
    with pytest.raises(Refused, match="REGOLITH_SYSTEM_METRICS='bogus'"):
        with track.run():
            pass
    assert client.get_run(run_id).data.tags[names.PID] == str(os.getpid())


def test_a_timeout_below_three_heartbeats_is_refused(store, capsys):
    with pytest.raises(SystemExit) as exit:
        runs.main(["--timeout", "1", "--mark"])
    assert exit.value.code == 2
    assert f"--timeout 1: expected at least {liveness.MIN_TIMEOUT:g} s" in capsys.readouterr().err


@pytest.mark.parametrize("beat_age,refused", [(10, True), (liveness.MIN_TIMEOUT + 60, False)])
def test_a_run_marked_killed_while_its_heartbeat_is_fresh_is_not_resumed(store, beat_age, refused):
    client = MlflowClient()
    name, _ = liveness.host()
    # Another pid namespace (a container on this host): its pid cannot be looked up, only its heartbeat read.
    run_id = fake_run(client, "0", "elsewhere", {names.HOST: name, names.PID_NAMESPACE: "pid:[4026599999]",
                                                  names.PID: "7", names.HEARTBEAT: iso(time.time() - beat_age)})
    track.mark_killed(run_id, "process gone: marked by regolith.runs")
    if refused:
        with pytest.raises(Refused, match="was marked KILLED by regolith.runs .*may still train it: pid 7"):
            track._refuse_if_alive(client.get_run(run_id))
        with pytest.raises(Refused):
            with track.run(resume=run_id):
                pass
        assert client.get_run(run_id).info.status == "KILLED"
    else:
        track._refuse_if_alive(client.get_run(run_id))  # its heartbeat stopped: gone
