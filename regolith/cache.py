"""The disk cache of decoded splits: raw uint8 ``.npy`` arrays that load memory-mapped, and the digest index.

One entry per decoded split, named by its digest (``data.load_split``'s, the dataset digest MLflow records):

    <digest>.images.npy   N x 3 x H x W uint8      <digest>.masks.npy   N x H x W uint8
    <digest>.json         what was cached: the frames' own digests, their class counts, and each array
                          file's size, mtime and content digest (a torn or changed file is never trusted)

``np.load(mmap_mode="r")`` maps the arrays, so a split costs page cache, not process memory, and a
warm start reads nothing but the JSON. ``index/<hash of the split's path>.json`` keeps each
frame's digest under its files' sizes and mtimes, so an unchanged PNG is hashed once, not at every
start. ``REGOLITH_CACHE_DIR`` moves the cache (``off`` disables it); ``REGOLITH_CACHE_MAX_GB``
(default 64) bounds it, evicting the least recently used entries.
"""

import hashlib
import json
import mmap
import os
import time
import warnings
from pathlib import Path

import numpy as np

from regolith import Refused, files

CACHE_DIR = "REGOLITH_CACHE_DIR"
CACHE_MAX_GB = "REGOLITH_CACHE_MAX_GB"
DEFAULT_MAX_GB = 64.0  # 50,000 frames at 512x512 (1 MiB each decoded) fit, with room for a second split
FORMAT = 1  # of the entry JSON; another value is a miss
ARRAYS = ("images", "masks")
ORPHAN_SECONDS = 600  # an array file without its JSON this old is left over from a crash


def folder() -> Path | None:
    """Where decoded splits are kept: ``REGOLITH_CACHE_DIR`` (``off`` disables the cache)."""
    configured = os.environ.get(CACHE_DIR, str(Path.home() / ".cache" / "regolith" / "splits"))
    return None if configured.lower() in ("", "off", "0") else Path(configured)


def max_bytes() -> int:
    """The cache's size limit in bytes, from ``REGOLITH_CACHE_MAX_GB`` (GB of 10**9 bytes)."""
    configured = os.environ.get(CACHE_MAX_GB, "")
    try:
        limit = float(configured) if configured else DEFAULT_MAX_GB
    except ValueError:
        raise Refused(f"{CACHE_MAX_GB}={configured!r}: expected a size in GB, e.g. 64") from None
    if not limit >= 0:
        raise Refused(f"{CACHE_MAX_GB}={configured!r}: expected a size in GB of 0 or more")
    return int(limit * 1e9)


def _array_path(root: Path, digest: str, name: str) -> Path:
    return root / f"{digest}.{name}.npy"


def _warn(what: str, error):
    # A cache that cannot be written costs the next run a decode, nothing more.
    print(f"warning: split cache: {what} ({error})")


# ---- the digest index: one frame's digest per (path, size, mtime) ---------------------------------

def _index_path(root: Path, split_dir: Path) -> Path:
    key = hashlib.sha256(str(Path(split_dir).resolve()).encode()).hexdigest()[:16]
    return root / "index" / f"{key}.json"


def read_index(split_dir: Path) -> dict:
    """rgb file name -> [mask name, rgb size, rgb mtime_ns, mask size, mask mtime_ns, frame digest]; {} if none."""
    root = folder()
    if root is None:
        return {}
    try:
        index = json.loads(_index_path(root, split_dir).read_text())
        return index["frames"] if index.get("split") == str(Path(split_dir).resolve()) else {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}  # none yet, or torn: every frame is hashed again


def write_index(split_dir: Path, frames: dict):
    root = folder()
    if root is None:
        return
    path = _index_path(root, split_dir)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        files.write_atomic(path, json.dumps({"split": str(Path(split_dir).resolve()), "frames": frames}).encode())
    except (OSError, Refused) as error:
        _warn(f"could not write the digest index {path}", error)


# ---- entries ---------------------------------------------------------------------------------------

def _read_entry(meta_path: Path) -> dict | None:
    """An entry's record, or None for a torn, foreign or other-format JSON (then it is only a miss)."""
    try:
        entry = json.loads(meta_path.read_text())
        well_formed = (entry.get("format") == FORMAT and isinstance(entry.get("digest"), str)
                       and all(isinstance(entry.get(key), int) for key in ("frames", "height", "width"))
                       and isinstance(entry.get("frame_digests"), list) and isinstance(entry.get("pixel_counts"), list)
                       and all(isinstance(entry["files"].get(name), dict) for name in ARRAYS))
        return entry if well_formed else None
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        return None


def _entries(root: Path) -> list:
    """(meta path, entry) of every readable entry."""
    found = []
    for meta_path in root.glob("*.json"):
        entry = _read_entry(meta_path)
        if entry is not None:
            found.append((meta_path, entry))
    return found


def _content_digest(array: np.ndarray) -> str:
    """sha256 over each frame's sha256: computed frame by frame, so decode threads can do it as they go."""
    return hashlib.sha256(b"".join(frame_digest(frame) for frame in array)).hexdigest()


def frame_digest(frame: np.ndarray) -> bytes:
    return hashlib.sha256(memoryview(np.ascontiguousarray(frame)).cast("B")).digest()


def _open_checked(root: Path, meta_path: Path, entry: dict) -> tuple | None:
    """Both arrays memory-mapped, or None when either file is missing, torn or changed since written.

    Size and mtime as recorded: trusted as written (checking every byte of a large split would
    cost more than the whole warm start). Same size, other mtime (copied, touched, or written
    into): its content digest is checked once, and the new mtime recorded when it matches.
    """
    digest, shape = entry["digest"], (entry["frames"], entry["height"], entry["width"])
    arrays, restamped = {}, False
    for name, want in zip(ARRAYS, ((shape[0], 3, *shape[1:]), shape)):
        path, record = _array_path(root, digest, name), entry["files"][name]
        try:
            stat = path.stat()
            if stat.st_size != record.get("size"):
                return None
            array = np.load(path, mmap_mode="r")
        except (OSError, ValueError):
            return None
        if array.dtype != np.uint8 or array.shape != want:
            return None
        if stat.st_mtime_ns != record.get("mtime_ns"):
            if _content_digest(array) != record.get("digest"):
                return None
            record["mtime_ns"], restamped = stat.st_mtime_ns, True
        arrays[name] = array
    if restamped:
        _write_entry(meta_path, entry)
    return arrays["images"], arrays["masks"]


def find(frame_digests: list) -> tuple | None:
    """(images, masks, per-frame class counts) of the frames with these digests, memory-mapped, or None.

    Any entry whose frames begin with these serves them, so ``frames=K`` reads the full split's
    entry rather than writing its own. A damaged entry is removed and the split decoded again.
    """
    root = folder()
    if root is None or not root.is_dir():
        return None
    remove_old_format(root)
    wanted = len(frame_digests)
    for meta_path, entry in _entries(root):
        if entry.get("frame_digests", [])[:wanted] != frame_digests:
            continue
        opened = _open_checked(root, meta_path, entry)
        if opened is None:
            print(f"warning: split cache: {meta_path.name} does not match its arrays (torn or changed); "
                  f"decoding the split again")
            _remove(root, entry["digest"])
            continue
        try:
            os.utime(meta_path)  # its last use, for the LRU eviction
        except OSError:
            pass
        images, masks = opened
        return images[:wanted], masks[:wanted], entry["pixel_counts"][:wanted]
    return None


def as_tensor(array: np.ndarray) -> "torch.Tensor":
    """A read-only map as a CPU tensor without a copy. Nothing writes into a split: batches are gathered copies."""
    import torch  # here, not at the top: convert and the split check run without torch's seconds-long import
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(array)


def release(array, rows):
    """Drop these rows' pages of a memory-mapped array from this process's resident set.

    They stay in the page cache, so the next epoch maps them again without reading the disk; without
    this, every page an epoch touched would count in the run's RSS until it ends. Only whole pages
    inside a row are dropped (a page shared with the next row stays), and only from a file map:
    on anonymous memory MADV_DONTNEED would zero the data. A plain array is left alone.
    """
    mapped = getattr(array, "_mmap", None)  # np.memmap's own map (what np.load(mmap_mode=...) returns)
    if mapped is None or not hasattr(mapped, "madvise"):
        return
    start = array.ctypes.data - np.frombuffer(mapped, np.uint8).ctypes.data
    row_bytes, page = array[0].nbytes if len(array) else 0, mmap.PAGESIZE
    for row in rows:
        low = start + int(row) * row_bytes
        first, last = -(-low // page) * page, (low + row_bytes) // page * page
        if last > first:
            mapped.madvise(mmap.MADV_DONTNEED, first, last - first)


# ---- writing an entry ------------------------------------------------------------------------------

def start(digest: str, frames: int, height: int, width: int) -> dict | None:
    """Preallocated partial array files for a split being decoded: frames are written into them in place.

    Returns ``{"images": (path, fd, offset), "masks": ...}``, or None when the cache is off or cannot
    be written (the caller then decodes into memory).
    """
    root = folder()
    if root is None:
        return None
    opened = {}
    try:
        root.mkdir(parents=True, exist_ok=True)
        for name, shape in zip(ARRAYS, ((frames, 3, height, width), (frames, height, width))):
            path = root / f"{digest}.{os.getpid()}.{name}.npy.partial"
            # open_memmap writes the .npy header and sizes the file; frames then go in with pwrite, not
            # through a writable map, whose dirty pages would count as this process's memory.
            header = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=shape)
            offset = header.offset
            del header
            opened[name] = (path, os.open(path, os.O_WRONLY), offset)
    except OSError as error:
        abandon(opened)
        _warn(f"could not write in {root}; decoding into memory", error)
        return None
    return opened


def write_frame(partial: dict, name: str, index: int, frame: np.ndarray):
    """One frame's bytes at its place in a partial array file."""
    path, fd, offset = partial[name]
    view = memoryview(np.ascontiguousarray(frame)).cast("B")
    at = offset + index * len(view)
    while view:  # pwrite may write less than asked
        written = os.pwrite(fd, view, at)
        view, at = view[written:], at + written


def abandon(partial: dict):
    for path, fd, _ in partial.values():
        try:
            os.close(fd)
            path.unlink(missing_ok=True)
        except OSError:
            pass


def finish(partial: dict, digest: str, entry: dict) -> tuple:
    """Rename the written arrays into place, record the entry, evict; returns both arrays memory-mapped.

    ``entry`` holds the frame digests, per-frame class counts and each array's content digest.
    If the rename or the record fails, the partial files are mapped, then unlinked (the map stays
    valid): this run still reads from the disk, and the next one decodes again.
    """
    root = next(iter(partial.values()))[0].parent
    for path, fd, _ in partial.values():
        os.close(fd)
    placed = {}
    try:
        for name, (path, _, _) in partial.items():
            final = _array_path(root, digest, name)
            os.replace(path, final)
            stat = final.stat()
            entry["files"][name].update(size=stat.st_size, mtime_ns=stat.st_mtime_ns)
            placed[name] = final
        _write_entry(root / f"{digest}.json", {"format": FORMAT, "digest": digest, **entry}, strict=True)
    except (OSError, Refused) as error:
        _warn(f"could not record split {digest} in {root}", error)
        paths = [placed.get(name, path) for name, (path, _, _) in partial.items()]
        arrays = [np.load(path, mmap_mode="r") for path in paths]
        for path in paths:
            path.unlink(missing_ok=True)
        return tuple(arrays)
    evict(root, keep=digest)
    return tuple(np.load(placed[name], mmap_mode="r") for name in ARRAYS)


def _write_entry(meta_path: Path, entry: dict, strict: bool = False):
    try:
        files.write_atomic(meta_path, json.dumps(entry).encode())
    except Refused:
        if strict:
            raise


# ---- keeping it bounded ----------------------------------------------------------------------------

def _remove(root: Path, digest: str):
    # The JSON first: an entry without its record is never trusted, whatever happens next.
    for path in (root / f"{digest}.json", *(_array_path(root, digest, name) for name in ARRAYS)):
        try:
            path.unlink(missing_ok=True)
        except OSError:
            pass


def remove_old_format(root: Path):
    """Earlier versions cached ``<digest>.npz`` (not mappable): no reader is left for them."""
    for path in root.glob("*.npz"):
        try:
            path.unlink()
        except OSError:
            pass


def _entry_bytes(root: Path, digest: str) -> int:
    total = 0
    for name in ARRAYS:
        try:
            total += _array_path(root, digest, name).stat().st_size
        except OSError:
            pass
    return total


def _left_over(root: Path):
    """Partial files of processes that are gone, and arrays whose record never got written."""
    now = time.time()
    for path in root.glob("*.npy.partial"):
        pid = path.name.split(".")[1]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            path.unlink(missing_ok=True)
    for path in root.glob("*.npy"):
        digest = path.name.split(".")[0]
        try:
            if not (root / f"{digest}.json").exists() and now - path.stat().st_mtime > ORPHAN_SECONDS:
                path.unlink()
        except OSError:
            pass


def evict(root: Path, keep: str):
    """Drop entries another entry holds as its first frames, then the least recently used over the limit.

    ``keep`` (the split just written) stays even when it alone is over the limit; on Linux an evicted
    entry another run has mapped stays readable to that run until it ends.
    """
    remove_old_format(root)
    _left_over(root)
    entries = _entries(root)
    kept = next((entry for _, entry in entries if entry["digest"] == keep), None)
    if kept is not None:
        for _, entry in entries:
            frames = entry.get("frame_digests", [])
            if entry["digest"] != keep and len(frames) < len(kept["frame_digests"]) \
                    and kept["frame_digests"][:len(frames)] == frames:
                _remove(root, entry["digest"])
        entries = [(path, entry) for path, entry in _entries(root)]
    by_use = sorted(entries, key=lambda item: item[0].stat().st_mtime if item[0].exists() else 0)
    total = sum(_entry_bytes(root, entry["digest"]) for _, entry in by_use)
    limit = max_bytes()
    for meta_path, entry in by_use:
        if total <= limit:
            break
        if entry["digest"] == keep:
            continue
        total -= _entry_bytes(root, entry["digest"])
        _remove(root, entry["digest"])
    if total > limit:
        print(f"warning: split cache: {total / 1e9:.2f} GB in {root}, over {CACHE_MAX_GB}={limit / 1e9:g}: "
              f"the split in use alone is larger; raise the limit or it is decoded again next time")
