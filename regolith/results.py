"""``-P out=DIR``: the folder a training run also writes its results into, as the original's ``--out`` did.

It is checked before anything is decoded (writable, no finished result in it), claimed while the
run writes it (``.regolith-claim``: run id, host, pid), so two runs given one folder never overwrite
each other's results, and filled at the end, each file whole, ``summary.json`` last and never over one.
"""

import json
from contextlib import contextmanager
from pathlib import Path

from regolith import Refused, as_number, files, liveness, names


def check_results_dir(results_dir: str):
    """``-P out=DIR`` must be writable and not hold a finished result: refused before anything is decoded or trained."""
    if not results_dir:
        return
    if (Path(results_dir) / names.SUMMARY).exists():
        raise Refused(f"out={results_dir}: already holds a finished result ({names.SUMMARY}); it is never "
                      f"overwritten. Give another folder")
    files.check_writable(Path(results_dir), f"out={results_dir}", "give a writable folder")


def copy_results(out: Path, results_dir: str, run_id: str):
    """The run's best.pt, metrics.jsonl and summary.json into ``-P out=DIR`` too, as the original's --out wrote them.

    Each file is copied whole, then renamed, summary.json last and never over one: a folder with
    summary.json holds a finished result. The folder must still be this run's (``claimed_out``).
    """
    if not results_dir:
        return
    holder = files.claim_holder(Path(results_dir) / names.OUT_CLAIM)
    if holder is None or holder.get("run_id") != run_id:
        raise Refused(f"out={results_dir}: no longer claimed by this run (held by "
                      f"{(holder or {}).get('run_id', 'nobody')}); its results stay in the store and in {out}")
    for name in (names.CHECKPOINT, names.HISTORY, names.SUMMARY):
        files.copy_atomic(out / name, Path(results_dir) / name, exclusive=name == names.SUMMARY)


@contextmanager
def claimed_out(results_dir: str, run_id: str, rank: int):
    """``-P out=DIR`` is this run's while it runs: claimed at once (``.regolith-claim``), released when it ends.

    Two runs given one folder: the second is refused at its start, so neither overwrites the other's
    result. A claim left by a process of this host that is gone (``kill -9``) is taken over.
    """
    if not results_dir or rank != 0:
        yield
        return
    check_results_dir(results_dir)
    path, owner = Path(results_dir) / names.OUT_CLAIM, {"run_id": run_id, **liveness.where()}
    holder = files.claim(path, owner)
    if holder is not None and (holder.get("run_id") == run_id or claim_is_stale(holder)):
        files.write_atomic(path, (json.dumps(owner) + "\n").encode())  # ours again: a resume, or a dead claim
    elif holder is not None:
        raise Refused(f"out={results_dir}: claimed by run {holder.get('run_id', '?')} (pid {holder.get(names.PID, '?')}"
                      f" on {holder.get(names.HOST, '?')}), which may still be writing it; give another folder "
                      f"(if that run is gone, delete {path})")
    try:
        yield
    finally:
        if (files.claim_holder(path) or {}).get("run_id") == run_id:
            path.unlink(missing_ok=True)


def claim_is_stale(holder: dict) -> bool:
    """Whether the process that claimed a folder is known gone: of this host and namespace, and not running."""
    pid = as_number(holder.get(names.PID))
    return ((holder.get(names.HOST), holder.get(names.PID_NAMESPACE)) == liveness.host() and pid is not None
            and not liveness.process_alive(int(pid), as_number(holder.get(names.PROCESS_START))))
