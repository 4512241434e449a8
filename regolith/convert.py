"""Turn a labelled set with colour masks (public sets encode classes as colours) into a split in regolith's layout.

    python -m regolith.convert SRC DST --colors MAP [--images P] [--masks P] [--tolerance 40]

Train, evaluate and compare then use DST like any other split (``regolith.data``).

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
  8-bit RGB as regolith.photos does (``data.to_rgb8``); the colour table and counts go to DST/convert.json.
"""

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from regolith import CLASSES, IGNORE_INDEX, Refused, data, refusals

# "Artificial Lunar Rocky Landscape" (Pessia, Kaggle): black ground, green small rocks, blue
# large rocks, red sky; any other colour is ignored.
COLOUR_MAPS = {"alrl": {"#000000": "regolith", "#00ff00": "rock", "#0000ff": "rock", "#ff0000": "sky"}}
CONVERT_SUFFIXES = (".png", ".jpg", ".jpeg")
DEFAULT_TOLERANCE = 40.0  # JPEG noise stays well inside it; a half-and-half edge pixel falls outside
IGNORE_NAME = "ignore"
MATCH_BLOCK = 1 << 18  # distinct colours x table entries matched at once: 12 MB of float32 differences
PROGRESS_FRAMES = 200  # from this many frames a conversion shows a bar (on a terminal)


def _parse_colour(value, where: str) -> tuple:
    """"#00ff00" or [0, 255, 0] -> (0, 255, 0)."""
    if isinstance(value, str) and re.fullmatch(r"#[0-9a-fA-F]{6}", value.strip()):
        return tuple(int(value.strip()[i:i + 2], 16) for i in (1, 3, 5))
    if (isinstance(value, list) and len(value) == 3
            and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in value)):
        return tuple(value)
    raise Refused(f"{where}: colour {value!r} is neither \"#rrggbb\" nor [r, g, b] with values 0-255")


class _Pairs(list):
    """A JSON object's (key, value) pairs in file order, duplicates kept (``object_pairs_hook``)."""


def colour_table(spec: str) -> tuple:
    """(name shown in the report, {(r, g, b): class id or IGNORE_INDEX}) from a built-in name or a JSON file."""
    if spec in COLOUR_MAPS:
        entries, where = list(COLOUR_MAPS[spec].items()), f"built-in colour map {spec}"
    else:
        path = Path(spec)
        if not path.is_file():
            raise Refused(f"--colors {spec}: neither a built-in colour map ({', '.join(COLOUR_MAPS)}) nor a file")
        try:
            # As pairs, not a dict: json.loads would keep only the last of two equal keys, so a colour
            # given twice ("#00ff00": "rock", then "sky") would silently take the last class.
            loaded = json.loads(path.read_text(), object_pairs_hook=_Pairs)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise Refused(f"colour map {path}: not readable JSON ({error})") from error
        except RecursionError as error:  # json's decoder recurses once per level of nesting
            raise Refused(f"colour map {path}: nested too deeply to be a colour table") from error
        if isinstance(loaded, _Pairs):
            entries = list(loaded)
        elif isinstance(loaded, list) and all(type(e) is list and len(e) == 2 for e in loaded):
            entries = [tuple(e) for e in loaded]
        else:
            raise Refused(f"colour map {path}: expected an object {{\"#rrggbb\": class}} or a list of "
                          f"[colour, class] pairs")
        where = f"colour map {path}"
    names = {name: index for index, name in enumerate(CLASSES)} | {IGNORE_NAME: IGNORE_INDEX}
    table, seen = {}, {}
    for colour, name in entries:
        rgb = _parse_colour(colour, where)
        if not isinstance(name, str) or name not in names:
            raise Refused(f"{where}: class {name!r} for colour {colour!r} is not one of {', '.join(names)}")
        if rgb in table and table[rgb] != names[name]:
            raise Refused(f"{where}: colour {colour!r} is given two classes ({seen[rgb]!r}, then {name!r}); "
                          f"a colour names one class")
        seen[rgb] = name
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
    try:
        with Image.open(image_path) as image:
            image.load()
            rgb = data.to_rgb8(image)
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
    # Each distinct colour is matched once, in blocks: memory stays bounded whatever the table's size
    # (every pixel against 256 colours at once took 3 GiB per 1024x1024 frame).
    packed = ((colours[..., 0].astype(np.uint32) << 16) | (colours[..., 1].astype(np.uint32) << 8)
              | colours[..., 2]).ravel()
    values, inverse, counts = np.unique(packed, return_inverse=True, return_counts=True)
    rgb = np.stack([(values >> 16) & 255, (values >> 8) & 255, values & 255], -1).astype(np.float32)
    value_labels, named = np.empty(len(values), np.uint8), np.empty(len(values), bool)
    block = max(1, MATCH_BLOCK // len(palette))
    for start in range(0, len(values), block):
        distance = np.linalg.norm(rgb[start:start + block, None, :] - palette, axis=-1)
        nearest = distance.argmin(-1)
        named[start:start + block] = distance[np.arange(len(nearest)), nearest] <= tolerance
        value_labels[start:start + block] = np.where(named[start:start + block], labels_of[nearest], IGNORE_INDEX)
    unnamed = ~named  # colours no entry claimed (an "ignore" entry's colour is named)
    labels = value_labels[inverse].reshape(colours.shape[:2])
    return labels, Counter(dict(zip(values[unnamed].tolist(), counts[unnamed].tolist())))


def _convert_frame(number: int, image_path: Path, mask_path: Path, table: dict, tolerance: float,
                   split_dir: Path) -> tuple:
    """Write one frame in the split layout; returns (label pixel counts, unnamed colours)."""
    rgb, colours = _decode_pair(image_path, mask_path)
    labels, unnamed = colours_to_labels(colours, table, tolerance)
    Image.fromarray(rgb, "RGB").save(split_dir / "rgb" / f"rgb_{number:05d}.png")
    Image.fromarray(labels, "L").save(split_dir / "mask" / f"mask_{number:05d}.png")
    return np.bincount(labels.ravel(), minlength=256), unnamed


def check_destination(dst: Path):
    """DST must be a new or empty folder that can be made where it is named, checked before any pixel is decoded."""
    if dst.is_symlink():  # the finished split is renamed into place, which a link would not take
        raise Refused(f"convert destination {dst}: a symbolic link (to {os.readlink(dst)}); give the folder's own "
                      f"path")
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise Refused(f"convert destination {dst}: exists and is not empty (nothing is overwritten; "
                      f"give a new folder)")
    above = next(parent for parent in dst.absolute().parents if parent.exists())
    if not above.is_dir():
        raise Refused(f"convert destination {dst}: under {above}, which is a file, not a folder")


def convert(src, dst, colors: str, images: str = "images/render", masks: str = "images/clean",
            tolerance: float = DEFAULT_TOLERANCE, workers: int = 8) -> dict:
    """Write the split DST from the labelled set SRC (see the module docstring); returns the report.

    The report: frames, frame size, pixels, class pixel counts, unnamed pixel count and the
    unnamed colours with their counts, most common first; it is also written to DST/convert.json.
    """
    src, dst = Path(src), Path(dst)
    check_destination(dst)
    if not tolerance >= 0:  # also NaN, which no distance is within: every pixel would become 255
        raise Refused(f"--tolerance {tolerance}: expected 0 (exact colours) or a positive RGB distance")
    map_name, table = colour_table(colors)
    pairs = convert_pairs(src, images, masks)
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise Refused(f"convert destination {dst}: cannot make its folder {dst.parent} ({error.strerror})") from error
    staging = Path(tempfile.mkdtemp(prefix=f".{dst.name}.partial-", dir=dst.parent))
    try:
        (staging / "rgb").mkdir()
        (staging / "mask").mkdir()

        counts, unnamed = np.zeros(256, np.int64), Counter()
        # PIL decodes and encodes outside the GIL, so threads work in parallel (as in load_split); no more
        # threads than frames. A large set shows a bar over frames on a terminal.
        with ThreadPoolExecutor(max_workers=max(1, min(workers, len(pairs)))) as pool, \
                tqdm(total=len(pairs), desc="convert", unit="frame", file=sys.stderr, leave=False,
                     disable=True if len(pairs) < PROGRESS_FRAMES else None) as bar:
            for frame_counts, frame_unnamed in pool.map(
                    lambda pair: _convert_frame(*pair, table, tolerance, staging), pairs):
                counts += frame_counts
                unnamed.update(frame_unnamed)
                bar.update()
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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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


if __name__ == "__main__":
    main()
