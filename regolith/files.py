"""Files a run writes on the local disk: where they live, whether a place can be written, and atomic writes.

Each run keeps its working files (``best.pt``, ``state.pt``, ``metrics.jsonl``, ``summary.json``)
in ``outputs/<run id>/`` (``REGOLITH_OUTPUT_DIR`` moves the root). Every write goes through
``write_atomic`` (write, then rename), so a crash or a full disk never leaves a truncated file
where a good one was; every place is probed by writing before any data is read, so a read-only
mount fails a run at once instead of after it trained.
"""

import errno
import io
import os
import tempfile
from pathlib import Path

import torch

from regolith import Refused

STATE_FILE = "state.pt"  # the resumable state of a run, beside its other working files
OUTPUT_DIR = "REGOLITH_OUTPUT_DIR"


def output_dir(run_id: str) -> Path:
    """Local working files of one run: best.pt, state.pt, metrics.jsonl, summary.json.

    One folder per run id, so no two runs ever share files; ``REGOLITH_OUTPUT_DIR`` moves the root.
    """
    return Path(os.environ.get(OUTPUT_DIR, "outputs")) / run_id


def cannot_write(path: Path, is_file: bool = False) -> str | None:
    """Why ``path`` (a file, or a folder that is created when needed) cannot be written here; None when it can.

    Probed, not guessed from permission bits: root, read-only mounts and ACLs all answer truly.
    A database's folder must take new files too (SQLite writes its journal beside it).
    """
    path = Path(path)
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


def check_writable(folder: Path, where: str, remedy: str):
    """Create ``folder`` and probe it by writing, or refuse naming ``where`` and the reason."""
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise Refused(f"{where}: cannot write the run's files in {folder} ({error.strerror}); {remedy}") from error
    problem = cannot_write(Path(folder))
    if problem:
        raise Refused(f"{where}: cannot write the run's files in {folder} ({problem}); {remedy}")


def write_atomic(path: Path, content: bytes):
    """Write, then rename, so a crash mid-write never leaves a truncated file behind.

    A failed write removes its ``.partial`` (on a full disk it would keep the disk full) and is
    refused naming the file; the run then ends FAILED with the files of its last good epoch.
    """
    partial = path.with_suffix(path.suffix + ".partial")
    try:
        with open(partial, "wb") as file:
            file.write(content)
        os.replace(partial, path)
    except OSError as error:
        try:
            partial.unlink(missing_ok=True)
        except OSError:
            pass
        full = error.errno in (errno.ENOSPC, errno.EDQUOT)
        raise Refused(f"{path}: could not write it ({error.strerror})"
                      + (f": the disk is full; free space on {path.parent}, then --resume the run (or start a "
                         f"new one)" if full else "")) from error


def save_atomic(payload, path: Path):
    """``torch.save`` through ``write_atomic``: serialized in memory first, so a full disk is a plain ENOSPC.

    (torch's own file writer reports it as ``inline_container.cc ... unexpected pos``.)
    """
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    write_atomic(path, buffer.getbuffer())
