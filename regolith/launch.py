"""Under ``mlflow run``, run an entry point's verb as a child and say why it failed when the verb could not.

    python -m regolith.launch regolith.train --split ...

A verb killed outright (``kill -9``, the OOM killer) cannot write ``regolith.error``, and MLflow
then ends its run FAILED with no reason. This parent waits for the verb and, when it ended with a
failure it did not explain, records one (the exit status and the signal it stands for) in the run
``mlflow run`` opened (``MLFLOW_RUN_ID``), keeping any reason the verb recorded itself. It exits
with the verb's status, as bash would (128 + N for signal N).

It is a prefix, not a ``; ... $?`` suffix, because MLflow appends a ``-P`` the entry point does not
declare to the end of the command: there it must reach the verb, which refuses it by name.

Signals, as bash treats a foreground child, so that the verb sees each stop request once:
SIGINT is left to the verb (a terminal's Ctrl-C reaches the whole process group, the verb with
it); SIGTERM and SIGHUP, which MLflow's own cancel and a closing terminal send to this process
alone, are passed on. Status 0 costs no import of MLflow.
"""

import signal
import subprocess
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


def run_verb(argv: list) -> int:
    """Run ``python -m <argv[0]> <argv[1:]>`` to its end; its exit status as bash gives it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the verb gets the terminal's Ctrl-C itself
    child = subprocess.Popen([sys.executable, "-m", *argv])

    def pass_on(signum, frame):
        if child.poll() is None:
            child.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, pass_on)
    returncode = child.wait()
    return 128 - returncode if returncode < 0 else returncode


def record(status: int, verb: str):
    """A failure ``verb`` ended with and did not explain, into the run ``mlflow run`` opened."""
    if status:
        from regolith import track  # MLflow only on the way out of a failure
        track.record_error(reason(status, verb), keep_existing=True, verb=verb)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv or not argv[0].startswith("regolith.") and not argv[0].startswith("benchmarks."):
        print("usage: python -m regolith.launch regolith.<verb> [arguments]", file=sys.stderr)
        sys.exit(2)
    status = run_verb(argv)
    record(status, argv[0])
    sys.exit(status)


if __name__ == "__main__":
    main()
