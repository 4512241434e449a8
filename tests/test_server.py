"""The shared tracking server: a real PostgreSQL on loopback, a real `mlflow server` on it, and
training and compare run against it the way docs/tracking-server.md tells users to.

PostgreSQL is the Debian package (`apt-get install postgresql`, which .ci/run installs). This
module makes a throwaway cluster in a temp dir with the package's own initdb and pg_ctl,
run as the unprivileged `postgres` user when the tests run as root (PostgreSQL refuses root).
Without PostgreSQL or psycopg2 these tests skip, saying why, unless REGOLITH_REQUIRE_POSTGRES=1
(CI sets it): then they fail, so CI can never pass by skipping them.

The end of the file checks the cluster files in deploy/ with MLflow's own Kubernetes code
(nothing is submitted to a cluster).
"""

import glob
import json
import os
import pwd
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from conftest import REPO, free_port, make_split, save_legacy_encoder, start_server, stop_server

EXPERIMENT_TRAIN, EXPERIMENT_ABLATION = "pg-train", "pg-ablation"


def unavailable(reason: str):
    """Skip, or fail where CI asks for PostgreSQL (REGOLITH_REQUIRE_POSTGRES=1)."""
    if os.environ.get("REGOLITH_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"{reason}; REGOLITH_REQUIRE_POSTGRES=1 forbids skipping (.ci/run installs it with "
                    f"apt-get install postgresql)", pytrace=False)
    pytest.skip(f"{reason} (apt-get install postgresql; pip install psycopg2-binary)")


def postgres_bin() -> Path | None:
    """The newest Debian PostgreSQL's bin directory, else initdb on PATH."""
    debian = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                    key=lambda path: [int(n) for n in re.findall(r"\d+", path)])
    found = debian[-1] if debian else shutil.which("initdb")
    return Path(found).parent if found else None


@pytest.fixture(scope="module")
def postgres():
    """A PostgreSQL cluster on 127.0.0.1 with the role and database of docs/tracking-server.md.

    Returns the SQLAlchemy URI MLflow takes: postgresql+psycopg2://mlflow:PASSWORD@127.0.0.1:PORT/mlflow.
    """
    bin_dir = postgres_bin()
    if bin_dir is None:
        unavailable("PostgreSQL is not installed: no /usr/lib/postgresql/*/bin/initdb and no initdb on PATH")
    try:
        import psycopg2  # noqa: F401  (the driver the server and the direct client load)
    except ImportError:
        unavailable("psycopg2 is not installed")
    as_user = {}
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            unavailable("running as root, and there is no 'postgres' user to run PostgreSQL as")
        as_user = {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []}

    # Not under pytest's tmp_path: that is private to the test user, and the cluster's owner must reach it.
    root = Path(tempfile.mkdtemp(prefix="regolith-pg-"))
    superuser_password, password, port = secrets.token_hex(8), secrets.token_hex(8), free_port()
    (root / "pwfile").write_text(superuser_password + "\n")
    if as_user:
        for path in (root, root / "pwfile"):
            os.chown(path, as_user["user"], as_user["group"])
    data, log = root / "data", root / "postgres.log"

    def as_owner(*cmd):
        done = subprocess.run([str(bin_dir / cmd[0]), *cmd[1:]], cwd=root, capture_output=True, text=True,
                              timeout=120, **as_user)
        if done.returncode != 0:
            tail = log.read_text()[-2000:] if log.exists() else ""
            pytest.fail(f"{' '.join(cmd)} failed ({done.returncode}): {done.stdout}{done.stderr}{tail}")

    started = False
    try:
        as_owner("initdb", "-D", str(data), "-U", "postgres", "--auth=scram-sha-256", f"--pwfile={root / 'pwfile'}",
                 "-E", "UTF8", "--no-locale")
        # Loopback TCP only, no socket directory to share; durability is not wanted from a throwaway cluster.
        with (data / "postgresql.conf").open("a") as conf:
            conf.write(f"\nlisten_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = ''\n"
                       "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n")
        as_owner("pg_ctl", "-D", str(data), "-l", str(log), "-w", "-t", "60", "start")
        started = True
        # The statements of docs/tracking-server.md, as the superuser.
        done = subprocess.run(
            [str(bin_dir / "psql"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-v", "ON_ERROR_STOP=1",
             "-c", f"CREATE ROLE mlflow LOGIN PASSWORD '{password}'", "-c", "CREATE DATABASE mlflow OWNER mlflow"],
            env={**os.environ, "PGPASSWORD": superuser_password}, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
        yield f"postgresql+psycopg2://mlflow:{password}@127.0.0.1:{port}/mlflow"
    finally:
        if started:
            as_owner("pg_ctl", "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def server_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("pg-server")


@pytest.fixture(scope="module")
def tracking_server(postgres, server_dir):
    """`mlflow server` on loopback over PostgreSQL, serving artifacts from a local folder (proxied)."""
    port = free_port()
    server = start_server(postgres, server_dir / "artifacts", port, server_dir / "server.log")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_server(server)


@pytest.fixture(scope="module")
def inputs(server_dir) -> dict:
    """Tiny splits (32 px) and a tiny encoder in the hub's layout."""
    root = server_dir / "datasets"
    make_split(root / "train_dr", frames=8, seed=0)
    make_split(root / "train_nodr", frames=4, seed=1)
    make_split(root / "test_photoreal", frames=2, seed=2)
    encoder = server_dir / "tiny-mit"
    save_legacy_encoder(encoder)
    return {"root": root, "encoder": encoder}


def client_env(url: str, server_dir: Path) -> dict:
    """What a user sets on a client machine: the server's URL, nothing else of MLflow's."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID", "MLFLOW_TRACKING_URI")}
    return {**env, "MLFLOW_TRACKING_URI": url, "HF_HUB_OFFLINE": "1",
            "REGOLITH_OUTPUT_DIR": str(server_dir / "outputs")}


def run_ok(cmd: list, env: dict, cwd=None) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{' '.join(map(str, cmd))}\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done


def train(inputs, split: str, frames: int, epochs: int, experiment: str, register: str) -> list:
    return [sys.executable, "-m", "regolith.train", "--split", str(inputs["root"] / split), "--frames", str(frames),
            "--epochs", str(epochs), "--pretrained", str(inputs["encoder"]), "--experiment", experiment,
            "--register", register]


def runs_of(client: MlflowClient, experiment: str) -> dict:
    found = client.get_experiment_by_name(experiment)
    return {run.info.run_name: run for run in client.search_runs([found.experiment_id])}


def test_training_run_through_the_server_lands_in_postgres_with_artifacts_and_model(
        postgres, tracking_server, inputs, server_dir, tmp_path):
    run_ok(train(inputs, "train_dr", 4, 2, EXPERIMENT_TRAIN, "true"), client_env(tracking_server, server_dir))

    client = MlflowClient(tracking_uri=tracking_server, registry_uri=tracking_server)
    run = runs_of(client, EXPERIMENT_TRAIN)["dr_4"]
    run_id = run.info.run_id
    assert run.info.status == "FINISHED"
    assert run.data.params["epochs"] == "2" and run.data.params["frames"] == "4"
    assert run.data.tags["regolith.variant"] == "dr_4" and run.data.tags["regolith.frames"] == "4"
    assert [m.step for m in client.get_metric_history(run_id, "val/iou_rock")] == [1, 2]
    assert {"best/iou_rock", "best/miou", "best/epoch", "stopped_epoch"} <= set(run.data.metrics)

    # Artifacts go through the server's proxy into its --artifacts-destination, and come back.
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/")
    assert {"best.pt", "metrics.jsonl", "summary.json"} <= {a.path for a in client.list_artifacts(run_id)}
    assert list((server_dir / "artifacts").rglob("best.pt"))
    checkpoint = torch.load(client.download_artifacts(run_id, "best.pt", str(tmp_path)), weights_only=True)
    assert checkpoint["args"]["epochs"] == 2 and "model" in checkpoint

    version = client.get_model_version_by_alias("regolith-segformer", "dr_4")
    assert version.run_id == run_id
    # The version is the run's MLflow model, whose files (best.pt inside) went through the proxy too.
    assert version.source == run.data.tags["regolith.logged_model"]
    assert list((server_dir / "artifacts").rglob("MLmodel"))
    assert list((server_dir / "artifacts").rglob("artifacts/best.pt"))

    # The run really is in PostgreSQL: a client reading the database directly (no server) sees it as logged.
    direct = MlflowClient(tracking_uri=postgres, registry_uri=postgres).get_run(run_id)
    assert direct.info.status == "FINISHED" and direct.data.metrics == run.data.metrics
    assert direct.data.params == run.data.params

    # The fresh inference pass through the server: best.pt fetched by alias, results logged back.
    run_ok([sys.executable, "-m", "regolith.evaluate", "--run", "models:/regolith-segformer@dr_4"],
           client_env(tracking_server, server_dir), cwd=REPO)
    verified = client.get_run(run_id).data
    assert verified.metrics["verify/iou_rock"] == pytest.approx(run.data.metrics["best/iou_rock"], abs=1e-6)
    assert verified.tags["verify/check"].startswith("pass")


def test_the_ablation_and_compare_through_the_server(tracking_server, inputs, server_dir, tmp_path):
    """nodr_4 by `mlflow run . --env-manager local`, dr_4 and dr_8 directly, then compare reads them back."""
    env = client_env(tracking_server, server_dir)
    launched = [subprocess.Popen(
        ["mlflow", "run", str(REPO), "--env-manager", "local", "--experiment-name", EXPERIMENT_ABLATION,
         "-P", f"split={inputs['root'] / 'train_nodr'}", "-P", "frames=4", "-P", "epochs=1",
         "-P", f"pretrained={inputs['encoder']}", "-P", "register=false"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)]
    # The two direct runs go in parallel with it, as sweep jobs on a cluster would.
    launched += [subprocess.Popen(train(inputs, "train_dr", frames, 1, EXPERIMENT_ABLATION, "false"), env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for frames in (4, 8)]
    for process in launched:
        output, _ = process.communicate(timeout=300)
        assert process.returncode == 0, f"{' '.join(process.args)}\n{output[-4000:]}"

    done = run_ok([sys.executable, "-m", "regolith.compare", "--experiment", EXPERIMENT_ABLATION,
                   "--out", str(tmp_path / "results")], env)
    assert "DR delta" in done.stdout
    (folder,) = (tmp_path / "results").iterdir()
    results = json.loads((folder / "ablation-results.json").read_text())

    client = MlflowClient(tracking_uri=tracking_server)
    runs = runs_of(client, EXPERIMENT_ABLATION)
    assert set(runs) == {"nodr_4", "dr_4", "dr_8", "ablation"}
    assert all(run.info.status == "FINISHED" for run in runs.values())
    assert runs["nodr_4"].data.tags["mlflow.project.entryPoint"] == "main"  # the one started by `mlflow run`
    rock = {name: runs[name].data.metrics["best/iou_rock"] for name in ("nodr_4", "dr_4", "dr_8")}
    dr_delta, size_delta = results["dr_delta"], results["size_delta"]
    assert (dr_delta["variant"], dr_delta["baseline"]) == ("dr_4", "nodr_4")
    assert (size_delta["variant"], size_delta["baseline"]) == ("dr_8", "dr_4")
    assert dr_delta["absolute"] == pytest.approx(rock["dr_4"] - rock["nodr_4"])
    assert size_delta["absolute"] == pytest.approx(rock["dr_8"] - rock["dr_4"])
    ablation = runs["ablation"]
    assert ablation.data.tags["regolith.kind"] == "compare"
    assert "ablation-results.json" in {a.path for a in client.list_artifacts(ablation.info.run_id)}


def test_runs_that_start_together_all_record_the_shared_validation_split(tracking_server, monkeypatch):
    """Sweep jobs of one experiment start at once and all log test_photoreal with one digest.

    MLflow's SQL store looks for an existing (experiment, name, digest) dataset, then inserts one, so
    on PostgreSQL two runs can both insert and one fails with a unique-key violation ("dataset_pk").
    That must not fail a run: the row exists by then, and logging it again links to it.
    """
    import threading

    import mlflow

    from regolith import track

    for name in ("MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_server)
    client, errors = MlflowClient(tracking_uri=tracking_server), []

    def start_together(experiment_id: str, barrier: threading.Barrier):
        with mlflow.start_run(experiment_id=experiment_id):  # the active run is per thread
            barrier.wait()
            try:
                track.log_dataset(Path("/datasets/test_photoreal"), "0123456789abcdef", "validation")
            except Exception as error:
                errors.append(f"{type(error).__name__}: {str(error)[:300]}")

    for attempt in range(5):  # the race is lost in about half of these rounds without the retry
        experiment_id, barrier = client.create_experiment(f"pg-together-{attempt}"), threading.Barrier(8)
        threads = [threading.Thread(target=start_together, args=(experiment_id, barrier)) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert not errors, errors
        runs = client.search_runs([experiment_id])
        assert len(runs) == 8 and all(run.inputs.dataset_inputs[0].dataset.name == "test_photoreal" for run in runs)


# ---- the cluster files in deploy/, read by MLflow's own Kubernetes code (docs/kubernetes.md) -----------------

def kubernetes_module(monkeypatch):
    """mlflow.projects.kubernetes, importable without the docker and kubernetes clients.

    It imports both at the top; building a Job definition uses neither, and neither is a
    dependency of regolith (the submitting machine installs them, docs/kubernetes.md).
    """
    import types
    for name in ("docker", "kubernetes", "kubernetes.config", "kubernetes.config.config_exception"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    sys.modules["kubernetes.config.config_exception"].ConfigException = Exception
    monkeypatch.delitem(sys.modules, "mlflow.projects.kubernetes", raising=False)
    from mlflow.projects import kubernetes
    return kubernetes


def test_deploy_project_is_the_root_main_entry_point_with_a_docker_env():
    """MLflow's Kubernetes backend needs a docker_env; deploy/MLproject has one and the same `main`."""
    from mlflow.projects import _project_spec

    root, deploy = _project_spec.load_project(str(REPO)), _project_spec.load_project(str(REPO / "deploy"))
    assert deploy.name == "regolith" and deploy.docker_env["image"]
    assert set(yaml.safe_load((REPO / "deploy/MLproject").read_text())["entry_points"]) == {"main"}
    ours, theirs = deploy.get_entry_point("main"), root.get_entry_point("main")
    assert {k: (p.type, p.default) for k, p in ours.parameters.items()} == \
        {k: (p.type, p.default) for k, p in theirs.parameters.items()}
    assert ours.command.replace("={", " {").split() == theirs.command.split()  # --flag={x} is --flag {x}


def test_the_job_mlflow_builds_from_the_template_runs_main_with_the_parameters_as_given(monkeypatch):
    """The config parses as `mlflow run --backend kubernetes` parses it; MLflow's Job from our template asks for
    one GPU, mounts the datasets, never retries, and its command reaches regolith.train's parser intact,
    empty defaults included."""
    from mlflow import projects
    from mlflow.projects import _project_spec

    from regolith import train as regolith_train

    kb = kubernetes_module(monkeypatch)
    monkeypatch.chdir(REPO)  # the config names the template relative to the repository root, as the docs run it
    config = projects._parse_kubernetes_config(json.loads((REPO / "deploy/kubernetes_config.json").read_text()))
    assert config["repository-uri"] and config["kube-context"]
    given = {"split": "/datasets/train_dr", "frames": "750", "seed": "3", "lr": "6e-5"}
    command = _project_spec.load_project(str(REPO / "deploy")).get_entry_point("main").compute_command(given, None)
    job = kb._get_kubernetes_job_definition(
        "regolith", "registry.example.com/regolith/regolith:sweep", "sha256:" + "0" * 64,
        kb._get_run_command([command]),
        {"MLFLOW_RUN_ID": "r" * 32, "MLFLOW_TRACKING_URI": "http://mlflow:5000", "MLFLOW_EXPERIMENT_ID": "1"},
        config["kube-job-template"])

    assert job["kind"] == "Job" and job["metadata"]["namespace"] and job["metadata"]["name"].startswith("regolith-")
    assert job["spec"]["backoffLimit"] == 0 and job["spec"]["ttlSecondsAfterFinished"] > 0
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    (container,) = pod["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert {m["mountPath"]: m.get("readOnly", False) for m in container["volumeMounts"]}["/datasets"] is True
    assert {m["name"] for m in container["volumeMounts"]} <= {v["name"] for v in pod["volumes"]}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000" and env["MLFLOW_RUN_ID"] == "r" * 32
    assert [e["name"] for e in container["env"]].count("MLFLOW_TRACKING_URI") == 1  # the template sets none

    # The container runs the command without a shell: argv goes to regolith.train (under regolith.launch, which
    # records why it failed if it is killed outright) as it stands.
    argv = container["command"]
    assert argv[:4] == ["python", "-m", "regolith.launch", "regolith.train"]
    args = regolith_train.build_parser().parse_args(argv[4:])
    assert (args.split, args.frames, args.seed, args.lr) == ("/datasets/train_dr", 750, 3, 6e-5)
    assert (args.val_split, args.parent, args.pretrained, args.register) == ("", "", "nvidia/mit-b0", "true")
