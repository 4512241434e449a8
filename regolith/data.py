"""Read a rendered split into memory, checking it on the way, and derive the class weights.

A split is a directory with ``rgb/rgb_NNNNN.png`` (8-bit RGB) and ``mask/mask_NNNNN.png``
(8-bit single channel: 0 regolith, 1 rock, 2 sky, 255 ignore), paired by index and read in
index order. Each split is decoded once into uint8 arrays kept on disk under its digest and read
memory-mapped (``regolith.cache``); no PNG is decoded per step, and a split need not fit in memory.
Everything that can be wrong with a split is found here, before any training starts, and
refused (``regolith.Refused``), naming the file and what was expected.

    python -m regolith.data SPLIT [--frames N]   # check a split and print its class shares

``to_rgb8`` is the one conversion of a decoded image of any mode to 8-bit RGB, shared by the
photos verb (real photographs as found) and ``regolith.convert`` (labelled sets with colour masks).
"""

import argparse
import hashlib
import os
import re
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from regolith import CLASSES, IGNORE_INDEX, Refused, cache, refusals

VALID_LABELS = (*range(len(CLASSES)), IGNORE_INDEX)
SIXTEEN_BIT_GRAY = ("I;16", "I;16B", "I;16L", "I;16N", "I")  # PIL's modes of 16-bit grayscale


@dataclass
class Split:
    path: Path
    names: list  # frame stems in index order, e.g. "00042"
    images: "torch.Tensor"  # N x 3 x H x W, uint8
    masks: "torch.Tensor"  # N x H x W, uint8
    digest: str  # sha256 over the names and bytes of every file used, first 16 hex digits
    pixel_counts: list  # labelled pixels per class, 255 excluded
    maps: dict | None = None  # the arrays behind images and masks when memory-mapped from the cache
    staging: dict | None = None  # engine.keep_on's pinned batch buffers, when the split stays on the host for a GPU

    @property
    def frames(self) -> int:
        return len(self.names)

    @property
    def image_size(self) -> tuple:
        return tuple(self.images.shape[-2:])


def _absent(path: Path) -> str:
    """Why ``path`` cannot be read: a symbolic link to nothing says where it points."""
    return f"broken symbolic link -> {os.readlink(path)}" if path.is_symlink() else "no such directory"


def pair_frames(split_dir: Path) -> list:
    """(index, rgb path, mask path) in index order; refuses unpaired or misnamed files."""
    split_dir = Path(split_dir)
    if not split_dir.is_dir():
        raise Refused(f"split {split_dir}: {_absent(split_dir)}")
    found = {}
    for sub, prefix in (("rgb", "rgb"), ("mask", "mask")):
        folder = split_dir / sub
        if folder.is_symlink() and not folder.exists():
            raise Refused(f"{folder}: {_absent(folder)}")
        if not folder.is_dir():
            raise Refused(f"split {split_dir}: missing {sub}/ directory (expected {sub}/{prefix}_NNNNN.png)")
        pattern = re.compile(rf"{prefix}_(\d+)\.png")
        found[sub] = {}
        for path in folder.iterdir():
            if path.suffix.lower() != ".png":
                continue  # stray notes or thumbnails are not frames
            match = pattern.fullmatch(path.name)
            if not match:
                raise Refused(f"{path}: unexpected file name (expected {prefix}_NNNNN.png)")
            if not path.exists():
                raise Refused(f"{path}: {_absent(path)}")
            index = int(match.group(1))
            if index in found[sub]:
                raise Refused(f"{path}: index {index} also used by {found[sub][index].name}")
            found[sub][index] = path
    rgb, mask = found["rgb"], found["mask"]
    if not rgb and not mask:
        raise Refused(f"split {split_dir}: empty (no rgb/rgb_NNNNN.png or mask/mask_NNNNN.png files)")
    unpaired = sorted(set(rgb) ^ set(mask))
    if unpaired:
        shown = [str(rgb.get(i) or mask.get(i)) for i in unpaired[:5]]
        raise Refused(
            f"split {split_dir}: {len(unpaired)} frame(s) without a partner "
            f"(every rgb/rgb_N.png needs mask/mask_N.png): {', '.join(shown)}"
            + (" ..." if len(unpaired) > 5 else ""))
    return [(i, rgb[i], mask[i]) for i in sorted(rgb)]


def _decode(path: Path, modes: tuple, expected: str) -> np.ndarray:
    """Read one PNG into a numpy array, refusing anything but the expected modes."""
    try:
        with Image.open(path) as image:
            image.load()
            if image.format != "PNG":
                raise Refused(f"{path}: not a PNG file (found {image.format})")
            if image.mode not in modes:
                raise Refused(f"{path}: expected {expected}, found PIL mode {image.mode}")
            # PIL reads a 16-bit RGB PNG as mode RGB, keeping only the high byte of each value.
            if _png_bit_depth(path) > 8:
                raise Refused(f"{path}: expected {expected}, found a {_png_bit_depth(path)}-bit PNG; "
                              f"convert the split to 8 bits per channel")
            # A palette mask stores the class id as the palette index; keep the indices.
            return np.asarray(image)
    except Refused:
        raise
    except Exception as error:  # PIL raises many types for damaged files
        raise Refused(f"{path}: unreadable PNG ({error})") from error


def _png_bit_depth(path: Path) -> int:
    """Bits per channel from the PNG's header (IHDR is always the first chunk)."""
    with open(path, "rb") as file:
        return file.read(25)[24]


def hash_file(digest, path: Path, label: str):
    """Add a file's ``label`` (its name as the digest knows it), length and bytes to ``digest``; refuses an unreadable one."""
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise Refused(f"{path}: unreadable ({error})") from error
    digest.update(f"{label}\0{len(raw)}\0".encode())
    digest.update(raw)


def _frame_digest(rgb_path: Path, mask_path: Path) -> bytes:
    """sha256 of one frame's file names and bytes (reading only, no decoding)."""
    digest = hashlib.sha256()
    for path in (rgb_path, mask_path):
        hash_file(digest, path, f"{path.parent.name}/{path.name}")
    return digest.digest()


def _decode_frame(rgb_path: Path, mask_path: Path):
    rgb = _decode(rgb_path, ("RGB",), "an 8-bit RGB image")
    mask = _decode(mask_path, ("L", "P"), "an 8-bit single-channel mask")
    if rgb.shape[:2] != mask.shape:
        raise Refused(f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} but "
                        f"{rgb_path.name} is {rgb.shape[1]}x{rgb.shape[0]} (width x height)")
    bad = [int(v) for v in np.unique(mask) if v not in VALID_LABELS]
    if bad:
        raise Refused(f"{mask_path}: mask values {bad[:8]} outside {{0, 1, 2, 255}} "
                        f"(0 regolith, 1 rock, 2 sky, 255 ignore)")
    return rgb, mask


def frame_digests(split_dir: Path, pairs: list, pool) -> list:
    """Each frame's digest (hex), hashing only frames whose files changed size or mtime since the index saw them."""
    index = cache.read_index(split_dir)
    fresh = {}

    def digest_of(pair):
        _, rgb_path, mask_path = pair
        try:
            rgb_stat, mask_stat = rgb_path.stat(), mask_path.stat()
        except OSError as error:
            raise Refused(f"{error.filename}: unreadable ({error.strerror})") from error
        stamp = [mask_path.name, rgb_stat.st_size, rgb_stat.st_mtime_ns, mask_stat.st_size, mask_stat.st_mtime_ns]
        known = index.get(rgb_path.name)
        if isinstance(known, list) and known[:5] == stamp:
            return known[5]
        digest = _frame_digest(rgb_path, mask_path).hex()
        fresh[rgb_path.name] = [*stamp, digest]
        return digest

    digests = list(pool.map(digest_of, pairs))
    if fresh:
        cache.write_index(split_dir, {**index, **fresh})
    return digests


def _decode_into(pairs: list, digest: str, frame_hex: list, pool) -> tuple:
    """Decode every frame straight into its place in the arrays: the cache's files, or memory when it is off.

    No list of decoded frames is kept; each worker holds one frame. Returns (images, masks, per-frame
    class counts); with the cache on, both arrays come back memory-mapped from its files.
    """
    first = _decode_frame(pairs[0][1], pairs[0][2])
    height, width = first[1].shape
    partial = cache.start(digest, len(pairs), height, width)
    if partial is None:
        memory = {"images": np.empty((len(pairs), 3, height, width), np.uint8),
                  "masks": np.empty((len(pairs), height, width), np.uint8)}

    def put(n):
        rgb_path, mask_path = pairs[n][1], pairs[n][2]
        rgb, mask = first if n == 0 else _decode_frame(rgb_path, mask_path)
        if mask.shape != (height, width):
            raise Refused(f"{rgb_path}: frame is {mask.shape[1]}x{mask.shape[0]} but the split's first "
                            f"frame {pairs[0][1].name} is {width}x{height}; a split must have one frame size")
        image = np.ascontiguousarray(rgb.transpose(2, 0, 1))
        if partial is None:
            memory["images"][n], memory["masks"][n] = image, mask
        else:
            cache.write_frame(partial, "images", n, image)
            cache.write_frame(partial, "masks", n, mask)
        # Counted per frame (at most 256 int64 per worker), never as an int64 copy of every pixel.
        counts = np.bincount(mask.reshape(-1), minlength=256)[:len(CLASSES)].tolist()
        return counts, cache.frame_digest(image), cache.frame_digest(mask)

    try:
        done = list(pool.map(put, range(len(pairs))))
    except BaseException:
        if partial is not None:
            cache.abandon(partial)
        raise
    del first
    counts = [row[0] for row in done]
    if partial is None:
        return memory["images"], memory["masks"], counts
    entry = {"frames": len(pairs), "height": height, "width": width, "frame_digests": frame_hex,
             "pixel_counts": counts,
             "files": {name: {"digest": hashlib.sha256(b"".join(row[column] for row in done)).hexdigest()}
                       for column, name in ((1, "images"), (2, "masks"))}}
    images, masks = cache.finish(partial, digest, entry)
    return images, masks, counts


def _used_pairs(split_dir: Path, frames: int) -> list:
    """The first ``frames`` frame pairs (all when 0) of a split, refusing a count it does not have."""
    pairs = pair_frames(split_dir)
    if frames < 0:
        raise Refused(f"frames={frames}: expected 0 (all) or a positive count")
    if frames > len(pairs):
        raise Refused(f"frames={frames} is larger than split {split_dir}, which has {len(pairs)} frames")
    return pairs[:frames or len(pairs)]


def _digest(frame_hex: list) -> str:
    """The split's digest, the one MLflow records: sha256 over its frames' digests, first 16 hex digits."""
    return hashlib.sha256(b"".join(bytes.fromhex(h) for h in frame_hex)).hexdigest()[:16]


def split_digest(split_dir, frames: int = 0, workers: int = 8) -> str:
    """The digest ``load_split`` records for these frames, without decoding them (a sweep's check of a run)."""
    split_dir = Path(split_dir)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return _digest(frame_digests(split_dir, _used_pairs(split_dir, frames), pool))


def load_split(split_dir, frames: int = 0, workers: int = 8) -> Split:
    """The first ``frames`` frames (all when 0) of a split as uint8 tensors, checked.

    The digest (names and bytes of every file used) comes first, from the digest index for files
    unchanged since it was taken. Decoded once, a split is then read memory-mapped from the disk
    cache (``regolith.cache``): a second run decodes no PNG and holds no copy of the pixels, and
    ``frames=K`` reads the first K frames of a cached full split.
    """
    split_dir = Path(split_dir)
    cache.max_bytes()  # a bad REGOLITH_CACHE_MAX_GB is refused before any file is read, not after the decode
    pairs = _used_pairs(split_dir, frames)
    # PIL's PNG decoder, file reads, pwrite and sha256 release the GIL, so threads work in parallel.
    with ThreadPoolExecutor(max_workers=workers) as pool:
        frame_hex = frame_digests(split_dir, pairs, pool)
        digest = _digest(frame_hex)
        cached = cache.find(frame_hex)
        images, masks, per_frame = cached if cached else _decode_into(pairs, digest, frame_hex, pool)
    counts = [int(sum(column)) for column in zip(*per_frame)]
    split = Split(
        path=split_dir,
        names=[rgb_path.stem.split("_", 1)[1] for _, rgb_path, _ in pairs],
        images=cache.as_tensor(images),
        masks=cache.as_tensor(masks),
        digest=digest,
        pixel_counts=counts,
        maps={"images": images, "masks": masks} if isinstance(images, np.memmap) else None,
    )
    absent = [name for name, count in zip(CLASSES, counts) if count == 0]
    if absent:
        raise Refused(f"split {split_dir}: class {', '.join(absent)} has zero pixels in the {split.frames} "
                        f"frames used; IoU and class weights need every class present")
    return split


def to_rgb8(image: Image.Image) -> np.ndarray:
    """A decoded PIL image -> H x W x 3 uint8, whatever its mode.

    16-bit grayscale (PIL modes I;16, I;16B, I;16L and I) is scaled, 65535 -> 255, where PIL's own
    convert would clip every value above 255 to white; 16-bit RGB PNGs PIL already opens as 8-bit
    RGB by keeping the high byte. An image with an alpha channel (RGBA, LA, a palette with
    transparency) is composited on black; CMYK and everything else go through PIL's convert.
    """
    if image.mode in SIXTEEN_BIT_GRAY:
        # Mode I (32-bit) is how older PIL opened 16-bit PNGs; its values are read as 16-bit too.
        gray = np.clip(np.asarray(image).astype(np.int64), 0, 65535)
        gray = ((gray * 255 + 32767) // 65535).astype(np.uint8)  # rounded, 65535 -> 255, 32768 -> 128
        return np.repeat(gray[..., None], 3, axis=-1)
    has_alpha = image.mode in ("RGBA", "RGBa", "LA", "La", "PA") or (
        image.mode == "P" and "transparency" in image.info)
    if has_alpha:
        rgba = np.asarray(image.convert("RGBA")).astype(np.uint32)
        alpha = rgba[..., 3:]
        return ((rgba[..., :3] * alpha + 127) // 255).astype(np.uint8)  # over black
    return np.asarray(image.convert("RGB")).copy()


def pixel_shares(pixel_counts) -> list:
    """Each class's share of the labelled (non-ignored) pixels."""
    total = sum(pixel_counts)
    return [count / total for count in pixel_counts]


def class_weights(pixel_counts) -> list:
    """Inverse pixel frequency, normalized to sum to the number of classes (the reference recipe)."""
    inverse = [1 / share for share in pixel_shares(pixel_counts)]
    return [len(inverse) * w / sum(inverse) for w in inverse]


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["convert"]:  # a split folder named "convert" is still reachable as ./convert
        print("error: conversion is its own verb now: python -m regolith.convert SRC DST --colors MAP ...",
              file=sys.stderr)
        sys.exit(2)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("split")
    parser.add_argument("--frames", type=int, default=0)
    args = parser.parse_args(argv)
    with refusals():
        split = load_split(args.split, args.frames)
    print(f"{split.path}: {split.frames} frames of {split.image_size[1]}x{split.image_size[0]}, "
          f"digest {split.digest}")
    for name, share, weight in zip(CLASSES, pixel_shares(split.pixel_counts), class_weights(split.pixel_counts)):
        print(f"  {name:9s} pixel share {share:.4f}  class weight {weight:.4f}")


if __name__ == "__main__":
    main()
