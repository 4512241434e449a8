"""The one seam between regolith and MLflow: every MLflow call the verbs make lives here.

Training and evaluation produce plain dicts of floats; these functions turn them into
params, tags, metrics, dataset inputs and artifacts. No autologging, so a reader sees
exactly what is recorded. The tracking store is whatever MLflow resolves
(``MLFLOW_TRACKING_URI``, else MLflow's default ``sqlite:///mlflow.db``).

Every run opened here records where its process runs (host, pid, the process's start) and a
heartbeat, so ``python -m regolith.runs`` can tell a run killed with ``kill -9`` from a live one.
MLflow's system metrics (``system/...``) are on where CUDA is, off with ``REGOLITH_SYSTEM_METRICS=off``.
"""

import fcntl
import importlib.util
import json
import os
import re
import signal
import socket
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from contextlib import contextmanager, nullcontext
from datetime import datetime, timezone
from pathlib import Path

import mlflow
import requests
from mlflow.data.meta_dataset import MetaDataset
from mlflow.data.sources import LocalArtifactDatasetSource
from mlflow.entities import DatasetInput, InputTag, Metric, RunTag
from mlflow.environment_variables import MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING, MLFLOW_SYSTEM_METRICS_NODE_ID
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

from regolith import Refused, names

# A progress bar per downloaded checkpoint or JSON file buries what the verbs print; a user's setting wins.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

# MLflow's generated run names are "<predicate>-<noun>-<number>", e.g. "skittish-wren-225".
GENERATED_NAME = re.compile(r"[a-z]+-[a-z]+-\d+")


class Interrupted(BaseException):
    """A stop request (SIGINT, SIGTERM): the run ends KILLED, not FAILED; it is not an error of the program."""


class _Silent:
    """The tracker of torchrun ranks other than 0: every logging call does nothing (rank 0 logs once)."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


silent = _Silent()


def check_reachable(timeout: float = 10):
    """Fail fast when the tracking store cannot take the run, before any data is decoded or any run is touched.

    A tracking server that is down: MLflow's own client would retry for about four minutes first;
    any HTTP answer counts as up. A local store (``sqlite:///``, a folder) that cannot be written:
    MLflow would retry for about two minutes, then fail with a traceback.
    """
    uri = mlflow.get_tracking_uri()
    if not uri.startswith(("http://", "https://")):
        local = _local_store(uri)
        problem = local and _cannot_write(*local)
        if problem:
            raise Refused(f"tracking store {uri}: {problem}; point MLFLOW_TRACKING_URI at a writable location")
        return
    try:
        requests.get(uri.rstrip("/") + "/health", timeout=timeout)
    except requests.RequestException as error:
        raise Refused(f"tracking server {uri} is not reachable ({type(error).__name__}); start it, or point "
                            f"MLFLOW_TRACKING_URI at one that is up") from error


_ready = set()  # tracking URIs whose store this process has opened


def ready_store():
    """Open the tracking store once per process; a new SQLite file is created by one process at a time.

    MLflow creates and migrates a SQLite store's schema on first access, with no lock: runs started
    together on a store that did not exist yet crash each other (``duplicate column name``) and
    leave no run. An exclusive ``flock`` on ``<db>.lock`` beside the file serializes that first
    access; once the schema is there it costs one uncontended lock per process.
    """
    uri = mlflow.get_tracking_uri()
    if uri in _ready:
        return
    path = uri.removeprefix("sqlite:///").split("?", 1)[0] if uri.startswith("sqlite:///") else ""
    if path and path != ":memory:":
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


# --- Where a run runs: host, process and heartbeat (``regolith.runs`` finds the dead) ---

HEARTBEAT_SECONDS = 30  # the heartbeat thread's period; every epoch refreshes it too


def heartbeat_now() -> str:
    """The heartbeat's value: UTC time, ISO 8601 to the second (2025-06-01T12:00:00+00:00)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def host() -> tuple:
    """(host name, pid namespace) of this process: two processes can compare pids only when both match.

    Containers that share the host's name (``docker --network host``) have pid namespaces of their
    own, in which a pid means another process.
    """
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = ""
    return socket.gethostname(), namespace


def _proc_stat(pid: int) -> list | None:
    """The fields of /proc/<pid>/stat after the command name (state first), or None."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def process_started(pid: int) -> float | None:
    """When process ``pid`` started, in epoch seconds to 1/100 s; None where it cannot be told.

    Linux: boot time plus the start in clock ticks (as psutil computes it); elsewhere psutil if installed.
    """
    fields = _proc_stat(pid)
    if fields:
        try:
            boot = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                        if line.startswith("btime "))
            return round(boot + int(fields[19]) / os.sysconf("SC_CLK_TCK"), 2)
        except (OSError, ValueError, IndexError, StopIteration):
            return None
    try:
        import psutil
        return round(psutil.Process(pid).create_time(), 2)
    except Exception:
        return None


def process_alive(pid: int, started: float | None = None) -> bool:
    """Whether process ``pid`` of this host still runs and, given ``started``, is the process that started then.

    A zombie (exited, not yet reaped) is gone; a pid that now belongs to a process started at
    another time was reused. Whatever cannot be told counts as alive: a live run is never reaped.
    """
    if pid <= 0:
        return True  # not a pid this code recorded; os.kill(0 or -1) would mean a whole group
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    except OSError:
        return True
    fields = _proc_stat(pid)
    if fields and fields[0] == "Z":
        return False
    now = process_started(pid)
    return started is None or now is None or abs(now - started) <= 1


def where() -> dict:
    """The tags that say where this process runs, with a first heartbeat."""
    name, namespace = host()
    return {names.HOST: name, names.PID: os.getpid(), names.PID_NAMESPACE: namespace,
            names.PROCESS_START: process_started(os.getpid()) or "", names.HEARTBEAT: heartbeat_now()}


class Heartbeat:
    """While a run is open: its host and process as tags, and ``regolith.heartbeat`` refreshed every 30 s.

    A daemon thread with a client of its own (MLflow's SQL store opens a connection per session, and
    SQLite waits up to 20 s on a lock, so it does not fight the main thread's writes). It never
    stops training: a failed beat is a warning, once; the next one tries again.
    """

    def __init__(self, run_id: str, every: float | None = None):
        self.run_id, self.every = run_id, every or HEARTBEAT_SECONDS
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"regolith-heartbeat-{run_id[:8]}", daemon=True)
        self._warned = False

    def start(self):
        MlflowClient().log_batch(self.run_id, tags=[RunTag(key, str(value)) for key, value in where().items()])
        self._thread.start()

    def _beat(self):
        client = MlflowClient(mlflow.get_tracking_uri())
        while not self._stop.wait(self.every):
            try:
                client.set_tag(self.run_id, names.HEARTBEAT, heartbeat_now())
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
    """A resume of a run whose process may still be training it would train it twice: refused."""
    if run.info.status != "RUNNING":
        return
    from regolith import runs  # the one judgement of stale runs lives there; it imports this module
    row = {"run_id": run.info.run_id, "run_name": run.info.run_name, "status": run.info.status,
           "start_time": run.info.start_time, "tags": dict(run.data.tags)}
    if names.HOST not in row["tags"] or runs.find_stale([row]):
        return  # its process is gone (or it was recorded before hosts were)
    tags = row["tags"]
    raise Refused(f"run {run.info.run_id} is RUNNING and may be alive: pid {tags.get(names.PID)} on "
                  f"{tags.get(names.HOST)}, last heartbeat {tags.get(names.HEARTBEAT)}. Wait for it to end, "
                  f"or, if it is gone, for its heartbeat to be {runs.TIMEOUT:g} s old (python -m regolith.runs "
                  f"--mark ends it KILLED; --timeout shortens the wait), then resume")


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
    ready_store()
    client = MlflowClient()
    run_id = resume or os.environ.get("MLFLOW_RUN_ID")
    if resume and os.environ.get("MLFLOW_RUN_ID", resume) != resume:
        raise Refused(f"--resume {resume} but MLFLOW_RUN_ID is {os.environ['MLFLOW_RUN_ID']}; give one run")
    system_metrics = system_metrics_wanted()
    resuming, before, had_error = False, None, False
    with scoped_env({MLFLOW_SYSTEM_METRICS_NODE_ID.name: os.environ.get(MLFLOW_SYSTEM_METRICS_NODE_ID.name)
                     or node_label()}):  # under torchrun: system/node_N/...
        if run_id:
            try:
                existing = client.get_run(run_id)
            except MlflowException as error:
                raise Refused(f"run {run_id}: not found in the tracking store {mlflow.get_tracking_uri()}") from error
            resuming = bool(resume) or names.EPOCH_MARKER in existing.data.metrics
            if resuming and existing.info.status == "FINISHED":
                raise Refused(f"run {run_id} is already FINISHED; there is nothing to resume (start a new run)")
            if resuming:
                _refuse_if_alive(existing)
                before = (existing.info.status, existing.info.end_time)
            had_error = names.ERROR in existing.data.tags
            active = mlflow.start_run(run_id=run_id, log_system_metrics=system_metrics)
            if run_name:
                client.update_run(run_id, name=run_name)
        else:
            if experiment:
                mlflow.set_experiment(experiment)
            active = mlflow.start_run(run_name=run_name or None, log_system_metrics=system_metrics)
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


# Whether the open run got past set-up (``start``): a refused resume before that changed nothing.
_opened = {"started": False}


_shield = {"depth": 0, "pending": None}


@contextmanager
def shielded():
    """Hold a stop request (SIGINT, SIGTERM) while a store write or a state save is under way.

    A stop that raised where it landed could cut a store transaction in half and leave the store
    locked, so the run could not then be marked KILLED. Inside this block the request waits; it
    is raised as soon as the outermost block is done, at a point where stopping is safe. (Masking
    the signal would not do: the process's other threads, torch's among them, still take it.)
    """
    _shield["depth"] += 1
    try:
        yield
    finally:
        _shield["depth"] -= 1
    if not _shield["depth"] and _shield["pending"] is not None:
        stop, _shield["pending"] = _shield["pending"], None
        raise stop


def stop_handler(signum, frame):
    """The SIGINT and SIGTERM handler: end the run as KILLED, at once or right after a shielded write."""
    stop = Interrupted(f"stopped by signal {signal.Signals(signum).name}")
    if _shield["depth"]:
        _shield["pending"] = stop
    else:
        raise stop


def _end(run_id: str, status: str, error: str | None = None, clear_error: bool = False):
    try:
        with shielded():
            if error:
                mlflow.set_tag(names.ERROR, error[:4000])
            elif clear_error:  # an earlier attempt's error (a SIGTERM, a refused resume) is not this run's end
                _delete_tag(run_id, names.ERROR)
            mlflow.end_run(status)
    except Exception as failure:  # the store itself may be what failed; the original error matters more
        warn(f"could not mark run {run_id} {status} in the tracking store: {failure}")


def _delete_tag(run_id: str, key: str):
    try:
        MlflowClient().delete_tag(run_id, key)
    except MlflowException as error:
        if error.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise


def _restore(run_id: str, status: str, end_time: int | None):
    """A run whose resume was refused before set-up goes back as it was: status and end time (KILLED stays KILLED)."""
    try:
        with shielded():
            mlflow.end_run(status)
            if end_time:
                MlflowClient().set_terminated(run_id, status, end_time=end_time)
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
        elif existing[key] != value and not _same_number(existing[key], value):
            conflicts.append(f"{key}={existing[key]!r} in the run, {value!r} now")
    if conflicts:
        raise Refused(f"run {run_id} already records other parameter values: " + "; ".join(conflicts))
    if fresh:
        mlflow.log_params(fresh)


def _same_number(a: str, b: str) -> bool:
    try:
        return float(a) == float(b)
    except ValueError:
        return False


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
def scoped_env(values: dict):
    """Set environment variables for a block (None unsets one), then restore what was there."""
    saved = {key: os.environ.get(key) for key in values}
    for key, value in values.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextmanager
def _http_retries(retries: int | None):
    """Fewer HTTP retries for one call: a per-epoch log must not stall training for minutes."""
    if retries is None:
        yield
        return
    with scoped_env({"MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(retries), "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}):
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
                mlflow.set_tag(names.HEARTBEAT, heartbeat_now())  # at least once per epoch, however short
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
    _opened["started"] = True


def keep(history: list, files: list):
    """On the way out of the epoch loop, however it ended: every finished epoch's metrics and the files so far."""
    send_epochs(history)
    log_artifacts(files, best_effort=True)


def finish(history: list, metrics: dict, files: list, register: str | None = None) -> tuple | None:
    """Once, when a training run has finished: every epoch surely sent, the final metrics and files.

    With ``register`` (the variant), ``best.pt`` becomes a new model version, a candidate for that
    alias; returns what ``register_model`` does.
    """
    send_epochs(history, patient=True)
    log_metrics(metrics)
    log_artifacts(files)
    return register_model(mlflow.active_run().info.run_id, register) if register else None


def warn(message: str):
    print(f"warning: {message}", file=sys.stderr)


def record_error(error: str):
    """Under ``mlflow run``, record a refusal that came before ``run`` could open anything (argparse's).

    The run ``mlflow run`` created (``MLFLOW_RUN_ID``) gets it as ``regolith.error`` and, if still
    RUNNING, ends FAILED. Best effort: a store that cannot take it is warned about, never waited on.
    """
    run_id = os.environ.get("MLFLOW_RUN_ID")
    if not run_id:
        return
    try:
        check_reachable(timeout=5)
        client = MlflowClient()
        client.set_tag(run_id, names.ERROR, error[:4000])
        if client.get_run(run_id).info.status == "RUNNING":
            client.set_terminated(run_id, "FAILED")
    except Exception as failure:
        warn(f"could not record the error in run {run_id}: {failure}")


def check_artifact_store():
    """The active run's artifact folder, where it is local: writable, before any data is decoded.

    Otherwise best.pt would fail to upload only when the run has finished training.
    """
    uri = mlflow.get_artifact_uri()
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme not in ("", "file"):
        return  # a server's proxy or an object store: the tracking check stands for it
    problem = _cannot_write(Path(urllib.request.url2pathname(parsed.path) if parsed.scheme else uri), False)
    if problem:
        raise Refused(f"artifact store {uri}: {problem}; give the experiment a writable artifact location")


def _local_store(uri: str) -> tuple | None:
    """(path, whether it is a file) of a local tracking store: a SQLite database or a file-store folder."""
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme == "sqlite":
        path = uri[len("sqlite:///"):].split("?")[0]  # sqlite:////abs/mlflow.db, sqlite:///relative.db
        return (Path(path), True) if path and path != ":memory:" else None
    if parsed.scheme in ("", "file"):
        return Path(urllib.request.url2pathname(parsed.path) if parsed.scheme else uri), False
    return None  # postgresql://, databricks, ...: not a local file


def _cannot_write(path: Path, is_file: bool) -> str | None:
    """Why ``path`` (a file, or a folder that is created when needed) cannot be written here; None when it can.

    Probed, not guessed from permission bits: root, read-only mounts and ACLs all answer truly.
    A database's folder must take new files too (SQLite writes its journal beside it).
    """
    if is_file and path.exists():
        if not path.is_file():
            return f"{path} is not a file"
        try:
            open(path, "ab").close()  # opened for writing, nothing changed
        except OSError as error:
            return f"cannot write {path} ({error.strerror})"
    folder = path.parent if is_file else path
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        return f"{existing} is not a directory"
    try:
        tempfile.TemporaryFile(dir=existing).close()
    except OSError as error:
        return f"cannot create files in {existing} ({error.strerror})"
    return None


# --- Finding a run, the Model Registry, and logging to a finished run (evaluate, pull) ---

MODEL_URI = re.compile(r"models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))")
RUN_ID = re.compile(r"[0-9a-f]{32}")


def register_model(run_id: str, alias: str, name: str = names.MODEL_NAME) -> tuple:
    """Register the run's ``best.pt`` as a new version of ``name``; returns (its URI, why ``@alias`` stayed or None).

    best.pt is a plain artifact, not an MLflow Model flavour, so the version's source is the run's
    artifact directory: MLflow downloads nothing from a single-file source, while
    ``models:/<name>@<alias>/best.pt`` resolves to the checkpoint. ``@alias`` (the variant) names
    the best registered run of its variant by validation rock-IoU, whatever experiment it is in:
    it moves to the new version only if that scored at least as well (``_alias_stays``).
    """
    client = MlflowClient()
    try:
        client.create_registered_model(name, description="SegFormer-B0 regolith/rock/sky checkpoints (best.pt); "
                                                          "one alias per variant, e.g. @dr_750")
    except MlflowException as error:
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    source = client.get_run(run_id).info.artifact_uri
    version = client.create_model_version(name, source, run_id=run_id,
                                          tags={names.VARIANT: alias, names.VERSION_CHECKPOINT: names.CHECKPOINT})
    stays = _alias_stays(client, name, alias, run_id)
    if stays is None:
        client.set_registered_model_alias(name, alias, version.version)
    uri = f"models:/{name}/{version.version}"
    client.set_tag(run_id, names.MODEL_VERSION, uri)
    return uri, stays


def _alias_stays(client: MlflowClient, name: str, alias: str, run_id: str) -> str | None:
    """Why ``@alias`` keeps its version rather than move to ``run_id``'s; None when it moves.

    It moves when it points nowhere yet (or at a deleted run, a run with no best rock-IoU, or one
    validated on its own training frames), or when the new run's ``best/iou_rock`` is at least the
    holder's on the same validation split (by digest). It stays for a worse run, a run validated on
    its own training frames, and a run validated on another split, whose number does not compare.
    """
    try:
        holder = client.get_model_version_by_alias(name, alias)
        held = client.get_run(holder.run_id)
    except MlflowException:
        return None
    new, score = client.get_run(run_id).data, names.key(names.BEST, names.HEADLINE)
    theirs, mine = held.data.metrics.get(score), new.metrics.get(score)
    if held.info.lifecycle_stage == "deleted" or theirs is None or held.data.tags.get(names.VAL_IS_TRAIN) == "true":
        return None
    where = f"@{alias} stays at models:/{name}/{holder.version} (run {holder.run_id}, {score} {theirs:.4f})"
    if new.tags.get(names.VAL_IS_TRAIN) == "true":
        return f"{where}: this run validated on its own training frames"
    ours, their_split = new.tags.get(names.VAL_DIGEST), held.data.tags.get(names.VAL_DIGEST)
    if ours and their_split and ours != their_split:
        return (f"{where}: this run validated on another split (digest {ours}, not {their_split}), so the two "
                f"do not compare; move the alias by hand if it should")
    if mine is None or mine < theirs:
        return f"{where}: this run's {score} {'is missing' if mine is None else f'{mine:.4f} is lower'}"
    return None


def find_run(ref: str, experiment: str = "") -> dict:
    """The run ``ref`` names, as plain values: a run id, a run name in the experiment, or a models:/ URI.

    A name is looked up in ``experiment`` if given, else where a training run started here would
    go (``default_experiment``: the ``mlflow run``'s own, MLFLOW_EXPERIMENT_NAME / _ID, else Default).
    ``checkpoint_uri`` is where best.pt is fetched from; for a models:/ URI it is pinned to the
    version the alias pointed at when it was resolved.
    """
    client = MlflowClient()
    ref = ref.strip()
    if ref.startswith("models:/"):
        run, version = _run_from_model_uri(client, ref)
        model_version = f"models:/{version.name}/{version.version}"
        checkpoint_uri = f"{model_version}/{names.CHECKPOINT}"
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
    name = default_experiment(name)
    found = client.get_experiment_by_name(name)
    if found is None:
        raise Refused(f"experiment {name!r}: no such experiment in the tracking store {mlflow.get_tracking_uri()}")
    return found


def _runs_named(client: MlflowClient, name: str, experiment_ids: list) -> list:
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
        listed = "; ".join(
            f"{run.info.run_id} (seed {run.data.tags.get(names.SEED, '?')}, {run.info.status}, started "
            f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime(run.info.start_time / 1000))} UTC, best/iou_rock "
            f"{run.data.metrics.get('best/iou_rock', float('nan')):.4f})" for run in runs[:10])
        raise Refused(f"run name {name!r} is ambiguous in {where}: {len(runs)} runs have it: {listed}"
                          f"{' ...' if len(runs) > 10 else ''}. Pass the run id instead")
    others = [e for e in client.search_experiments() if e.experiment_id != found.experiment_id]
    elsewhere = sorted({e.name for e in others for _ in _runs_named(client, name, [e.experiment_id])[:1]})
    hint = f"; runs with that name exist in experiment(s) {', '.join(map(repr, elsewhere))} (pass --experiment)" \
        if elsewhere else ""
    raise Refused(f"{name!r}: no run with that id or name in {where}; expected a run id, a run name, "
                      f"or models:/{names.MODEL_NAME}@<variant>{hint}")


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
    return client.get_run(version.run_id), version


def download_checkpoint(run: dict, dst_dir: Path) -> Path:
    """Copy the run's best.pt from the artifact store (never a local leftover) into ``dst_dir``."""
    listed = [info.path for info in MlflowClient().list_artifacts(run["run_id"])]
    if names.CHECKPOINT not in listed:
        raise Refused(f"run {run['run_id']} ({run['run_name']}, {run['status']}) has no {names.CHECKPOINT} artifact "
                      f"(it has: {', '.join(listed) or 'no artifacts'}); expected a training run that "
                      f"finished at least one epoch")
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=run["checkpoint_uri"], dst_path=str(dst_dir)))


def fresh_folder(run_id: str, prefix: str, stamp: str = "") -> tuple:
    """(artifact path ``<prefix>/<UTC time>``, how many such folders there are with it): never one that exists."""
    existing = set(artifact_dirs(run_id, prefix))
    stamp = stamp or time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    name, n = stamp, 1
    while name in existing:
        n += 1
        name = f"{stamp}-{n}"
    return f"{prefix}/{name}", len(existing) + 1


def artifact_dirs(run_id: str, path: str) -> list:
    """Names of the folders directly under ``path`` in the run's artifacts."""
    return [Path(info.path).name for info in MlflowClient().list_artifacts(run_id, path) if info.is_dir]


def log_to_run(run_id: str, metrics: dict, tags: dict, step: int = 0):
    """Add metrics and tags to an existing run without reopening it, so its status and end time stay as they were."""
    now = int(time.time() * 1000)
    MlflowClient().log_batch(run_id, metrics=[Metric(key, float(value), now, step) for key, value in metrics.items()],
                             tags=[RunTag(key, str(value)) for key, value in tags.items()])


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


# --- Reading an experiment back into a plain table (compare) ---

def attached_experiment() -> str | None:
    """Under ``mlflow run``, the name of the experiment the run MLflow opened (``MLFLOW_RUN_ID``) is in."""
    run_id = os.environ.get("MLFLOW_RUN_ID")
    if not run_id:
        return None
    client = MlflowClient()
    return client.get_experiment(client.get_run(run_id).info.experiment_id).name


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


def _row(run) -> dict:
    return {"run_id": run.info.run_id, "run_name": run.info.run_name, "status": run.info.status,
            "start_time": run.info.start_time,
            "tags": {k: v for k, v in run.data.tags.items() if k.startswith("regolith.")},
            "params": dict(run.data.params), "metrics": dict(run.data.metrics)}


def read_run(run_id: str) -> dict:
    """One run as read_runs' row, read afresh."""
    return _row(MlflowClient().get_run(run_id))


def mark_killed(run_id: str, reason: str, end_time: float | None = None):
    """End a run whose process is gone as KILLED, with ``reason`` in ``regolith.error``, without reopening it.

    Its metrics, artifacts and local state stay as they are, so ``--resume`` continues it.
    ``end_time`` (epoch seconds): when it was last known alive, if known.
    """
    client = MlflowClient()
    client.set_tag(run_id, names.ERROR, reason[:4000])
    client.set_terminated(run_id, "KILLED", end_time=int(end_time * 1000) if end_time else None)


def read_metric_history(run_id: str, key: str) -> list:
    """(step, value) pairs of one metric of a run, by step; a step logged twice keeps its last value."""
    history = sorted(MlflowClient().get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))
    return sorted({m.step: m.value for m in history}.items())


def read_real_photos(run_id: str) -> dict | None:
    """The run's latest regolith.photos measurement of its own checkpoint: {"digest", "photos", "rock"}, or None.

    ``rock`` is each photo's rock share, in the order of ``photos`` (file names); the set's digest
    says whether two runs were pointed at the same photos.
    """
    folder = MlflowClient().get_run(run_id).data.tags.get(names.REAL_ARTIFACTS)
    if not folder:
        return None
    path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=f"{folder}/photos.json")
    loaded = json.loads(Path(path).read_text())
    own = [c for c in loaded.get("checkpoints", []) if c["run_id"] == run_id and "shares" in c]
    if not own:
        return None
    return {"digest": loaded["photos_digest"], "photos": [p["photo"] for p in loaded["photos"]],
            "rock": [share["rock"] for share in own[0]["shares"]]}


def read_frame_confusions(run_id: str) -> dict | None:
    """The per-frame confusion matrices of the run's latest fresh inference pass on its own validation split.

    Returns {"frames": names, "confusion": frames x 3 x 3 counts}, or None when the run has no
    such pass (``python -m regolith.evaluate`` writes one) or it was on another split.
    """
    tags = MlflowClient().get_run(run_id).data.tags
    folder = tags.get(names.VERIFY_ARTIFACTS)
    if not folder or tags.get(names.VERIFY_SPLIT_DIGEST) != tags.get(names.VAL_DIGEST):
        return None
    path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=f"{folder}/confusion_per_frame.json")
    loaded = json.loads(Path(path).read_text())
    return {"frames": loaded["frames"], "confusion": loaded["confusion"]}
