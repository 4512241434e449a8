"""The one seam between regolith and MLflow: every MLflow call the verbs make lives here.

Training and evaluation produce plain dicts of floats; these functions turn them into
params, tags, metrics, dataset inputs and artifacts. No autologging, so a reader sees
exactly what is recorded. The tracking store is whatever MLflow resolves
(``MLFLOW_TRACKING_URI``, else MLflow's default ``sqlite:///mlflow.db``).
"""

import os
import re
import sys
from contextlib import contextmanager
from pathlib import Path

import mlflow
from mlflow.data.meta_dataset import MetaDataset
from mlflow.data.sources import LocalArtifactDatasetSource
from mlflow.tracking import MlflowClient

# MLflow's generated run names are "<predicate>-<noun>-<number>", e.g. "skittish-wren-225".
GENERATED_NAME = re.compile(r"[a-z]+-[a-z]+-\d+")


class ParamConflict(ValueError):
    """The run already records a parameter with a different value than this invocation."""


@contextmanager
def run(run_name: str | None = None, experiment: str | None = None):
    """Attach to the run ``mlflow run`` created (``MLFLOW_RUN_ID``), or start one; yields its id.

    The run always ends in a true state: FINISHED, FAILED on an exception (with the error
    in the ``regolith.error`` tag), or KILLED on Ctrl-C, so nothing is left RUNNING.
    """
    if os.environ.get("MLFLOW_RUN_ID"):
        # mlflow run already chose the experiment and the name; --run-name still renames.
        active = mlflow.start_run(run_id=os.environ["MLFLOW_RUN_ID"])
        if run_name:
            MlflowClient().update_run(active.info.run_id, name=run_name)
    else:
        if experiment:
            mlflow.set_experiment(experiment)
        active = mlflow.start_run(run_name=run_name or None)
    run_id = active.info.run_id
    try:
        yield run_id
    except KeyboardInterrupt:
        _end(run_id, "KILLED", "interrupted (KeyboardInterrupt)")
        raise
    except BaseException as error:
        _end(run_id, "FAILED", f"{type(error).__name__}: {error}")
        raise
    _end(run_id, "FINISHED")


def _end(run_id: str, status: str, error: str | None = None):
    if error:
        mlflow.set_tag("regolith.error", error[:4000])
    mlflow.end_run(status)


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
        raise ParamConflict(f"run {run_id} already records other parameter values: " + "; ".join(conflicts))
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


def log_dataset(path: Path, digest: str, context: str):
    """Record a split as an MLflow dataset input, identified by the digest of the frames used."""
    dataset = MetaDataset(source=LocalArtifactDatasetSource(str(Path(path).resolve())),
                          name=Path(path).name, digest=digest)
    mlflow.log_input(dataset, context=context)


def log_metrics(metrics: dict, step: int | None = None):
    """One batched call per epoch; step is the epoch counted from 1."""
    mlflow.log_metrics({key: float(value) for key, value in metrics.items()}, step=step)


def log_artifacts(paths):
    for path in paths:
        if Path(path).exists():
            mlflow.log_artifact(str(path))


def warn(message: str):
    print(f"warning: {message}", file=sys.stderr)
