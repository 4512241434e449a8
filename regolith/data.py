"""Read a rendered split into memory, checking it on the way, and derive the class weights.

A split is a directory with ``rgb/rgb_NNNNN.png`` (8-bit RGB) and ``mask/mask_NNNNN.png``
(8-bit single channel: 0 regolith, 1 rock, 2 sky, 255 ignore), paired by index and read in
index order. Each split is decoded once into uint8 tensors (and cached on disk under its
digest, see ``cache_dir``); no PNG is decoded per step.
Everything that can be wrong with a split is found here, before any training starts, and
refused (``regolith.Refused``), naming the file and what was expected.

    python -m regolith.data SPLIT [--frames N]   # check a split and print its class shares
    python -m regolith.data convert SRC DST --colors MAP [--images P] [--masks P] [--tolerance 40]

``convert`` turns a labelled set with colour masks (public sets encode classes as colours)
into a split in this layout, so train, evaluate and compare use it like any other:

- SRC holds the images and the masks; ``--images`` and ``--masks`` name them relative to SRC,
  each a folder or a glob pattern (``real_moon_images/PCAM*.png``). The defaults are the
  "Artificial Lunar Rocky Landscape" set's own layout: ``images/render`` and ``images/clean``.
  Files ending .png, .jpg or .jpeg (any letter case) are used, other files ignored. An image
  and its mask are paired by the last number in their file names (render0042.png and
  clean0042.png are frame 42), written as DST/rgb/rgb_00042.png and DST/mask/mask_00042.png.
- MAP is ``alrl`` (built in: black regolith, green and blue rock, red sky) or a JSON file:
  ``{"#000000": "regolith", "#00ff00": "rock"}`` or ``[[[0, 255, 0], "rock"], ...]``, class
  names from regolith.CLASSES or ``ignore``. JSON, not YAML: no dependency beyond the standard
  library for a table of a few lines.
- Real masks are often anti-aliased or were saved as JPEG, so a pixel takes the nearest table
  colour within ``--tolerance`` (Euclidean distance in 8-bit RGB, default 40; 0 matches only
  exact colours). A pixel no table colour is that near becomes 255 (ignore) and is counted:
  the report at the end gives their share and the most common such colours.
- Refused, naming the file: an image or mask without its partner, two files with one number,
  a mask of another size than its image, frames of different sizes (a split has one), an
  unreadable file, an unknown MAP name or a malformed MAP file, and a DST that exists and is
  not empty (nothing is ever overwritten). DST is written under a temporary name beside it and
  renamed when complete, so a failed conversion leaves no half split. The images are taken
  pixel for pixel as stored (no EXIF rotation, which the masks would not follow) and made
  8-bit RGB as regolith.photos does; the colour table and counts go to DST/convert.json.
"""

import argparse
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from regolith import CLASSES, IGNORE_INDEX, Refused, refusals

# SegformerImageProcessor's defaults (ImageNet statistics), which nvidia/mit-b0 was trained with.
PREPROCESSING = {"rescale": 1 / 255, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}

VALID_LABELS = (*range(len(CLASSES)), IGNORE_INDEX)


@dataclass
class Split:
    path: Path
    names: list  # frame stems in index order, e.g. "00042"
    images: torch.Tensor  # N x 3 x H x W, uint8
    masks: torch.Tensor  # N x H x W, uint8
    digest: str  # sha256 over the names and bytes of every file used, first 16 hex digits
    pixel_counts: list  # labelled pixels per class, 255 excluded

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


def cache_dir() -> Path | None:
    """Where decoded splits are kept, keyed by digest: ``REGOLITH_CACHE_DIR`` (``off`` disables it)."""
    configured = os.environ.get("REGOLITH_CACHE_DIR", str(Path.home() / ".cache" / "regolith" / "splits"))
    return None if configured.lower() in ("", "off", "0") else Path(configured)


def _read_cache(digest: str, frames: int):
    path = cache_dir() / f"{digest}.npz" if cache_dir() else None
    if path is None or not path.exists():
        return None
    try:
        with np.load(path) as cached:
            images, masks = cached["images"], cached["masks"]
        if len(images) == len(masks) == frames:
            return images, masks
    except Exception:
        pass  # a torn or foreign cache file is only a miss: decode again and rewrite it
    return None


def _write_cache(digest: str, images: np.ndarray, masks: np.ndarray):
    folder = cache_dir()
    if folder is None:
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        partial = folder / f"{digest}.{os.getpid()}.partial.npz"
        np.savez(partial, images=images, masks=masks)
        os.replace(partial, folder / f"{digest}.npz")
    except OSError as error:  # a full or read-only disk costs the next run a decode, nothing more
        print(f"warning: could not cache split {digest} in {folder}: {error}")


def load_split(split_dir, frames: int = 0, workers: int = 8) -> Split:
    """Decode the first ``frames`` frames (all when 0) of a split into uint8 tensors, checked.

    The digest (names and bytes of every file used) is computed first; a split decoded before
    is then read from the disk cache under that digest, so a second run skips PNG decoding.
    """
    split_dir = Path(split_dir)
    pairs = pair_frames(split_dir)
    if frames < 0:
        raise Refused(f"frames={frames}: expected 0 (all) or a positive count")
    if frames > len(pairs):
        raise Refused(f"frames={frames} is larger than split {split_dir}, which has {len(pairs)} frames")
    pairs = pairs[:frames or len(pairs)]
    # PIL's PNG decoder, file reads and sha256 release the GIL, so threads work in parallel.
    with ThreadPoolExecutor(max_workers=workers) as pool:
        split_digest = hashlib.sha256(b"".join(pool.map(lambda p: _frame_digest(p[1], p[2]), pairs)))
        digest = split_digest.hexdigest()[:16]
        cached = _read_cache(digest, len(pairs))
        if cached:
            images, masks = cached
        else:
            decoded = list(pool.map(lambda p: _decode_frame(p[1], p[2]), pairs))
    if not cached:
        height, width = decoded[0][1].shape
        images = np.empty((len(pairs), 3, height, width), dtype=np.uint8)
        masks = np.empty((len(pairs), height, width), dtype=np.uint8)
        for n, ((_, rgb_path, _), (rgb, mask)) in enumerate(zip(pairs, decoded)):
            if mask.shape != (height, width):
                raise Refused(f"{rgb_path}: frame is {mask.shape[1]}x{mask.shape[0]} but the split's first "
                                f"frame {pairs[0][1].name} is {width}x{height}; a split must have one frame size")
            images[n], masks[n] = rgb.transpose(2, 0, 1), mask
        _write_cache(digest, images, masks)
    masks_t = torch.from_numpy(masks)
    counts = torch.bincount(masks_t.reshape(-1).long(), minlength=256)[: len(CLASSES)].tolist()
    split = Split(
        path=split_dir,
        names=[rgb_path.stem.split("_", 1)[1] for _, rgb_path, _ in pairs],
        images=torch.from_numpy(images),
        masks=masks_t,
        digest=digest,
        pixel_counts=counts,
    )
    absent = [name for name, count in zip(CLASSES, counts) if count == 0]
    if absent:
        raise Refused(f"split {split_dir}: class {', '.join(absent)} has zero pixels in the {split.frames} "
                        f"frames used; IoU and class weights need every class present")
    return split


def pixel_shares(pixel_counts) -> list:
    """Each class's share of the labelled (non-ignored) pixels."""
    total = sum(pixel_counts)
    return [count / total for count in pixel_counts]


def class_weights(pixel_counts) -> list:
    """Inverse pixel frequency, normalized to sum to the number of classes (the reference recipe)."""
    inverse = [1 / share for share in pixel_shares(pixel_counts)]
    return [len(inverse) * w / sum(inverse) for w in inverse]


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 N x 3 x H x W -> float32 model input, on whatever device ``images`` is on."""
    mean = torch.tensor(PREPROCESSING["mean"], device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(PREPROCESSING["std"], device=images.device).view(1, 3, 1, 1)
    return (images.float() * PREPROCESSING["rescale"] - mean) / std


# ---- convert: a labelled set with colour masks -> a split ----

# "Artificial Lunar Rocky Landscape" (Pessia, Kaggle): black ground, green small rocks, blue
# large rocks, red sky; any other colour is ignored.
COLOUR_MAPS = {"alrl": {"#000000": "regolith", "#00ff00": "rock", "#0000ff": "rock", "#ff0000": "sky"}}
CONVERT_SUFFIXES = (".png", ".jpg", ".jpeg")
DEFAULT_TOLERANCE = 40.0  # JPEG noise stays well inside it; a half-and-half edge pixel falls outside
IGNORE_NAME = "ignore"


def _parse_colour(value, where: str) -> tuple:
    """"#00ff00" or [0, 255, 0] -> (0, 255, 0)."""
    if isinstance(value, str) and re.fullmatch(r"#[0-9a-fA-F]{6}", value.strip()):
        return tuple(int(value.strip()[i:i + 2], 16) for i in (1, 3, 5))
    if (isinstance(value, list) and len(value) == 3
            and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in value)):
        return tuple(value)
    raise Refused(f"{where}: colour {value!r} is neither \"#rrggbb\" nor [r, g, b] with values 0-255")


def colour_table(spec: str) -> tuple:
    """(name shown in the report, {(r, g, b): class id or IGNORE_INDEX}) from a built-in name or a JSON file."""
    if spec in COLOUR_MAPS:
        entries, where = list(COLOUR_MAPS[spec].items()), f"built-in colour map {spec}"
    else:
        path = Path(spec)
        if not path.is_file():
            raise Refused(f"--colors {spec}: neither a built-in colour map ({', '.join(COLOUR_MAPS)}) nor a file")
        try:
            loaded = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise Refused(f"colour map {path}: not readable JSON ({error})") from error
        if isinstance(loaded, dict):
            entries = list(loaded.items())
        elif isinstance(loaded, list) and all(isinstance(e, list) and len(e) == 2 for e in loaded):
            entries = [tuple(e) for e in loaded]
        else:
            raise Refused(f"colour map {path}: expected an object {{\"#rrggbb\": class}} or a list of "
                          f"[colour, class] pairs")
        where = f"colour map {path}"
    names = {name: index for index, name in enumerate(CLASSES)} | {IGNORE_NAME: IGNORE_INDEX}
    table = {}
    for colour, name in entries:
        rgb = _parse_colour(colour, where)
        if name not in names:
            raise Refused(f"{where}: class {name!r} for colour {colour!r} is not one of {', '.join(names)}")
        if rgb in table and table[rgb] != names[name]:
            raise Refused(f"{where}: colour {colour!r} is given two classes")
        table[rgb] = names[name]
    if not table:
        raise Refused(f"{where}: no colours in it")
    return (spec if spec in COLOUR_MAPS else str(Path(spec).resolve())), table


def _frame_number(path: Path) -> int:
    numbers = re.findall(r"\d+", path.stem)
    if not numbers:
        raise Refused(f"{path}: no number in the file name (image and mask are paired by it)")
    return int(numbers[-1])


def _numbered_files(src: Path, pattern: str, what: str) -> dict:
    """{number: path} for the files ``pattern`` names under src: a folder, or a glob pattern."""
    folder = src / pattern
    try:
        paths = sorted(folder.iterdir()) if folder.is_dir() else sorted(src.glob(pattern))
    except (ValueError, NotImplementedError) as error:  # pathlib refuses absolute or empty patterns
        raise Refused(f"--{what}s {pattern!r}: expected a folder or a glob pattern relative to {src} ({error})") \
            from error
    found = {}
    for path in paths:
        if not path.is_file() or path.suffix.lower() not in CONVERT_SUFFIXES:
            continue
        number = _frame_number(path)
        if number in found:
            raise Refused(f"{path}: {what} number {number} also used by {found[number].name}; "
                          f"name the files apart with --{what}s (a folder or a pattern such as PCAM*.png)")
        found[number] = path
    if not found:
        raise Refused(f"{src / pattern}: no {what} files (.png, .jpg or .jpeg) there; set --{what}s, "
                      f"relative to {src}")
    return found


def convert_pairs(src: Path, images: str, masks: str) -> list:
    """(number, image path, mask path) in number order; refuses unpaired files and mixed frame sizes."""
    src = Path(src)
    if not src.is_dir():
        raise Refused(f"convert source {src}: no such directory")
    found_images, found_masks = _numbered_files(src, images, "image"), _numbered_files(src, masks, "mask")
    unpaired = sorted(set(found_images) ^ set(found_masks))
    if unpaired:
        shown = [str(found_images.get(n) or found_masks.get(n)) for n in unpaired[:5]]
        raise Refused(f"{len(unpaired)} file(s) without a partner (every image needs a mask with the same "
                      f"number, and the other way round): {', '.join(shown)}" + (" ..." if len(unpaired) > 5 else ""))
    pairs = [(n, found_images[n], found_masks[n]) for n in sorted(found_images)]
    first_size = None
    for number, image_path, mask_path in pairs:  # headers only: refused before any pixel is decoded
        image_size, mask_size = _image_size(image_path), _image_size(mask_path)
        if image_size != mask_size:
            raise Refused(f"{mask_path}: mask is {mask_size[0]}x{mask_size[1]} but its image {image_path.name} "
                          f"is {image_size[0]}x{image_size[1]} (width x height)")
        first_size = first_size or (image_size, image_path)
        if image_size != first_size[0]:
            raise Refused(f"{image_path}: {image_size[0]}x{image_size[1]} but {first_size[1].name} is "
                          f"{first_size[0][0]}x{first_size[0][1]}; a split has one frame size, so convert "
                          f"frames of each size into a split of their own")
    return pairs


def _image_size(path: Path) -> tuple:
    try:
        with Image.open(path) as image:
            return image.size
    except Exception as error:  # PIL raises many types for damaged files
        raise Refused(f"{path}: unreadable image ({error})") from error


def _decode_pair(image_path: Path, mask_path: Path) -> tuple:
    """(H x W x 3 uint8 image, H x W x 3 uint8 mask colours), each refused by name if it does not decode."""
    # The photographs' 8-bit conversion, imported here: training reads splits and never needs
    # photos' scipy and matplotlib.
    from regolith.photos import to_rgb8
    try:
        with Image.open(image_path) as image:
            image.load()
            rgb = to_rgb8(image)
    except Exception as error:
        raise Refused(f"{image_path}: unreadable image ({error})") from error
    try:
        with Image.open(mask_path) as mask:
            mask.load()
            if mask.mode not in ("RGB", "RGBA", "P", "PA", "L", "LA", "1"):
                raise Refused(f"{mask_path}: expected an 8-bit colour mask, found PIL mode {mask.mode}")
            # A mask's colour is its label whatever its alpha, so alpha is dropped, not composited.
            colours = np.asarray(mask.convert("RGB"))
    except Refused:
        raise
    except Exception as error:
        raise Refused(f"{mask_path}: unreadable mask ({error})") from error
    return rgb, colours


def colours_to_labels(colours: np.ndarray, table: dict, tolerance: float) -> tuple:
    """H x W x 3 mask colours -> (H x W uint8 labels, Counter of the packed 0xRRGGBB colours no entry claimed)."""
    palette = np.array(list(table), np.float32)
    labels_of = np.array(list(table.values()), np.uint8)
    distance = np.linalg.norm(colours[..., None, :].astype(np.float32) - palette, axis=-1)
    nearest = distance.argmin(-1)
    named = np.take_along_axis(distance, nearest[..., None], -1)[..., 0] <= tolerance
    labels = np.where(named, labels_of[nearest], IGNORE_INDEX).astype(np.uint8)
    packed = colours[~named].astype(np.uint32)
    values, counts = np.unique((packed[:, 0] << 16) | (packed[:, 1] << 8) | packed[:, 2], return_counts=True)
    return labels, Counter(dict(zip(values.tolist(), counts.tolist())))


def _convert_frame(number: int, image_path: Path, mask_path: Path, table: dict, tolerance: float,
                   split_dir: Path) -> tuple:
    """Write one frame in the split layout; returns (label pixel counts, unnamed colours)."""
    rgb, colours = _decode_pair(image_path, mask_path)
    labels, unnamed = colours_to_labels(colours, table, tolerance)
    Image.fromarray(rgb, "RGB").save(split_dir / "rgb" / f"rgb_{number:05d}.png")
    Image.fromarray(labels, "L").save(split_dir / "mask" / f"mask_{number:05d}.png")
    return np.bincount(labels.ravel(), minlength=256), unnamed


def convert(src, dst, colors: str, images: str = "images/render", masks: str = "images/clean",
            tolerance: float = DEFAULT_TOLERANCE, workers: int = 8) -> dict:
    """Write the split DST from the labelled set SRC (see the module docstring); returns the report.

    The report: frames, frame size, pixels, class pixel counts, unnamed pixel count and the
    unnamed colours with their counts, most common first; it is also written to DST/convert.json.
    """
    src, dst = Path(src), Path(dst)
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise Refused(f"convert destination {dst}: exists and is not empty (nothing is overwritten; "
                      f"give a new folder)")
    if tolerance < 0:
        raise Refused(f"--tolerance {tolerance}: expected 0 (exact colours) or a positive RGB distance")
    map_name, table = colour_table(colors)
    pairs = convert_pairs(src, images, masks)
    dst.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dst.name}.partial-", dir=dst.parent))
    try:
        (staging / "rgb").mkdir()
        (staging / "mask").mkdir()

        counts, unnamed = np.zeros(256, np.int64), Counter()
        # PIL decodes and encodes outside the GIL, so threads work in parallel (as in load_split).
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for frame_counts, frame_unnamed in pool.map(
                    lambda pair: _convert_frame(*pair, table, tolerance, staging), pairs):
                counts += frame_counts
                unnamed.update(frame_unnamed)
        width, height = _image_size(pairs[0][1])
        report = {
            "source": str(src.resolve()), "images": images, "masks": masks, "colour_map": map_name,
            "colours": {"#{:02x}{:02x}{:02x}".format(*rgb): (CLASSES[c] if c != IGNORE_INDEX else IGNORE_NAME)
                        for rgb, c in table.items()},
            "tolerance": tolerance, "frames": len(pairs), "frame_size": [width, height],
            "pixels": int(counts.sum()),
            "class_pixels": {name: int(counts[i]) for i, name in enumerate(CLASSES)},
            "ignored_pixels": int(counts[IGNORE_INDEX]), "unnamed_pixels": int(sum(unnamed.values())),
            "unnamed_colours": {f"#{value:06x}": n for value, n in unnamed.most_common(20)},
            "pairs": [[n, os.path.relpath(i, src), os.path.relpath(m, src)] for n, i, m in pairs],
        }
        (staging / "convert.json").write_text(json.dumps(report, indent=1) + "\n")
        if dst.exists():
            dst.rmdir()  # empty, checked above; rename would not replace it on every platform
        os.rename(staging, dst)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return report


def print_convert_report(report: dict, dst):
    width, height = report["frame_size"]
    print(f"{dst}: {report['frames']} frames of {width}x{height} from {report['source']} "
          f"(images {report['images']}, masks {report['masks']}), colour map {report['colour_map']}, "
          f"tolerance {report['tolerance']:g}")
    pixels = report["pixels"]
    for name, count in report["class_pixels"].items():
        print(f"  {name:9s} {count / pixels:7.2%} of pixels")
    unnamed = report["unnamed_pixels"]
    print(f"  unnamed colours -> {IGNORE_INDEX}: {unnamed} pixels, {unnamed / pixels:.2%}"
          + ("; most common: " + ", ".join(f"{c} ({n})" for c, n in list(report["unnamed_colours"].items())[:5])
             if unnamed else ""))
    absent = [name for name, count in report["class_pixels"].items() if count == 0]
    if absent:
        print(f"  note: no {', '.join(absent)} pixels; load_split refuses a split without every class")
    print(f"check it: python -m regolith.data {dst}")


def convert_main(argv):
    parser = argparse.ArgumentParser(prog="python -m regolith.data convert",
                                     description="Turn a labelled set with colour masks into a split "
                                                 "(see python -m regolith.data --help).")
    parser.add_argument("src", help="folder holding the images and the colour masks")
    parser.add_argument("dst", help="the split to write: a new or empty folder")
    parser.add_argument("--colors", required=True,
                        help=f"built-in colour map ({', '.join(COLOUR_MAPS)}) or a JSON file")
    parser.add_argument("--images", default="images/render", help="images under SRC: a folder or a glob pattern")
    parser.add_argument("--masks", default="images/clean", help="colour masks under SRC: a folder or a glob pattern")
    parser.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                        help="largest RGB distance to a table colour; 0 matches exact colours only")
    args = parser.parse_args(argv)
    with refusals():
        report = convert(args.src, args.dst, args.colors, args.images, args.masks, args.tolerance)
    print_convert_report(report, args.dst)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["convert"]:  # a split folder named "convert" is still reachable as ./convert
        return convert_main(argv[1:])
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
