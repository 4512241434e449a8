"""Under ``mlflow run``, say why an entry point failed when its own process could not.

    python -m regolith.train ...; python -m regolith.exited $? regolith.train

A process killed outright (``kill -9``, the OOM killer) cannot write ``regolith.error``, and a
recipe's shell wrapper has no error of its own beyond a failed step; MLflow then ends the run
FAILED with no reason. This records one, the exit status and the signal it stands for, in the run
``mlflow run`` opened (``MLFLOW_RUN_ID``), keeping any reason the process recorded itself, and
exits with the status it was given. Status 0 does nothing, and costs no import of MLflow.

Not yet wired into the MLproject commands: MLflow appends a ``-P`` the entry point does not
declare to the end of the command, where a ``; python -m regolith.exited $?`` suffix would take
it from the verb (which must refuse it). Wiring it needs a prefix form that runs the verb as its
child.
"""

import signal
import sys


def reason(status: int, what: str) -> str:
    """The ``regolith.error`` of an entry point that ended with ``status`` (bash's: 128 + N for signal N)."""
    if status > 128:
        try:
            name = signal.Signals(status - 128).name
        except ValueError:
            name = f"signal {status - 128}"
        hint = " (kill -9, or the OOM killer)" if name == "SIGKILL" else ""
        return f"{what} was killed by {name}{hint}, exit status {status}, before it could record why"
    return f"{what} exited with status {status} without recording why (see its console output)"


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    status = int(argv[0]) if argv and argv[0].isdigit() else 1
    if status:
        from regolith import track  # MLflow only on the way out of a failure
        track.record_error(reason(status, " ".join(argv[1:]) or "the entry point"), keep_existing=True)
    sys.exit(status)


if __name__ == "__main__":
    main()
