"""Writing to the tracking store: opening and ending runs, logging what they produce.

Training and evaluation produce plain dicts of floats; these functions turn them into
params, tags, metrics, dataset inputs and artifacts. No autologging, so a reader sees
exactly what is recorded. Reading the store back is ``regolith.store``'s, models and the Model
Registry ``regolith.registry``'s; together they are the one seam between regolith and MLflow.

Every run opened here records where its process runs (host, pid, the process's start) and a
heartbeat (``regolith.liveness``), so ``python -m regolith.runs`` can tell a run killed with
``kill -9`` from a live one. MLflow's system metrics (``system/...``) are on where CUDA is, off
with ``REGOLITH_SYSTEM_METRICS=off``.
"""

import importlib.util
import json
import os
import re
import sys
import threading
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from unittest import mock

import mlflow
from mlflow.data.meta_dataset import MetaDataset
from mlflow.data.sources import LocalArtifactDatasetSource
from mlflow.entities import DatasetInput, InputTag, Metric, RunTag
from mlflow.environment_variables import MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING, MLFLOW_SYSTEM_METRICS_NODE_ID
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

from regolith import Refused, files, liveness, names, readable, same_value, store
from regolith.stopping import Interrupted, shielded

# MLflow's generated run names are "<predicate>-<noun>-<number>", e.g. "skittish-wren-225".
GENERATED_NAME = re.compile(r"[a-z]+-[a-z]+-\d+")


class _Silent:
    """The tracker of torchrun ranks other than 0: every logging call does nothing (rank 0 logs once)."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


silent = _Silent()


class Heartbeat:
    """While a run is open: its host and process as tags, and ``regolith.heartbeat`` refreshed every 30 s.

    A daemon thread with a client of its own (MLflow's SQL store opens a connection per session, and
    SQLite waits up to 20 s on a lock, so it does not fight the main thread's writes). It never
    stops training: a failed beat is a warning, once; the next one tries again.
    """

    def __init__(self, run_id: str, every: float | None = None):
        self.run_id, self.every = run_id, every or liveness.HEARTBEAT_SECONDS
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"regolith-heartbeat-{run_id[:8]}", daemon=True)
        self._warned = False

    def start(self):
        MlflowClient().log_batch(self.run_id, tags=[RunTag(key, str(value)) for key, value in liveness.where().items()])
        try:
            self._thread.start()
        except RuntimeError as error:  # "can't start new thread": no memory for its stack (ulimit -v)
            raise Refused(f"run {self.run_id}: cannot start its heartbeat thread ({error}){files.memory_limit()}; "
                          f"training needs more threads than that. Raise the limit") from error

    def _beat(self):
        client = MlflowClient(mlflow.get_tracking_uri())
        while not self._stop.wait(self.every):
            try:
                client.set_tag(self.run_id, names.HEARTBEAT, liveness.heartbeat_now())
            except Exception as error:
                if not self._warned:
                    self._warned = True
                    warn(f"could not refresh the heartbeat of run {self.run_id} ({type(error).__name__}: "
                         f"{error}); training goes on, and it tries again every {self.every:g} s")

    def stop(self):
        """Stop beating (at most a few seconds' wait for a beat under way; the thread never holds the process)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)


def _refuse_if_alive(run):
    """A resume of a run whose process may still be training it would train it twice: refused (``liveness.resume_blocker``)."""
    blocker = liveness.resume_blocker({"run_id": run.info.run_id, "run_name": run.info.run_name,
                                       "status": run.info.status, "start_time": run.info.start_time,
                                       "tags": dict(run.data.tags)})
    if blocker:
        raise Refused(blocker)


# --- MLflow's system metrics (system/...) ---

SYSTEM_METRICS = "REGOLITH_SYSTEM_METRICS"  # on, off, or auto (the default)


def system_metrics_wanted() -> bool:
    """Whether a run logs MLflow's system metrics: ``REGOLITH_SYSTEM_METRICS`` = on, off or auto.

    auto: MLflow's own ``MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING`` where it is set, else on where CUDA
    is. They need psutil, and nvidia-ml-py for the GPU's figures (``pip install -e '.[gpu]'``); asked
    for explicitly without psutil, the run is refused, while auto only warns.
    """
    value = os.environ.get(SYSTEM_METRICS, "auto").strip().lower()
    if value in ("off", "false", "0"):
        return False
    if value in ("on", "true", "1"):
        wanted, asked = True, f"{SYSTEM_METRICS}={value}"
    elif value in ("auto", ""):
        if MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING.defined:
            wanted, asked = MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING.get(), MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING.name
        else:
            import torch
            wanted, asked = torch.cuda.is_available(), ""
    else:
        raise Refused(f"{SYSTEM_METRICS}={value!r}: expected on, off or auto (auto: on where CUDA is)")
    if wanted and importlib.util.find_spec("psutil") is None:
        if asked:
            raise Refused(f"{asked} asks for system metrics, which need psutil: pip install -e '.[gpu]' "
                          f"(psutil, nvidia-ml-py), or set {SYSTEM_METRICS}=off")
        warn(f"no system metrics: they need psutil (pip install -e '.[gpu]'); {SYSTEM_METRICS}=off silences this")
        return False
    return wanted


def node_label() -> str | None:
    """Under torchrun, the node's label in system metric keys (system/node_1/...); None otherwise."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and "GROUP_RANK" in os.environ:
        return f"node_{os.environ['GROUP_RANK']}"
    return None


@contextmanager
def node_system_metrics(run_id: str, resume: bool = False):
    """Under torchrun, the first rank of every node but rank 0's logs that node's system metrics to the run.

    Rank 0 opened the run, and its node's monitor with it; the other nodes log under their own
    label (``node_label``), so every node's CPU, memory and GPUs are in the run.
    """
    monitor = None
    try:
        if (node_label() and os.environ.get("LOCAL_RANK") == "0" and os.environ.get("GROUP_RANK") != "0"
                and system_metrics_wanted()):
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor
            monitor = SystemMetricsMonitor(run_id, resume_logging=resume, node_id=node_label())
            monitor.start()
    except Exception as error:  # another node's metrics never stop training
        warn(f"no system metrics from {node_label()}: {error}")
    try:
        yield
    finally:
        if monitor is not None:
            monitor.finish()


@contextmanager
def run(run_name: str | None = None, experiment: str | None = None, resume: str | None = None,
        params: dict | None = None):
    """Attach to the run ``mlflow run`` created (``MLFLOW_RUN_ID``), resume one, or start one; log ``params``.

    Yields (run id, whether it resumes). A run that already has epochs logged is resumed, never
    trained again from scratch: with ``--resume RUN_ID``, or ``mlflow run --run-id RUN_ID``. The
    run always ends in a true state: FINISHED (without an earlier attempt's ``regolith.error``),
    FAILED on an exception (with the error in the ``regolith.error`` tag), or KILLED on Ctrl-C or
    SIGTERM. A resume refused before ``start`` (other parameters, no resumable state) changes
    nothing: the run keeps the status, end time and error it had. While the run is open it
    records its host and process and keeps a heartbeat (``Heartbeat``); a process killed with
    ``kill -9`` cannot end its run, and ``python -m regolith.runs`` finds it by those.
    """
    store.ready_store()
    run_id = resume or os.environ.get("MLFLOW_RUN_ID")
    if resume and os.environ.get("MLFLOW_RUN_ID", resume) != resume:
        raise Refused(f"--resume {resume} but MLFLOW_RUN_ID is {os.environ['MLFLOW_RUN_ID']}; give one run")
    if run_id and not resume:
        _say_where_early(run_id)
    active, resuming, before, had_error = _open(run_id, bool(resume), run_name, experiment)
    run_id = active.info.run_id
    _opened.update(started=False)
    heartbeat = Heartbeat(run_id)
    try:
        heartbeat.start()
        if params:
            log_params(params)
        yield run_id, resuming
    except (KeyboardInterrupt, Interrupted) as stop:
        heartbeat.stop()
        _end(run_id, "KILLED", f"interrupted ({stop or type(stop).__name__})")
        raise
    except Refused as error:
        heartbeat.stop()
        if before and not _opened["started"]:
            _restore(run_id, *before)
        else:
            _end(run_id, "FAILED", f"{type(error).__name__}: {error}")
        raise
    except BaseException as error:
        heartbeat.stop()
        _end(run_id, "FAILED", f"{type(error).__name__}: {error}")
        raise
    heartbeat.stop()
    _end(run_id, "FINISHED", clear_error=had_error)


def _say_where_early(run_id: str):
    """The run ``mlflow run`` opened gets this process's host and pid first, so a kill at once still leaves them.

    Only on a run that has none: one recorded by another process is judged by ``_refuse_if_alive``.
    Best effort: ``_open`` reports a run that cannot be read.
    """
    try:
        client = MlflowClient()
        if names.HOST not in client.get_run(run_id).data.tags:
            client.log_batch(run_id, tags=[RunTag(key, str(value)) for key, value in liveness.where().items()])
    except MlflowException:
        pass


def _open(run_id: str | None, resume: bool, run_name: str | None, experiment: str | None) -> tuple:
    """Start or reopen the run: (active run, whether it resumes, its (status, end time) before, whether it had an error).

    A run that already has epochs logged is resumed, never trained again from scratch; a FINISHED
    one is not resumed, nor one whose process may still train it.
    """
    system_metrics = system_metrics_wanted()
    node = os.environ.get(MLFLOW_SYSTEM_METRICS_NODE_ID.name) or node_label()  # under torchrun: system/node_N/...
    with mock.patch.dict(os.environ, {MLFLOW_SYSTEM_METRICS_NODE_ID.name: node} if node else {}):
        if not run_id:
            if experiment:
                mlflow.set_experiment(experiment)
            return mlflow.start_run(run_name=run_name or None, log_system_metrics=system_metrics), False, None, False
        client = MlflowClient()
        try:
            existing = client.get_run(run_id)
        except MlflowException as error:
            raise Refused(f"run {run_id}: not found in the tracking store {mlflow.get_tracking_uri()}") from error
        resuming = resume or names.EPOCH_MARKER in existing.data.metrics
        before = None
        if experiment and resume:
            _refuse_other_experiment(existing, experiment)
        if resuming and existing.info.status == "FINISHED":
            raise Refused(f"run {run_id} is already FINISHED; there is nothing to resume (start a new run)")
        if resuming:
            _refuse_if_alive(existing)
            before = (existing.info.status, existing.info.end_time, existing.info.run_name)
        active = mlflow.start_run(run_id=run_id, log_system_metrics=system_metrics)
        if run_name:
            client.update_run(run_id, name=run_name)
        return active, resuming, before, names.ERROR in existing.data.tags


def _refuse_other_experiment(existing, experiment: str):
    """``--resume RUN_ID --experiment NAME`` where the run is in another experiment: refused, not ignored."""
    found = MlflowClient().get_experiment(existing.info.experiment_id)
    if found.name != experiment:
        raise Refused(f"run {existing.info.run_id} is in experiment {found.name!r}, not {experiment!r}; a resume "
                      f"continues the run where it is: drop --experiment, or give {found.name!r}")


# Whether the open run got past set-up (``start``): a refused resume before that changed nothing.
_opened = {"started": False}


def _end(run_id: str, status: str, error: str | None = None, clear_error: bool = False):
    """End the open run ``status``, with ``error`` in ``regolith.error``: the end comes whatever the tag does.

    A tag the store refuses must not leave the run open, where MLflow's exit hook would end it FINISHED.
    """
    try:
        with shielded():
            if error:
                mlflow.set_tag(names.ERROR, readable(error)[:4000])
            elif clear_error:  # an earlier attempt's error (a SIGTERM, a refused resume) is not this run's end
                _delete_tag(run_id, names.ERROR)
    except Exception as failure:
        warn(f"could not record why run {run_id} ended {status} in the tracking store: {failure}")
    try:
        with shielded():
            mlflow.end_run(status)
    except Exception as failure:  # the store itself may be what failed; the original error matters more
        warn(f"could not mark run {run_id} {status} in the tracking store: {failure}")
        try:
            MlflowClient().set_terminated(run_id, status)
        except Exception:
            pass


def _delete_tag(run_id: str, key: str):
    try:
        MlflowClient().delete_tag(run_id, key)
    except MlflowException as error:
        if error.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise


def _restore(run_id: str, status: str, end_time: int | None, name: str | None = None):
    """A run whose resume was refused before set-up goes back as it was: status, end time (KILLED stays KILLED), name."""
    try:
        with shielded():
            mlflow.end_run(status)
            if end_time:
                MlflowClient().set_terminated(run_id, status, end_time=end_time)
            if name and MlflowClient().get_run(run_id).info.run_name != name:
                MlflowClient().update_run(run_id, name=name)
    except Exception as failure:
        warn(f"could not put run {run_id} back to {status} in the tracking store: {failure}")


def log_params(params: dict):
    """Log params as strings, skipping those the run already has with the same value.

    ``mlflow run`` logs the entry-point parameters itself before our code starts, and MLflow
    refuses a re-log of a key with another string (``6e-5`` then ``6e-05``). A key already
    present with a value that means something else is a real conflict and is refused.
    """
    run_id = mlflow.active_run().info.run_id
    existing = MlflowClient().get_run(run_id).data.params
    fresh, conflicts = {}, []
    for key, value in params.items():
        value = str(value)
        if key not in existing:
            fresh[key] = value
        elif not same_value(existing[key], value):
            conflicts.append(f"{key}={existing[key]!r} in the run, {value!r} now")
    if conflicts:
        raise Refused(f"run {run_id} already records other parameter values: " + "; ".join(conflicts))
    if fresh:
        mlflow.log_params(fresh)



def set_tags(tags: dict):
    mlflow.set_tags({key: str(value) for key, value in tags.items()})


def name_run(variant: str):
    """Show the run as its variant in the UI, unless the user gave it a name of their own."""
    run_id = mlflow.active_run().info.run_id
    name = MlflowClient().get_run(run_id).info.run_name or ""
    if not name or GENERATED_NAME.fullmatch(name):
        MlflowClient().update_run(run_id, name=variant)


def log_dataset(path: Path, digest: str, context: str, run_id: str | None = None):
    """Record a split (or a photo set) as an MLflow dataset input, identified by the digest of the files used.

    Into the active run, or into ``run_id`` without reopening it (a finished run, as regolith.photos does).
    """
    dataset = MetaDataset(source=LocalArtifactDatasetSource(str(Path(path).resolve())),
                          name=Path(path).name, digest=digest)
    for attempt in range(3):
        try:
            if run_id:
                MlflowClient().log_inputs(run_id, [DatasetInput(dataset._to_mlflow_entity(),
                                                                [InputTag(MLFLOW_DATASET_CONTEXT, context)])])
            else:
                mlflow.log_input(dataset, context=context)
            return
        except MlflowException as error:
            # MLflow's SQL store looks for the (experiment, name, digest) row, then inserts it: runs of
            # one experiment that start together (sweep jobs) can both insert, and on PostgreSQL one
            # gets a unique-key violation on "dataset_pk". The row exists by then, so a retry links it.
            if attempt == 2 or "dataset_pk" not in str(error):
                raise


def log_images(pictures: dict, step: int):
    """The per-epoch pictures (key -> H x W x 3 uint8) for MLflow's image view; a picture never stops training."""
    for key, picture in pictures.items():
        try:
            with shielded(), _http_retries(1):
                mlflow.log_image(picture, key=key, step=step, synchronous=True)
        except Exception as error:
            warn(f"could not log the {key} image of epoch {step} ({type(error).__name__}: {error})")


def log_metrics(metrics: dict, step: int | None = None):
    """One batched call per epoch; step is the epoch counted from 1."""
    mlflow.log_metrics({key: float(value) for key, value in metrics.items()}, step=step)


def log_artifacts(paths, best_effort: bool = False):
    """Upload local files to the active run; best effort while another error is already on its way."""
    for path in paths:
        if not Path(path).exists():
            continue
        try:
            with shielded():
                mlflow.log_artifact(str(path))
        except Exception as error:
            if not best_effort:
                raise
            warn(f"could not upload {path} ({error}); it stays on disk")


@contextmanager

def _http_retries(retries: int | None):
    """Fewer HTTP retries for one call: a per-epoch log must not stall training for minutes."""
    if retries is None:
        yield
        return
    with mock.patch.dict(os.environ, {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(retries),
                                      "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}):
        yield


def send_epochs(history: list, patient: bool = False):
    """Log the per-epoch rows of ``history`` (step = ``row["epoch"]``) that the store does not have yet.

    Called after every epoch: while the tracking server is away, training goes on and the rows
    wait in the run's state.pt and metrics.jsonl; when it is back they are sent, in order and
    once each. ``patient`` (the end of the run) waits through MLflow's full retry schedule,
    then fails naming the epochs that could not be sent.
    """
    sent = set()
    try:
        # Patient sends may wait minutes for a server; a stop must still get through then.
        with (nullcontext() if patient else shielded()), _http_retries(None if patient else 1):
            run_id = mlflow.active_run().info.run_id
            sent = {m.step for m in MlflowClient().get_metric_history(run_id, names.EPOCH_MARKER)}
            for row in history:
                if row["epoch"] not in sent:
                    log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=row["epoch"])
                    sent.add(row["epoch"])
            try:
                mlflow.set_tag(names.HEARTBEAT, liveness.heartbeat_now())  # at least once per epoch, however short
            except Exception:
                pass  # the heartbeat thread warns if the store stays away; the metrics above were sent
    except Exception as error:
        waiting = [row["epoch"] for row in history if row["epoch"] not in sent]
        if patient:
            raise Refused(f"the tracking store did not take the metrics of epoch(s) {waiting} ({error}); "
                                f"they are in the run's metrics.jsonl, and --resume replays them") from error
        warn(f"tracking store unreachable ({type(error).__name__}); metrics of epoch(s) {waiting} are kept "
             f"and sent when it is back")


def start(name: str, params: dict, tags: dict, datasets: list, files: list = (), history: list = ()):
    """Once, when a training run is set up: name it, log its params, tags, dataset inputs and files.

    ``datasets`` holds (path, digest, context) triples. ``history`` is what a resumed run's state
    holds: epochs the store may never have got (a crash between saving and sending) go first.
    """
    name_run(name)
    log_params(params)
    set_tags(tags)
    for path, digest, context in datasets:
        log_dataset(path, digest, context)
    log_artifacts(files)
    send_epochs(list(history))
    _delete_tag(mlflow.active_run().info.run_id, names.MARKED)  # resumed: its own process holds it now
    _opened["started"] = True


def keep(history: list, files: list):
    """On the way out of the epoch loop, however it ended: every finished epoch's metrics and the files so far."""
    send_epochs(history)
    log_artifacts(files, best_effort=True)


def finish(history: list, metrics: dict, files: list):
    """Once, when a training run has finished: every epoch surely sent, the final metrics and files.

    Every file must reach the artifact store: a run without its best.pt must not end FINISHED nor be
    registered. A failed upload is refused, so the run ends FAILED and ``--resume`` retries it from
    the run's local state.
    """
    send_epochs(history, patient=True)
    log_metrics(metrics)
    run_id = mlflow.active_run().info.run_id
    for path in files:
        try:
            log_artifacts([path])
        except Exception as error:
            raise Refused(f"{Path(path).name}: could not upload it to the artifact store {mlflow.get_artifact_uri()} "
                          f"({type(error).__name__}: {error}); the run ends FAILED, not registered. Make room "
                          f"there, then --resume {run_id} (its files are kept in {Path(path).parent})") from error


def warn(message: str):
    print(f"warning: {message}", file=sys.stderr)


def record_error(error: str, keep_existing: bool = False, verb: str | None = None):
    """Under ``mlflow run``, record why an entry point failed where its verb could not (argparse, a kill).

    The run ``mlflow run`` created (``MLFLOW_RUN_ID``) gets it as ``regolith.error`` and, if still
    RUNNING, ends FAILED. With ``keep_existing`` (``regolith.launch``, after the verb exited) a
    reason the verb recorded stays, and a run the verb ended FINISHED or KILLED is left as it is.
    A run still under MLflow's generated name is named ``<verb>-refused`` (``-failed``), so the
    refusal does not sit in the experiment looking like an anonymous training run. Best effort: a
    store that cannot take it is warned about, never waited on.
    """
    run_id = os.environ.get("MLFLOW_RUN_ID")
    if not run_id:
        return
    verb = verb or Path(sys.argv[0]).stem
    try:
        store.check_reachable(timeout=5)
        client = MlflowClient()
        run = client.get_run(run_id)
        if keep_existing and run.info.status in ("FINISHED", "KILLED"):
            return
        try:
            if not (keep_existing and names.ERROR in run.data.tags):
                client.set_tag(run_id, names.ERROR, readable(error)[:4000])
            if GENERATED_NAME.fullmatch(run.info.run_name or "") and names.KIND not in run.data.tags:
                ending = "failed" if keep_existing else "refused"
                client.update_run(run_id, name=f"{verb.removeprefix('regolith.')}-{ending}")
        finally:
            if client.get_run(run_id).info.status == "RUNNING":
                client.set_terminated(run_id, "FAILED")
    except Exception as failure:
        warn(f"could not record the error in run {run_id}: {failure}")



# --- Logging to a finished run (evaluate, photos, export) ---

def share_training_view(experiment_id: str, expanded: list = ()) -> str:
    """The experiment's view for MLflow's UI: every training run in the table and the charts; returns its link.

    MLflow 3's UI opens an experiment in its GenAI view unless asked for the model-training one, and
    collapses nested runs under their parent (a sweep's or an ablation's), where the charts leave
    them out too. So the training runs stay nested (the parent groups a sweep, and ``--run-id`` resumes
    into it), and this shared view state, which the printed link names, groups the table by
    ``regolith.kind`` instead, charts each run rather than each group, opens ``expanded`` (the parent
    runs), keeps the charts to ``val/iou_rock`` and sorts by it. Written as experiment tags, so any
    browser on the store gets it.
    """
    state = {
        "orderByKey": f"metrics.`{names.EPOCH_MARKER}`", "orderByAsc": False, "searchFilter": "",
        "groupBy": {"groupByKeys": [{"mode": "tag", "groupByData": names.KIND}], "aggregateFunction": "max"},
        "groupsExpanded": {f"tag.{names.KIND}.{kind}": True for kind in (names.KIND_TRAIN, names.KIND_COMPARE)},
        "useGroupedValuesInCharts": False, "chartsSearchFilter": names.EPOCH_MARKER,
        "runsExpanded": {run_id: True for run_id in expanded},
    }
    client = MlflowClient()
    client.set_experiment_tag(experiment_id, names.VIEW_STATE, json.dumps(state))
    if names.EXPERIMENT_KIND not in client.get_experiment(experiment_id).tags:
        client.set_experiment_tag(experiment_id, names.EXPERIMENT_KIND, names.EXPERIMENT_KIND_TRAINING)
    return store.experiment_url(experiment_id)


def log_to_run(run_id: str, metrics: dict, tags: dict, step: int = 0):
    """Add metrics and tags to an existing run without reopening it, so its status and end time stay as they were."""
    now = int(time.time() * 1000)
    MlflowClient().log_batch(run_id, metrics=[Metric(key, float(value), now, step) for key, value in metrics.items()],
                             tags=[RunTag(key, str(value)) for key, value in tags.items()])


def log_image_to_run(run_id: str, picture, key: str, step: int = 0):
    """A picture (H x W x 3 uint8) in a finished run's image view; the run's status stays as it was."""
    MlflowClient().log_image(run_id, picture, key=key, step=step, synchronous=True)


def log_artifacts_to_run(run_id: str, local_dir: Path, artifact_path: str):
    MlflowClient().log_artifacts(run_id, str(local_dir), artifact_path)


def label_launcher_run(kind: str, source: dict | None, tags: dict | None = None):
    """Under ``mlflow run -e <verb>``, name and tag the run MLflow opened for the verb.

    Otherwise it would sit in the experiment as an unnamed run that looks like a failed
    training run; ``regolith.kind`` tells it apart and ``regolith.source_run`` points home
    (a verb with no one source run, such as ``runs``, is named by its kind).
    """
    run_id = os.environ.get("MLFLOW_RUN_ID")
    if not run_id or (source and run_id == source["run_id"]):
        return
    client = MlflowClient()
    client.update_run(run_id, name=f"{kind}-{source['run_name']}" if source else kind)
    client.log_batch(run_id, tags=[RunTag(key, str(value)) for key, value in
                                   {names.KIND: kind, **({names.SOURCE_RUN: source["run_id"]} if source else {}),
                                    **(tags or {})}.items()])



def mark_killed(run_id: str, reason: str, end_time: float | None = None):
    """End a run whose process is gone as KILLED, with ``reason`` in ``regolith.error``, without reopening it.

    Its metrics, artifacts and local state stay as they are, so ``--resume`` continues it.
    ``end_time`` (epoch seconds): when it was last known alive, if known.
    """
    client = MlflowClient()
    client.log_batch(run_id, tags=[RunTag(names.ERROR, readable(reason)[:4000]),
                                   RunTag(names.MARKED, liveness.heartbeat_now())])
    client.set_terminated(run_id, "KILLED", end_time=int(end_time * 1000) if end_time else None)


