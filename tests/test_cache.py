"""The decoded-split cache: memory-mapped arrays, the digest index, damaged entries, frames=K, LRU eviction."""

import hashlib
import os

import numpy as np
import pytest

from conftest import make_split, write_frame
from regolith import Refused, cache, data


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("REGOLITH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("REGOLITH_CACHE_MAX_GB", raising=False)
    return tmp_path / "cache"


def todays_digest(split_dir, frames):
    """The dataset digest as MLflow has always recorded it: sha256 over each frame's sha256 of names and bytes."""
    outer = hashlib.sha256()
    for i in range(frames):
        inner = hashlib.sha256()
        for path in (split_dir / "rgb" / f"rgb_{i:05d}.png", split_dir / "mask" / f"mask_{i:05d}.png"):
            raw = path.read_bytes()
            inner.update(f"{path.parent.name}/{path.name}\0{len(raw)}\0".encode() + raw)
        outer.update(inner.digest())
    return outer.hexdigest()[:16]


def entries(cache_dir):
    return sorted(path.name.split(".")[0] for path in cache_dir.glob("*.json"))


def test_the_cache_is_memory_mapped_npy_and_the_digest_is_unchanged(tmp_path, cache_dir):
    split_dir = make_split(tmp_path / "train_dr", frames=4)
    (cache_dir).mkdir()
    (cache_dir / "0123456789abcdef.npz").write_bytes(b"an earlier version's cache")
    first = data.load_split(split_dir)
    assert first.digest == todays_digest(split_dir, 4)
    assert not list(cache_dir.glob("*.npz"))  # the old format is removed, never read
    images = np.load(cache_dir / f"{first.digest}.images.npy", mmap_mode="r")
    assert isinstance(images, np.memmap) and images.dtype == np.uint8 and images.shape == (4, 3, 32, 32)
    assert (first.images.numpy() == images).all()
    warm = data.load_split(split_dir)
    assert warm.digest == first.digest and warm.pixel_counts == first.pixel_counts
    for path in split_dir.rglob("*.png"):  # new mtimes, same bytes: hashed again, to the same digest
        os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert data.load_split(split_dir).digest == first.digest
    assert data.load_split(split_dir, frames=2).digest == todays_digest(split_dir, 2)


def test_an_unchanged_png_is_neither_hashed_nor_decoded_again(tmp_path, cache_dir):
    split_dir = make_split(tmp_path / "train_dr", frames=3)
    first = data.load_split(split_dir)
    png = split_dir / "rgb" / "rgb_00001.png"
    stat, raw = png.stat(), bytearray(png.read_bytes())
    raw[-20] ^= 0xFF  # inside the image data: unreadable if it were read
    png.write_bytes(bytes(raw))
    os.utime(png, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same size, same mtime: the index trusts it
    again = data.load_split(split_dir)
    assert again.digest == first.digest and (again.images == first.images).all()
    os.utime(png, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))  # the mtime moved: read again, and refused
    with pytest.raises(Refused, match="rgb_00001.png: unreadable PNG"):
        data.load_split(split_dir)


def test_a_truncated_or_changed_cache_file_is_rebuilt(tmp_path, cache_dir, capsys):
    split_dir = make_split(tmp_path / "train_dr", frames=3)
    first = data.load_split(split_dir)
    expected_images, expected_masks = first.images.clone(), first.masks.clone()
    images_npy = cache_dir / f"{first.digest}.images.npy"
    with open(images_npy, "r+b") as file:
        file.truncate(images_npy.stat().st_size - 100)
    rebuilt = data.load_split(split_dir)
    assert "does not match its arrays" in capsys.readouterr().out
    assert (rebuilt.images == expected_images).all() and images_npy.stat().st_size > 100
    masks_npy = cache_dir / f"{first.digest}.masks.npy"
    with open(masks_npy, "r+b") as file:  # same size, one byte changed
        file.seek(-1, os.SEEK_END)
        file.write(b"\x07")
    again = data.load_split(split_dir)
    assert "does not match its arrays" in capsys.readouterr().out
    assert (again.masks == expected_masks).all() and again.pixel_counts == first.pixel_counts
    meta = cache_dir / f"{first.digest}.json"
    meta.write_text('{"format": 1, "digest": 3}')  # a foreign or torn record is only a miss
    assert (data.load_split(split_dir).masks == expected_masks).all()
    assert meta.read_text() != '{"format": 1, "digest": 3}'
    os.utime(masks_npy)  # touched, content intact: its digest is checked and the new mtime kept
    assert (data.load_split(split_dir).masks == expected_masks).all()
    assert "does not match" not in capsys.readouterr().out


def test_frames_k_reads_the_full_split_entry_and_a_full_load_replaces_a_prefix_one(tmp_path, cache_dir):
    split_dir = make_split(tmp_path / "train_dr", frames=5)
    first_two = data.load_split(split_dir, frames=2)
    assert entries(cache_dir) == [first_two.digest]
    full = data.load_split(split_dir)
    assert entries(cache_dir) == [full.digest]  # the 2-frame entry is the full one's beginning: dropped
    again = data.load_split(split_dir, frames=2)
    assert entries(cache_dir) == [full.digest]
    assert again.digest == first_two.digest and again.pixel_counts == first_two.pixel_counts
    assert (again.images == full.images[:2]).all() and again.frames == 2


def test_the_least_recently_used_entries_go_over_the_limit(tmp_path, cache_dir, monkeypatch):
    splits = {name: make_split(tmp_path / name, frames=3, seed=seed) for seed, name in enumerate("abc")}
    digests = {name: data.load_split(path).digest for name, path in list(splits.items())[:2]}
    entry_bytes = sum(path.stat().st_size for path in cache_dir.glob(f"{digests['a']}.*.npy"))
    monkeypatch.setenv("REGOLITH_CACHE_MAX_GB", str(2.5 * entry_bytes / 1e9))  # room for two entries
    data.load_split(splits["a"])  # a is now used more recently than b
    digests["c"] = data.load_split(splits["c"]).digest
    assert entries(cache_dir) == sorted([digests["a"], digests["c"]])
    monkeypatch.setenv("REGOLITH_CACHE_MAX_GB", "0")  # the split in use stays, alone
    assert data.load_split(splits["b"]).frames == 3 and entries(cache_dir) == [digests["b"]]
    monkeypatch.setenv("REGOLITH_CACHE_MAX_GB", "lots")
    with pytest.raises(Refused, match="REGOLITH_CACHE_MAX_GB='lots': expected a size in GB"):
        data.load_split(splits["a"])
    monkeypatch.setenv("REGOLITH_CACHE_MAX_GB", "-1")
    with pytest.raises(Refused, match="REGOLITH_CACHE_MAX_GB='-1': expected a size in GB of 0 or more"):
        cache.max_bytes()


def test_a_refused_frame_leaves_no_partial_file(tmp_path, cache_dir):
    split_dir = make_split(tmp_path / "train_dr", frames=4)
    write_frame(split_dir, 2, np.zeros((16, 16, 3)), np.zeros((16, 16)))
    with pytest.raises(Refused, match="rgb_00002.png: frame is 16x16 but the split's first frame"):
        data.load_split(split_dir)
    assert not [path for path in cache_dir.iterdir() if path.suffix != ".json" and path.name != "index"]
