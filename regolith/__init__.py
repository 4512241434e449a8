"""regolith: fine-tune SegFormer-B0 to segment rover frames into regolith, rock and sky.

One module per stage; each verb runs as ``python -m regolith.<verb>`` and is one
MLproject entry point. See README.md (its "Architecture" section says which module owns what).
"""

import os
import sys
from contextlib import contextmanager

CLASSES = ("regolith", "rock", "sky")
ROCK = CLASSES.index("rock")  # the hazard class: it picks the best checkpoint and carries the deltas
IGNORE_INDEX = 255
CLASS_IDS = tuple(range(len(CLASSES)))


def as_number(value) -> float | None:
    """A recorded value (a param, a tag: MLflow keeps them as text) as a float; None where it is not a number."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def same_value(a, b) -> bool:
    """Whether two recorded values mean the same: numbers by value (lr logged as "6e-5" and as "0.00006"), else as text."""
    x, y = as_number(a), as_number(b)
    return x == y if x is not None and y is not None else a == b


def readable(text: str) -> str:
    """``text`` as any UTF-8 console or store takes it: a file name's undecodable bytes as ``\\xff`` escapes.

    Python keeps such bytes as lone surrogates (``rgb_\\udcff.png``), which no UTF-8 encoder takes.
    """
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raw = text.encode("utf-8", "backslashreplace")
    return raw.decode("utf-8", "backslashreplace")


class Refused(Exception):
    """Refused as asked: a file, a value or a run that cannot work; the message names it and what was expected.

    Every verb's ``main()`` catches it once (``refusals``): a one-line error on stderr and exit
    status 2; inside a training run, ``track.run`` has already ended the run FAILED with the
    message in its ``regolith.error`` tag, and under ``mlflow run`` any verb's refusal lands in the
    run MLflow opened for it (``track.record_error``).
    """


@contextmanager
def refusals():
    """Around a verb's ``main()``: a ``Refused`` becomes ``error: <message>`` on stderr and exit status 2."""
    try:
        yield
    except Refused as error:
        print(f"error: {readable(str(error))}", file=sys.stderr)
        if os.environ.get("MLFLOW_RUN_ID"):  # under `mlflow run`, the reason goes into the run it opened
            from regolith import track  # here, not at the top: a refusal outside MLflow never imports it
            track.record_error(str(error))
        sys.exit(2)
