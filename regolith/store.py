"""Reading the tracking store: whether it can take a run at all, finding a run, reading runs and their files back.

The verbs that look at runs (evaluate, photos, pull, compare, sweep, runs) go through here;
``track`` writes. Every function returns plain values (dicts of strings and floats, local
paths), so the callers never hold MLflow objects. The store is whatever MLflow resolves
(``MLFLOW_TRACKING_URI``, else MLflow's default ``sqlite:///mlflow.db``); a local store and a
tracking server answer the same. Files come back as bytes on disk: what a verb wrote into a run
(photos.json, confusion_per_frame.json) is parsed by that verb, not here.
"""

import fcntl
import os
import re
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import mlflow
import requests
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from regolith import Refused, files, model as segformer, names

# A progress bar per downloaded checkpoint or JSON file buries what the verbs print; a user's setting wins.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

MODEL_URI = re.compile(r"models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))")
RUN_ID = re.compile(r"[0-9a-f]{32}")


# ---- before anything is read or written: can the store take it? --------------------------------

def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` tracking URI (sqlite:////abs/mlflow.db, sqlite:///relative.db); None else."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///"):].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def _local_store(uri: str) -> tuple | None:
    """(path, whether it is a file) of a local tracking store: a SQLite database or a file-store folder."""
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme == "sqlite":
        path = sqlite_path(uri)
        return (path, True) if path else None
    if parsed.scheme in ("", "file"):
        return Path(urllib.request.url2pathname(parsed.path) if parsed.scheme else uri), False
    return None  # postgresql://, databricks, ...: not a local file


def check_reachable(timeout: float = 10):
    """Fail fast when the tracking store cannot take the run, before any data is decoded or any run is touched.

    A tracking server that is down: MLflow's own client would retry for about four minutes first;
    any HTTP answer counts as up. A local store (``sqlite:///``, a folder) that cannot be written:
    MLflow would retry for about two minutes, then fail with a traceback.
    """
    uri = mlflow.get_tracking_uri()
    if not uri.startswith(("http://", "https://")):
        local = _local_store(uri)
        problem = local and files.cannot_write(*local)
        if problem:
            raise Refused(f"tracking store {uri}: {problem}; point MLFLOW_TRACKING_URI at a writable location")
        return
    try:
        requests.get(uri.rstrip("/") + "/health", timeout=timeout)
    except requests.RequestException as error:
        raise Refused(f"tracking server {uri} is not reachable ({type(error).__name__}); start it, or point "
                      f"MLFLOW_TRACKING_URI at one that is up") from error


def check_artifact_store():
    """The active run's artifact folder, where it is local: writable, before any data is decoded.

    Otherwise best.pt would fail to upload only when the run has finished training.
    """
    uri = mlflow.get_artifact_uri()
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme not in ("", "file"):
        return  # a server's proxy or an object store: the tracking check stands for it
    problem = files.cannot_write(Path(urllib.request.url2pathname(parsed.path) if parsed.scheme else uri))
    if problem:
        raise Refused(f"artifact store {uri}: {problem}; give the experiment a writable artifact location")


_ready = set()  # tracking URIs whose store this process has opened
_created = set()  # of those, the SQLite files that did not exist until this process opened them


def _store_key() -> str:
    """The store as this process knows it: a relative sqlite:///mlflow.db is another file in another folder."""
    uri = mlflow.get_tracking_uri()
    path = sqlite_path(uri)
    return f"sqlite:///{path.resolve()}" if path else uri


def ready_store():
    """Open the tracking store once per process; a new SQLite file is created by one process at a time.

    MLflow creates and migrates a SQLite store's schema on first access, with no lock: runs started
    together on a store that did not exist yet crash each other (``duplicate column name``) and
    leave no run. An exclusive ``flock`` on ``<db>.lock`` beside the file serializes that first
    access; once the schema is there it costs one uncontended lock per process.
    """
    uri = _store_key()
    if uri in _ready:
        return
    path = sqlite_path(mlflow.get_tracking_uri())
    # Which store a verb reads is the first thing to know when it finds nothing (run from another folder,
    # a relative sqlite:///mlflow.db is a new file there), so every verb says it once, on stderr.
    where = f" ({path.resolve()})" if path else ""
    if path and not path.exists():
        _created.add(uri)
        where = f" ({path.resolve()}, a new empty file)"
    print(f"tracking store: {mlflow.get_tracking_uri()}{where}", file=sys.stderr)
    lock = None
    if path:
        try:
            lock = open(f"{path}.lock", "a")
        except OSError:  # a folder this process cannot write to: it cannot create a store there either
            lock = None
    try:
        if lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
        MlflowClient().search_experiments(max_results=1)  # creates the schema where there is none
    finally:
        if lock:
            lock.close()  # and with it the lock
    _ready.add(uri)


# ---- which experiment --------------------------------------------------------------------------

def attached_experiment() -> str | None:
    """Under ``mlflow run``, the name of the experiment the run MLflow opened (``MLFLOW_RUN_ID``) is in."""
    run_id = os.environ.get("MLFLOW_RUN_ID")
    if not run_id:
        return None
    client = MlflowClient()
    return client.get_experiment(client.get_run(run_id).info.experiment_id).name


def new_store_warning() -> str:
    """A sentence for a verb that named a run: the store was created empty by this very process, so nothing is in it."""
    uri = mlflow.get_tracking_uri()
    if _store_key() not in _created:
        return ""
    return (f"; the tracking store {uri} did not exist and was just created empty in {Path.cwd()}: run from the "
            f"folder that holds your mlflow.db, or set MLFLOW_TRACKING_URI (e.g. sqlite:////abs/path/mlflow.db)")


def training_experiments() -> list:
    """The names of the (active) experiments that hold at least one training run."""
    client = MlflowClient()
    return sorted(e.name for e in client.search_experiments()
                  if client.search_runs([e.experiment_id], f"tags.`{names.KIND}` = '{names.KIND_TRAIN}'",
                                        max_results=1))


def reading_experiment(name: str = "") -> str:
    """The experiment a verb that reads training runs looks in: ``name``, else ``default_experiment``'s.

    Where none was named (no ``--experiment``, no MLFLOW_EXPERIMENT_NAME / _ID) and that one holds
    no training run, it is the one experiment that does (after ``make demo``, regolith-demo, said on
    stderr); with several such, refused, naming them.
    """
    if name or os.environ.get("MLFLOW_EXPERIMENT_NAME") or os.environ.get("MLFLOW_EXPERIMENT_ID"):
        return default_experiment(name)
    chosen = default_experiment("")
    ready_store()
    holders = training_experiments()
    if not holders or chosen in holders:
        return chosen
    if len(holders) == 1:
        print(f"experiment: {holders[0]!r}, the only one holding training runs ({chosen!r} holds none); "
              f"pass --experiment NAME to choose another", file=sys.stderr)
        return holders[0]
    raise Refused(f"experiment {chosen!r} holds no training runs; these do: {', '.join(map(repr, holders))}; "
                  f"pass --experiment NAME (-P experiment=NAME under mlflow run)")


def default_experiment(name: str = "") -> str:
    """``name``, else the experiment a training run started here would go to.

    That is the ``mlflow run``'s own, else MLFLOW_EXPERIMENT_NAME, else MLFLOW_EXPERIMENT_ID,
    else MLflow's "Default" (the order ``mlflow.start_run`` resolves them in).
    """
    if name:
        return name
    attached = attached_experiment()
    if attached:
        return attached
    if os.environ.get("MLFLOW_EXPERIMENT_NAME"):
        return os.environ["MLFLOW_EXPERIMENT_NAME"]
    if os.environ.get("MLFLOW_EXPERIMENT_ID"):
        experiment_id = os.environ["MLFLOW_EXPERIMENT_ID"]
        try:
            return MlflowClient().get_experiment(experiment_id).name
        except MlflowException as error:
            raise Refused(f"MLFLOW_EXPERIMENT_ID={experiment_id}: no such experiment in the tracking "
                          f"store {mlflow.get_tracking_uri()}") from error
    return "Default"


def check_experiment_open(name: str = ""):
    """A run can be started in experiment ``name`` (else MLFLOW_EXPERIMENT_NAME): refused where it is deleted.

    MLflow refuses to set a deleted experiment active only once the run is being opened, with a traceback.
    """
    name = name or os.environ.get("MLFLOW_EXPERIMENT_NAME", "")
    ready_store()  # its first access creates a new SQLite store's schema: one process at a time
    found = MlflowClient().get_experiment_by_name(name) if name else None
    if found is not None and found.lifecycle_stage == "deleted":
        raise Refused(f"experiment {name!r} is deleted in the tracking store {mlflow.get_tracking_uri()}; restore it "
                      f"(mlflow experiments restore --experiment-id {found.experiment_id}) or name another")


# ---- where to look in MLflow's UI ---------------------------------------------------------------

UI = "http://127.0.0.1:5000"  # where `mlflow ui` serves by default


def ui_command() -> str | None:
    """The command that serves MLflow's UI on this store (None for a tracking server, which is its own UI)."""
    uri = mlflow.get_tracking_uri()
    if uri.startswith(("http://", "https://")):
        return None
    path = sqlite_path(uri)
    return f"mlflow ui --backend-store-uri {f'sqlite:///{path.resolve()}' if path else uri}"


def ui_base() -> str:
    uri = mlflow.get_tracking_uri()
    return uri.rstrip("/") if uri.startswith(("http://", "https://")) else UI


def experiment_url(experiment_id: str) -> str:
    """The experiment in the UI's model-training view (MLflow 3 otherwise may open its GenAI view), in the view
    state compare shares on it (``track.share_training_view``) with the runs' charts open."""
    return (f"{ui_base()}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
            f"&viewStateShareKey={names.VIEW_KEY}&compareRunsMode=CHART")


def experiment_id(name: str) -> str:
    found = MlflowClient().get_experiment_by_name(name)
    if found is None:
        raise Refused(f"experiment {name!r}: no such experiment in the tracking store {mlflow.get_tracking_uri()}")
    return found.experiment_id


def run_url(run_id: str) -> str:
    """A run's page in the UI, in the model-training view: without the parameter MLflow 3.17's run page opens in
    the GenAI view (the browser's saved choice, "genai" until the user first picks another)."""
    experiment_id = MlflowClient().get_run(run_id).info.experiment_id
    return f"{ui_base()}/#/experiments/{experiment_id}/runs/{run_id}?workflowType=machine_learning"


# ---- finding one run -----------------------------------------------------------------------------

def find_run(ref: str, experiment: str = "") -> dict:
    """The run ``ref`` names, as plain values: a run id, a run name in the experiment, or a models:/ URI.

    A name is looked up in ``experiment`` if given, else where a training run started here would
    go (``default_experiment``: the ``mlflow run``'s own, MLFLOW_EXPERIMENT_NAME / _ID, else Default).
    ``checkpoint_uri`` is where best.pt is fetched from; for a models:/ URI it is pinned to the
    version the alias pointed at when it was resolved: the best.pt inside the version's MLflow model
    (what the version serves), or for a version registered before runs logged one, the run's own.
    """
    ready_store()
    client = MlflowClient()
    ref = ref.strip()
    if ref.startswith("models:/"):
        run, version = _run_from_model_uri(client, ref)
        model_version = f"models:/{version.name}/{version.version}"
        inside = names.MODEL_CHECKPOINT if version.source.startswith("models:/") else names.CHECKPOINT
        checkpoint_uri = f"{model_version}/{inside}"
    else:
        run = _run_by_id(client, ref) or _run_by_name(client, ref, experiment)
        model_version = run.data.tags.get(names.MODEL_VERSION)
        checkpoint_uri = f"runs:/{run.info.run_id}/{names.CHECKPOINT}"
    if run.info.lifecycle_stage == "deleted":
        raise Refused(f"{ref}: run {run.info.run_id} is deleted; restore it first (mlflow runs restore)")
    return {"ref": ref, "run_id": run.info.run_id, "run_name": run.info.run_name,
            "experiment_id": run.info.experiment_id, "status": run.info.status,
            "tags": dict(run.data.tags), "params": dict(run.data.params), "metrics": dict(run.data.metrics),
            "model_version": model_version, "checkpoint_uri": checkpoint_uri}


def _run_by_id(client: MlflowClient, ref: str):
    if not RUN_ID.fullmatch(ref):
        return None
    try:
        return client.get_run(ref)
    except MlflowException as error:
        if error.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None  # then it may still be a run name
        raise


def _experiment(client: MlflowClient, name: str):
    """``name``, else the experiment a training run started here would go to (as compare resolves it)."""
    name = reading_experiment(name)
    found = client.get_experiment_by_name(name)
    if found is None:
        raise Refused(f"experiment {name!r}: no such experiment in the tracking store {mlflow.get_tracking_uri()}"
                      f"{new_store_warning()}")
    return found


def _runs_named(client: MlflowClient, name: str, experiment_ids: list) -> list:
    if "'" in name and '"' in name:
        # MLflow's filter strings have no escape for a quote inside a quoted value: match with each quote
        # as a LIKE wildcard, then keep the exact name.
        pattern = re.sub(r"['\"]", "%", name)
        runs = [run for run in client.search_runs(experiment_ids, f"attributes.run_name LIKE '{pattern}'",
                                                  order_by=["attributes.start_time DESC"], max_results=1000)
                if run.info.run_name == name][:100]
    else:
        quote = "'" if "'" not in name else '"'
        runs = client.search_runs(experiment_ids, f"attributes.run_name = {quote}{name}{quote}",
                                  order_by=["attributes.start_time DESC"], max_results=100)
    # Under `mlflow run -e evaluate` the verb's own run is in the store too; it is never the one meant.
    return [run for run in runs if run.info.run_id != os.environ.get("MLFLOW_RUN_ID")]


def _run_by_name(client: MlflowClient, name: str, experiment: str):
    found = _experiment(client, experiment)
    runs = _runs_named(client, name, [found.experiment_id])
    if len(runs) == 1:
        return runs[0]
    where = f"experiment {found.name!r} of the tracking store {mlflow.get_tracking_uri()}"
    if len(runs) > 1:
        best = names.key(names.BEST, names.HEADLINE)
        listed = "; ".join(
            f"{run.info.run_id} (seed {run.data.tags.get(names.SEED, '?')}, {run.info.status}, started "
            f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime(run.info.start_time / 1000))} UTC, {best} "
            f"{run.data.metrics.get(best, float('nan')):.4f})" for run in runs[:10])
        raise Refused(f"run name {name!r} is ambiguous in {where}: {len(runs)} runs have it: {listed}"
                      f"{' ...' if len(runs) > 10 else ''}. Pass the run id instead")
    others = [e for e in client.search_experiments() if e.experiment_id != found.experiment_id]
    elsewhere = sorted({e.name for e in others for _ in _runs_named(client, name, [e.experiment_id])[:1]})
    hint = f"; runs with that name exist in experiment(s) {', '.join(map(repr, elsewhere))} (pass --experiment)" \
        if elsewhere else ""
    raise Refused(f"{name!r}: no run with that id or name in {where}; expected a run id, a run name, "
                  f"or models:/{names.MODEL_NAME}@<variant>{hint}{new_store_warning()}")


def _run_from_model_uri(client: MlflowClient, ref: str):
    match = MODEL_URI.fullmatch(ref.rstrip("/"))
    if not match:
        raise Refused(f"{ref}: expected models:/<name>@<alias> or models:/<name>/<version>, "
                      f"e.g. models:/{names.MODEL_NAME}@dr_750")
    try:
        if match["alias"]:
            version = client.get_model_version_by_alias(match["name"], match["alias"])
        else:
            version = client.get_model_version(match["name"], match["version"])
    except MlflowException as error:
        raise Refused(f"{ref}: no such registered model version in the registry "
                      f"{mlflow.get_registry_uri()} ({error.message})") from error
    if not version.run_id:
        raise Refused(f"{ref}: version {version.version} of {version.name} records no source run")
    try:
        return client.get_run(version.run_id), version
    except MlflowException as error:  # the run was deleted for good (mlflow gc); the version outlives it
        raise Refused(f"{ref}: version {version.version} of {version.name} comes from run {version.run_id}, which "
                      f"is no longer in the tracking store (removed by mlflow gc?); point the alias at another "
                      f"version") from error


def alias_holder(name: str, alias: str) -> dict | None:
    """The run ``models:/name@alias`` points at, as ``read_runs``' row with its ``version`` and ``lifecycle_stage``;
    None where the alias points nowhere (or at a run that is gone)."""
    client = MlflowClient()
    try:
        holder = client.get_model_version_by_alias(name, alias)
        run = client.get_run(holder.run_id)
    except MlflowException:
        return None
    return {**_row(run, every_tag=True), "version": holder.version, "lifecycle_stage": run.info.lifecycle_stage}


# ---- a run's files -----------------------------------------------------------------------------

def download_checkpoint(run: dict, dst_dir: Path) -> Path:
    """Copy the run's best.pt from the artifact store (never a local leftover) into ``dst_dir``."""
    where = f"run {run['run_id']} ({run['run_name']}, {run['status']})"
    listed = {info.path: info for info in MlflowClient().list_artifacts(run["run_id"])}
    if names.CHECKPOINT not in listed:
        raise Refused(f"{where} has no {names.CHECKPOINT} artifact (it has: {', '.join(listed) or 'no artifacts'}); "
                      f"expected a training run that finished at least one epoch")
    if run["checkpoint_uri"].startswith("runs:/") and listed[names.CHECKPOINT].file_size == 0:
        # A local store lists a FIFO or a link to a device (/dev/zero) as 0 bytes; a real best.pt never is.
        raise Refused(f"{where}: its {names.CHECKPOINT} is 0 bytes in the artifact store (empty, or not a regular "
                      f"file: a FIFO or a device); expected the checkpoint of a training run")
    try:
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=run["checkpoint_uri"], dst_path=str(dst_dir)))
    except MlflowException as error:
        raise Refused(f"{where}: {run['checkpoint_uri']} could not be downloaded ({error.message})") from error


@contextmanager
def fetched_checkpoint(run: dict):
    """(path of the downloaded best.pt, its payload loaded with the safe unpickler), for the block only.

    evaluate, photos and pull all start here: the checkpoint comes from the store, never a local
    leftover, and a file that would run code is refused before anything else happens.
    """
    with tempfile.TemporaryDirectory(prefix="regolith-checkpoint-") as scratch:
        path = download_checkpoint(run, Path(scratch))
        yield path, segformer.load_checkpoint(path, f"run {run['run_id']} ({run['run_name']})")


def download_artifact(run_id: str, path: str, dst_dir: Path | None = None) -> Path:
    """One artifact file of a run, on the local disk (the caller reads and parses it)."""
    return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path,
                                                    dst_path=str(dst_dir) if dst_dir else None))


def artifact_dirs(run_id: str, path: str) -> list:
    """Names of the folders directly under ``path`` in the run's artifacts."""
    return [Path(info.path).name for info in MlflowClient().list_artifacts(run_id, path) if info.is_dir]


def fresh_folder(run_id: str, prefix: str, stamp: str = "") -> tuple:
    """(artifact path ``<prefix>/<UTC time>``, how many such folders there are with it): never one that exists."""
    existing = set(artifact_dirs(run_id, prefix))
    stamp = stamp or time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    name, n = stamp, 1
    while name in existing:
        n += 1
        name = f"{stamp}-{n}"
    return f"{prefix}/{name}", len(existing) + 1


# ---- an experiment as a plain table ----------------------------------------------------------------

def read_runs(experiment: str, missing_ok: bool = False) -> list:
    """Every run of ``experiment`` (deleted ones aside) as a plain row; the caller decides which count.

    A row: run_id, run_name, status, start_time (ms), the run's ``regolith.*`` tags, its params
    and its latest metric values. ``mlflow.search_runs`` pages through the client, so a tracking
    server answers the same as a local store. An experiment that does not exist is refused, listing
    the ones that do, or with ``missing_ok`` (a sweep's first run) has no runs.
    """
    ready_store()
    client = MlflowClient()
    found = client.get_experiment_by_name(experiment)
    if found is None:
        if missing_ok:
            return []
        known = sorted(e.name for e in client.search_experiments())
        raise Refused(f"experiment {experiment!r}: no such experiment in the tracking store "
                      f"{mlflow.get_tracking_uri()}; it has: {', '.join(map(repr, known)) or 'none'}")
    return [_row(run) for run in mlflow.search_runs([found.experiment_id], output_format="list")]


def _row(run, every_tag: bool = False) -> dict:
    return {"run_id": run.info.run_id, "run_name": run.info.run_name, "status": run.info.status,
            "start_time": run.info.start_time,
            "tags": {k: v for k, v in run.data.tags.items()
                     if every_tag or k.startswith("regolith.") or k in (names.ENTRY_POINT, names.GIT_COMMIT, names.PARENT)},
            "params": dict(run.data.params), "metrics": dict(run.data.metrics)}


def read_run(run_id: str) -> dict:
    """One run as read_runs' row, read afresh, with every tag (verify/..., real/... and MLflow's own too)."""
    return _row(MlflowClient().get_run(run_id), every_tag=True)


def read_metric_history(run_id: str, key: str) -> list:
    """(step, value) pairs of one metric of a run, by step; a step logged twice keeps its last value."""
    history = sorted(MlflowClient().get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))
    return sorted({m.step: m.value for m in history}.items())
