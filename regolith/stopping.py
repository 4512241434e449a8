"""Stop requests (SIGINT, SIGTERM) for a training run: taken once, and held while a write is under way.

Pure signal handling, no MLflow: ``track`` ends the run KILLED when ``Interrupted`` reaches it, and
wraps its store writes in ``shielded`` so that a stop never lands in the middle of one.
"""

import signal
from contextlib import contextmanager


class Interrupted(BaseException):
    """A stop request (SIGINT, SIGTERM): the run ends KILLED, not FAILED; it is not an error of the program."""


_shield = {"depth": 0, "pending": None, "stopping": False}


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
    """The SIGINT and SIGTERM handler: end the run as KILLED, at once or right after a shielded write.

    Only the first request counts. One stop often arrives twice (Ctrl-C reaches the whole process
    group, then ``mlflow run`` cancels with SIGTERM; a scheduler signals every process of a job),
    and a second raise would cut short the first one's ending of the run.
    """
    if _shield["stopping"]:
        return
    _shield["stopping"] = True
    stop = Interrupted(f"stopped by signal {signal.Signals(signum).name}")
    if _shield["depth"]:
        _shield["pending"] = stop
    else:
        raise stop


def reset_stop():
    """Forget an earlier stop request (one process may train more than once, as the tests do)."""
    _shield.update(pending=None, stopping=False)
