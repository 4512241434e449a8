"""Files a run writes on the local disk: where they live, whether a place can be written, and atomic writes.

Each run keeps its working files (``best.pt``, ``state.pt``, ``metrics.jsonl``, ``summary.json``)
in ``outputs/<run id>/`` (``REGOLITH_OUTPUT_DIR`` moves the root). Every write goes through
``write_atomic`` (a fresh exclusive temporary file, then a rename), so a crash or a full disk
never leaves a truncated file where a good one was, and no planted link is written through; every place is probed by writing before any data is read, so a read-only
mount fails a run at once instead of after it trained.
"""

import errno
import io
import json
import os
import secrets
import shutil
import tempfile
from pathlib import Path


try:
    import resource
except ImportError:  # not on Windows
    resource = None

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


def _fresh_partial(path: Path):
    """A new, exclusive temporary file beside ``path``: (its name, an open binary file).

    ``O_CREAT|O_EXCL|O_NOFOLLOW`` under a random name: a file or a symbolic link planted at a
    predictable ``.partial`` name (``summary.json.partial -> ~/victim``) is never written through.
    Created with mode 0666 less the umask, so the renamed file gets the user's usual permissions.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        partial = path.with_name(f".{path.name}.{secrets.token_hex(6)}.partial")
        try:
            return partial, os.fdopen(os.open(partial, flags, 0o666), "wb")
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no fresh temporary name", str(path.parent))


def disk_full(path: Path, error: OSError) -> Refused:
    """The refusal of a write of ``path`` that failed, naming it; on a full disk, what to do next.

    ``--resume`` is advised only where the run's ``state.pt`` exists beside it: without one there
    is nothing to resume.
    """
    message = f"{path}: could not write it ({error.strerror or error})"
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        again = ("then --resume the run (or start a new one)" if (path.parent / STATE_FILE).exists()
                 else "then run it again")
        message += f": the disk is full; free space on {path.parent}, {again}"
    return Refused(message)


def write_atomic(path: Path, content, exclusive: bool = False):
    """Write a fresh temporary file beside ``path``, then rename it, so no one ever sees a truncated file.

    ``content`` is bytes, or a function that writes into the open binary file (a large file need not
    be held in memory). ``exclusive``: never replace an existing ``path`` (a hard link, which fails
    when the name exists, where the file system has them). A failed write removes its temporary file
    (on a full disk it would keep the disk full) and is refused naming the file; the run then ends
    FAILED with the files of its last good epoch.
    """
    path = Path(path)
    partial = None
    try:
        partial, file = _fresh_partial(path)
        with file:
            if callable(content):
                content(file)
            else:
                file.write(content)
        if exclusive:
            _link_new(partial, path)
        else:
            os.replace(partial, path)
    except OSError as error:
        raise disk_full(path, error) from error
    finally:
        if partial is not None:
            try:
                partial.unlink(missing_ok=True)
            except OSError:
                pass


def _link_new(partial: Path, path: Path):
    """Give ``partial`` the name ``path`` only if no file has it: refused, never overwritten, where one does."""
    try:
        os.link(partial, path)
    except FileExistsError as error:
        raise Refused(f"{path}: exists already (written meanwhile by another process); it is never overwritten") \
            from error
    except OSError as error:
        if error.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
            raise
        if path.exists() or path.is_symlink():  # no hard links here: the check and the rename are two steps
            raise Refused(f"{path}: exists already (written meanwhile by another process); it is never "
                          f"overwritten") from error
        os.replace(partial, path)


def copy_atomic(source: Path, path: Path, exclusive: bool = False):
    """``source`` copied to ``path`` through ``write_atomic``, streamed (a checkpoint is not read into memory)."""
    def copy(file):
        with open(source, "rb") as original:
            shutil.copyfileobj(original, file, 1 << 20)
    write_atomic(path, copy, exclusive)


def save_atomic(payload, path: Path):
    """``torch.save`` through ``write_atomic``, streamed into the fresh temporary file.

    No copy in memory (under ``ulimit -v`` a second copy of the state could fail the save, and
    torch's error says only ``unexpected pos``); given a Python file, torch raises the file's own
    error, so a full disk is a plain ENOSPC. A save that runs out of memory is refused naming the
    file; the last good one stays where it was.
    """
    import torch  # here, not at the top: convert writes files without paying torch's import

    def serialize(file):
        try:
            torch.save(payload, _Unbuffered(file.fileno()))
        except RuntimeError as error:  # torch's "unexpected pos", around the file's own error
            if isinstance(error.__context__, (OSError, MemoryError)):
                raise error.__context__ from error
            raise

    try:
        write_atomic(path, serialize)
    except (MemoryError, RuntimeError) as error:
        raise Refused(f"{path}: could not write it: out of memory while serializing it "
                      f"({type(error).__name__}: {error}){memory_limit()}; the last one written stays") from error


class _Unbuffered(io.RawIOBase):
    """A file descriptor as torch.save's file: every byte written or ``OSError`` (ENOSPC) raised.

    A buffered file may take a short write quietly, which torch then reports as ``unexpected pos``.
    """

    def __init__(self, fd: int):
        super().__init__()
        self.fd = fd

    def writable(self):
        return True

    def write(self, data):
        view = memoryview(data).cast("B")
        while view:
            view = view[os.write(self.fd, view):]
        return len(data)


def memory_limit() -> str:
    """``ulimit -v`` as said in an error, when one is set: `` (ulimit -v 4000000 kB)``; else nothing."""
    limit = resource.getrlimit(resource.RLIMIT_AS)[0] if resource else -1
    return "" if limit in (-1, getattr(resource, "RLIM_INFINITY", -1)) else f" (ulimit -v {limit // 1024} kB)"


def claim(path: Path, owner: dict) -> dict | None:
    """Create ``path`` holding ``owner`` (JSON) only if no file has that name; None when it did, else the holder's.

    Atomic (``write_atomic(exclusive=True)``): of two processes that claim together, one wins.
    A claim that cannot be read counts as held by an unknown owner (an empty dict).
    """
    try:
        write_atomic(path, (json.dumps(owner) + "\n").encode(), exclusive=True)
        return None
    except Refused:
        if not (path.exists() or path.is_symlink()):
            raise  # not an existing claim: the write itself failed
    return claim_holder(path) or {}


def claim_holder(path: Path) -> dict | None:
    """Who holds the claim ``path`` (``claim``'s owner dict); None where there is none, {} where it cannot be read."""
    if not (path.exists() or path.is_symlink()):
        return None
    try:
        holder = json.loads(path.read_text())
        return holder if isinstance(holder, dict) else {}
    except (OSError, ValueError):
        return {}
