"""Real photographs, no masks: read them as found, fit them to the model's frame, measure the rock flood.

The study's question is what a checkpoint trained on rendered frames does on real photographs
of the Moon. Real photos have no masks, so there is no IoU; the measure is the share of each
photo's pixels predicted as rock, and the "rock flood" is its mean over the photos (synthetic
rock-IoU rose 0.815 -> 0.8521 while the share of real Apollo photos called rock rose 52% -> 83%).

This module holds the pure pieces, with no MLflow: reading a folder (``read_photos``), its
identity (``photo_set_digest``), fitting each photo to the square frame the model runs on
(``fit``, ``stack``), class shares over the photo's own pixels (``class_shares``), statistics
over photos (``set_statistics``, ``paired_difference``) and the pictures (``photo_panel``,
``contact_sheet``). Inference is the caller's: ``model.logits_at_mask_size`` on ``stack``'s
images, argmax over classes, one prediction per fitted frame. A sketch::

    photos, skipped, warnings = read_photos(folder)
    fitted = [fit(rgb, 512) for _, rgb in photos]
    images, valid = stack(fitted)
    predictions = model.logits_at_mask_size(net, images).argmax(1)
    shares = [class_shares(p, v) for p, v in zip(predictions, valid)]
    flood = set_statistics([s["rock"] for s in shares])

What counts as a photo: a file directly in the folder (subfolders are not searched) whose
suffix is .jpg, .jpeg or .png in any letter case, decoded as JPEG or PNG by its content
(a PNG named .jpg is read, with a warning). A file with such a suffix that does not decode
is skipped and named with the reason; so is a .tif/.tiff (not read here: convert it to PNG).
Files with any other suffix (README.txt, .DS_Store, thumbnails.db) are ignored silently.
Nothing in the folder is ever written.

Conversion to 8-bit RGB (``to_rgb8``): the EXIF orientation is applied first, as a viewer
would. 16-bit grayscale (PIL modes I;16, I;16B, I;16L and I) is scaled, 65535 -> 255, where
PIL's own convert would clip every value above 255 to white; 16-bit RGB PNGs PIL already
opens as 8-bit RGB by keeping the high byte. A photo with an alpha channel (RGBA, LA, a
palette with transparency) is composited on black: its transparent background then reads as
the letterbox bars and the lunar sky do, and counts in the shares as a black sky or ground
would (only the letterbox bars are left out of the shares). CMYK and everything else go
through PIL's convert.

Fitting (``fit``): ``letterbox`` (the default) scales the long side to the frame and pads the
rest black, and marks which pixels are the photo's own: the shares count only those, so a
panorama's bars never count as regolith or rock (the original tool's shares included them).
``cover`` scales the short side to the frame and centre-crops, losing the photo's ends.
"""

import argparse
import csv
import hashlib
import io
import json
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from regolith import CLASSES, Refused, data, figures, model as segformer, names, refusals, stats, track

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png")
# Named when skipped rather than ignored: a folder of scans is often TIFF, and silence would
# leave the user wondering where their photos went.
UNREAD_SUFFIXES = (".tif", ".tiff")
# MPO is how PIL reports a camera JPEG that carries a second (preview or stereo) picture.
PHOTO_FORMATS = {"JPEG": "JPEG", "MPO": "JPEG", "PNG": "PNG"}
SIGNATURES = {"PNG": b"\x89PNG\r\n\x1a\n", "JPEG": b"\xff\xd8\xff"}  # first bytes, to name a damaged file
FIT_MODES = ("letterbox", "cover")
CLASS_IDS = tuple(range(len(CLASSES)))
SIXTEEN_BIT_GRAY = ("I;16", "I;16B", "I;16L", "I;16N", "I")


# ---- reading ----

@contextmanager
def _truncated_images_allowed():
    """PIL's LOAD_TRUNCATED_IMAGES for one load only; a process-wide switch left on would hide damage elsewhere."""
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = True
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous


def to_rgb8(image: Image.Image) -> np.ndarray:
    """A decoded PIL image -> H x W x 3 uint8, whatever its mode (see the module docstring)."""
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


def read_photo(path) -> tuple:
    """(H x W x 3 uint8, warnings) for one photo file; raises ``Refused`` saying why it cannot be read.

    The bytes are read once and decoded from memory. A truncated file is decoded as far as it
    goes (the decoder fills the rest, grey for JPEG) with a warning naming it.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise Refused(f"{path}: unreadable ({error.strerror or error})") from error
    return _decode_photo(path, raw)


def _decode_photo(path: Path, raw: bytes) -> tuple:
    if not raw:
        raise Refused(f"{path}: empty file (0 bytes)")
    warnings = []
    signature = next((kind for kind, magic in SIGNATURES.items() if raw.startswith(magic)), None)
    try:
        image = Image.open(io.BytesIO(raw))
    except Exception as error:  # PIL raises many types for unknown or damaged headers
        if signature:  # PIL's own words for an unidentified file name only its BytesIO
            detail = "" if isinstance(error, UnidentifiedImageError) else f" ({error})"
            raise Refused(f"{path}: a {signature} whose header is cut short or damaged{detail}") from error
        if isinstance(error, UnidentifiedImageError):
            raise Refused(f"{path}: not an image (content not recognised as JPEG or PNG; starts {raw[:8]!r})") \
                from error
        raise Refused(f"{path}: unreadable image header ({error})") from error
    kind = PHOTO_FORMATS.get(image.format)
    if kind is None:
        raise Refused(f"{path}: a {image.format} file by its content, expected JPEG or PNG")
    if (path.suffix.lower() == ".png") != (kind == "PNG"):
        warnings.append(f"{path.name}: a {kind} file named {path.suffix}; read as {kind}")
    try:
        try:
            image.load()
        except OSError as error:
            if "truncated" not in str(error):
                raise
            image = Image.open(io.BytesIO(raw))
            with _truncated_images_allowed():
                image.load()
            warnings.append(f"{path.name}: truncated {kind} ({error}); read as far as it goes, "
                            f"the rest filled by the decoder")
        image = ImageOps.exif_transpose(image)
        return to_rgb8(image), warnings
    except Refused:
        raise
    except Exception as error:
        raise Refused(f"{path}: {kind} does not decode ({error})") from error


def photo_paths(folder) -> tuple:
    """(candidate photo paths, paths named as not read) in the folder, each sorted by file name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise Refused(f"photo folder {folder}: no such directory")
    candidates, unread = [], []
    for path in sorted(folder.iterdir(), key=lambda p: p.name):
        if not path.is_file():
            continue
        suffix = path.suffix.lower()
        if suffix in PHOTO_SUFFIXES:
            candidates.append(path)
        elif suffix in UNREAD_SUFFIXES:
            unread.append(path)
    return candidates, unread


def read_photos(folder) -> tuple:
    """Every photo in ``folder``: (photos, skipped, warnings).

    photos: [(file name, H x W x 3 uint8)] sorted by file name; skipped: [(file name, reason)]
    for files that looked like photos but could not be read; warnings: strings naming the file
    (a truncated photo read as far as it goes, a suffix that lies about the content). Refuses a
    folder with no readable photo, saying what was found there.
    """
    folder = Path(folder)
    candidates, unread = photo_paths(folder)
    photos, skipped, warnings = [], [], []
    for path in unread:
        skipped.append((path.name, f"{path.suffix} is not read (JPEG or PNG only); convert it to PNG"))
    for path in candidates:
        try:
            rgb, photo_warnings = read_photo(path)
        except Refused as reason:
            skipped.append((path.name, str(reason).removeprefix(f"{path}: ")))
            continue
        photos.append((path.name, rgb))
        warnings.extend(photo_warnings)
    skipped.sort()
    if not photos:
        found = "; ".join(f"{name}: {reason}" for name, reason in skipped[:5]) + (" ..." if len(skipped) > 5 else "")
        others = sum(1 for p in folder.iterdir()) - len(candidates) - len(unread)
        raise Refused(
            f"photo folder {folder}: no readable photo (expected .jpg, .jpeg or .png files holding JPEG or PNG); "
            + (f"{len(skipped)} skipped: {found}" if skipped else "no file with such a suffix")
            + f"; {others} other entr{'y' if others == 1 else 'ies'} ignored")
    return photos, skipped, warnings


def photo_set_digest(photos) -> str:
    """sha256 over the file names and bytes of a set of photos, first 16 hex digits (as a split's digest).

    ``photos`` is a list of paths, or a folder: then every .jpg, .jpeg and .png in it. To record
    exactly the photos a measurement used, pass ``[folder / name for name, _ in read_photos(folder)[0]]``.
    The folder's own name is not part of it: the same photos elsewhere have the same digest.
    """
    if isinstance(photos, (str, Path)):
        photos, _ = photo_paths(photos)
    digest = hashlib.sha256()
    for path in sorted((Path(p) for p in photos), key=lambda p: (p.name, str(p))):
        data.hash_file(digest, path, path.name)
    return digest.hexdigest()[:16]


# ---- fitting to the model's frame ----

def fit(rgb: np.ndarray, size: int, mode: str = "letterbox") -> tuple:
    """One photo (H x W x 3 uint8) -> (3 x size x size uint8 tensor, size x size bool tensor of its own pixels).

    letterbox: the long side scaled to ``size``, the photo centred, the rest black and not valid
    (``(~valid).sum()`` is the padding's pixel count). cover: the short side scaled to ``size``
    and the centre cropped square, every pixel valid. Resampling is PIL's bilinear, which
    widens its kernel when shrinking, so a large photo is averaged down rather than aliased.
    """
    if mode not in FIT_MODES:
        raise Refused(f"fit mode {mode!r}: expected one of {', '.join(FIT_MODES)}")
    if size < 1:
        raise Refused(f"fit size {size}: expected a positive number of pixels")
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"fit expects an H x W x 3 uint8 photo, got shape {rgb.shape} of {rgb.dtype}")
    image = Image.fromarray(rgb, "RGB")
    if mode == "cover":
        # ImageOps.fit crops in the photo's own pixels first, then scales: no rounding off the frame.
        fitted = np.asarray(ImageOps.fit(image, (size, size), method=Image.Resampling.BILINEAR))
        return torch.from_numpy(fitted.transpose(2, 0, 1).copy()), torch.ones(size, size, dtype=torch.bool)
    height, width = rgb.shape[:2]
    scale = size / max(height, width)
    new_w, new_h = max(1, min(size, round(width * scale))), max(1, min(size, round(height * scale)))
    scaled = np.asarray(image.resize((new_w, new_h), Image.Resampling.BILINEAR))
    top, left = (size - new_h) // 2, (size - new_w) // 2
    frame = np.zeros((size, size, 3), np.uint8)
    frame[top:top + new_h, left:left + new_w] = scaled
    valid = torch.zeros(size, size, dtype=torch.bool)
    valid[top:top + new_h, left:left + new_w] = True
    return torch.from_numpy(frame.transpose(2, 0, 1).copy()), valid


def stack(fitted: list) -> tuple:
    """[(image, valid)] from ``fit`` -> (N x 3 x S x S uint8, N x S x S bool), the batch the model takes."""
    if not fitted:
        raise ValueError("stack: no fitted photos")
    return torch.stack([image for image, _ in fitted]), torch.stack([valid for _, valid in fitted])


# ---- shares and statistics ----

def class_shares(prediction, valid) -> dict:
    """{regolith, rock, sky}: each class's share of the photo's own pixels (padding never counts); sums to 1."""
    prediction, valid = torch.as_tensor(prediction), torch.as_tensor(valid, dtype=torch.bool)
    if prediction.shape != valid.shape:
        raise ValueError(f"prediction is {tuple(prediction.shape)} but valid is {tuple(valid.shape)}")
    counted = prediction[valid].long()
    if counted.numel() == 0:
        raise ValueError("class_shares: no valid pixel (the photo covers none of the frame)")
    if counted.min() < 0 or counted.max() >= len(CLASSES):
        raise ValueError(f"prediction holds class ids outside 0..{len(CLASSES) - 1}")
    counts = torch.bincount(counted, minlength=len(CLASSES)).tolist()
    return {name: count / counted.numel() for name, count in zip(CLASSES, counts)}


def set_statistics(rock_shares, seed: int = 0) -> dict:
    """Rock share over a set of photos: photos, mean (the rock flood), min, max, interval.

    interval: the 95% percentile-bootstrap interval of the mean over photos (9999 resamples,
    seeded, so the same shares give the same interval), or None with one photo. It says how
    much the flood depends on which photos happened to be in the folder, nothing about pixels.
    """
    shares = np.asarray(rock_shares, dtype=float)
    if shares.ndim != 1 or shares.size == 0:
        raise ValueError(f"set_statistics: expected a non-empty list of per-photo rock shares, got {shares.shape}")
    return {"photos": int(shares.size), "mean": float(shares.mean()), "min": float(shares.min()),
            "max": float(shares.max()),
            "interval": stats.bootstrap((shares,), lambda x, axis: x.mean(axis=axis), seed)}


def paired_difference(a_shares, b_shares, seed: int = 0) -> dict:
    """Checkpoint a against b on the same photos (a_shares[i] and b_shares[i] are one photo).

    photos; mean: the mean of (a - b) rock share; interval: its 95% paired percentile-bootstrap
    interval (photos resampled together, so what both models find hard cancels), or None with
    one photo; a_more, b_more, ties: on how many photos each model calls more of it rock.
    """
    a, b = np.asarray(a_shares, dtype=float), np.asarray(b_shares, dtype=float)
    if a.ndim != 1 or a.shape != b.shape or a.size == 0:
        raise ValueError(f"paired_difference: expected two equally long, non-empty lists of per-photo shares, "
                         f"got {a.shape} and {b.shape}")
    return {"photos": int(a.size), "mean": float((a - b).mean()),
            "interval": stats.bootstrap((a, b), lambda x, y, axis: (x - y).mean(axis=axis), seed, paired=True),
            # One photo fitted the same way for both: equal shares are equal pixel counts, exactly.
            "a_more": int((a > b).sum()), "b_more": int((a < b).sum()), "ties": int((a == b).sum())}




# ---- a folder of photos through a checkpoint ----

def prepare(folder, size: int, mode: str = "letterbox") -> dict:
    """A folder of photos read and fitted for the model: names, images (N x 3 x S x S uint8), valid, digest, ...

    ``digest`` covers exactly the photos read (not the skipped ones); ``padding`` is each photo's
    count of padding pixels, which the shares leave out.
    """
    folder = Path(folder).resolve()
    found, skipped, warnings = read_photos(folder)
    images, valid = stack([fit(rgb, size, mode) for _, rgb in found])
    return {"folder": folder, "names": [name for name, _ in found], "images": images, "valid": valid,
            "digest": photo_set_digest([folder / name for name, _ in found]), "size": size, "fit": mode,
            "padding": (~valid).flatten(1).sum(1).tolist(), "skipped": skipped, "warnings": warnings}


def rock_flood(predictions: torch.Tensor, valid: torch.Tensor) -> tuple:
    """(per-photo class shares, set statistics of the rock share) of one checkpoint's predictions."""
    shares = [class_shares(prediction, photo_valid) for prediction, photo_valid in zip(predictions, valid)]
    return shares, set_statistics([share["rock"] for share in shares])


# ---- the verb: python -m regolith.photos -----------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    """Flags are the kebab-case twins of the MLproject ``photos`` parameters, with the same defaults."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True,
                        help="run id, run name in the experiment, or models:/regolith-segformer@<variant>")
    parser.add_argument("--images", required=True, help="folder of photographs (JPEG or PNG); nothing in it is written")
    parser.add_argument("--compare", default="", help="a second checkpoint, referred to as --run is, on the same photos")
    parser.add_argument("--fit", default="letterbox", choices=FIT_MODES,
                        help="letterbox: the long side to the training size, padded (padding never counts); "
                             "cover: centre-cropped square")
    parser.add_argument("--experiment", default="", help="experiment to look a run name up in; '' means the "
                                                          "active one (MLFLOW_EXPERIMENT_NAME, else Default)")
    return parser


def training_size(run: dict) -> int:
    """The square a checkpoint's photos are fitted to: its training frames' long side (param ``image_size``)."""
    try:
        return max(int(side) for side in run["params"]["image_size"].split("x"))
    except (KeyError, ValueError) as error:
        raise Refused(f"run {run['run_id']} ({run['run_name']}) records no image_size param (HxW); expected a "
                      f"training run of regolith.train") from error


def measure(args) -> dict:
    """Every checkpoint over every photo; everything recorded on each checkpoint's source run. Returns the summary."""
    runs = [track.find_run(args.run, args.experiment)]
    if args.compare:
        runs.append(track.find_run(args.compare, args.experiment))
        if runs[1]["run_id"] == runs[0]["run_id"]:
            raise Refused(f"--compare {args.compare!r} is the same run as --run {args.run!r}; give another checkpoint")
    track.label_launcher_run("photos", runs[0])
    with tempfile.TemporaryDirectory(prefix="regolith-photos-") as scratch:
        payloads = [segformer.load_checkpoint(track.download_checkpoint(run, Path(scratch) / run["run_id"]),
                                              f"run {run['run_id']} ({run['run_name']})") for run in runs]
    size = training_size(runs[0])
    photo_set = prepare(args.images, size, args.fit)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    checkpoints = []
    for run, payload in zip(runs, payloads):
        net = segformer.model_from_checkpoint(payload).to(device)
        # The precision its validation ran at; a checkpoint from before it was recorded ran bf16 exactly on CUDA.
        precision = payload.get("precision") or segformer.resolve_precision("auto", device)
        started = time.perf_counter()
        predictions = segformer.predict(net, photo_set["images"], precision, device)
        seconds = time.perf_counter() - started
        shares, flood = rock_flood(predictions, photo_set["valid"])
        checkpoints.append({"run": run, "label": run["run_name"], "epoch": payload.get("epoch"),
                            "precision": precision, "seconds": seconds, "predictions": predictions,
                            "shares": shares, "flood": flood})
    comparison = None
    if len(checkpoints) == 2:
        comparison = paired_difference(*([share["rock"] for share in c["shares"]] for c in checkpoints))
    summary = photo_summary(photo_set, checkpoints, comparison, device)
    with tempfile.TemporaryDirectory(prefix="regolith-real-") as staging:
        write_photo_files(Path(staging), photo_set, checkpoints, summary)
        for checkpoint in checkpoints:
            record_photos(checkpoint, photo_set, Path(staging))
    report_photos(summary, photo_set)
    return summary


def photo_summary(photo_set: dict, checkpoints: list, comparison: dict | None, device) -> dict:
    """The JSON of a measurement: the set, each checkpoint's flood and per-photo shares, the paired difference."""
    return {
        "images": str(photo_set["folder"]), "photos_digest": photo_set["digest"], "fit": photo_set["fit"],
        "size": photo_set["size"], "device": device.type, "skipped": photo_set["skipped"],
        "warnings": photo_set["warnings"],
        "shares_over": "each photo's own pixels; letterbox padding is never counted",
        "photos": [{"photo": name, "padding_pixels": padding}
                   for name, padding in zip(photo_set["names"], photo_set["padding"])],
        # shares[i]: photo i's {regolith, rock, sky}, over its own pixels
        "checkpoints": [{"run_id": c["run"]["run_id"], "run_name": c["run"]["run_name"], "ref": c["run"]["ref"],
                         "checkpoint": c["run"]["checkpoint_uri"], "epoch": c["epoch"], "precision": c["precision"],
                         "seconds": c["seconds"], "rock_share": c["flood"], "shares": c["shares"]}
                        for c in checkpoints],
        "comparison": comparison and {"run": checkpoints[0]["label"], "compare": checkpoints[1]["label"],
                                      "rock_share_difference": comparison},
        "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def write_photo_files(folder: Path, photo_set: dict, checkpoints: list, summary: dict):
    """photos.csv, photos.json, a panel per photo (panels/) and one contact sheet per checkpoint."""
    with (folder / "photos.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["photo", "padding_pixels", *(f"{c['label']}:{name}" for c in checkpoints for name in CLASSES)])
        for n, (name, padding) in enumerate(zip(photo_set["names"], photo_set["padding"])):
            writer.writerow([name, padding, *(f"{c['shares'][n][cls]:.6f}" for c in checkpoints for cls in CLASSES)])
    (folder / "photos.json").write_text(json.dumps(summary, indent=2) + "\n")
    (folder / "panels").mkdir()
    for n, name in enumerate(photo_set["names"]):
        figures.photo_panel(name, photo_set["images"][n], photo_set["valid"][n],
                            [(c["label"], c["predictions"][n], c["shares"][n]) for c in checkpoints],
                            folder / "panels" / f"{Path(name).stem}.png")
    for i, c in enumerate(checkpoints):
        flood = c["flood"]
        figures.contact_sheet(
            [(name, photo_set["images"][n], photo_set["valid"][n], c["predictions"][n], c["shares"][n]["rock"])
             for n, name in enumerate(photo_set["names"])],
            folder / ("contact_sheet.png" if i == 0 else f"contact_sheet_{c['label']}.png"),
            f"{c['label']} (epoch {c['epoch']}): rock on real photos, mean {flood['mean']:.1%} "
            f"(min {flood['min']:.1%}, max {flood['max']:.1%})")


def record_photos(checkpoint: dict, photo_set: dict, staging: Path):
    """On the checkpoint's source run, never overwriting: metrics at the checkpoint's epoch, tags, dataset, files."""
    run_id = checkpoint["run"]["run_id"]
    folder, _ = track.fresh_folder(run_id, names.REAL)
    flood = checkpoint["flood"]
    track.log_artifacts_to_run(run_id, staging, folder)
    track.log_dataset(photo_set["folder"], photo_set["digest"], "real", run_id=run_id)
    # Step: the epoch the checkpoint is from, so these sit beside a training run's own per-epoch real/ series.
    track.log_to_run(run_id, dict(zip(names.REAL_SET, (flood["mean"], flood["min"], flood["max"], flood["photos"]))),
                     {names.REAL_DIGEST: photo_set["digest"], names.REAL_ARTIFACTS: folder},
                     step=checkpoint["epoch"] or 0)
    checkpoint["artifacts"] = folder


def report_photos(summary: dict, photo_set: dict):
    print(f"{len(photo_set['names'])} photos from {photo_set['folder']} (digest {photo_set['digest']}), "
          f"{photo_set['fit']} to {photo_set['size']}x{photo_set['size']}; shares over each photo's own pixels")
    for warning in photo_set["warnings"]:
        print(f"warning: {warning}")
    for name, reason in photo_set["skipped"]:
        print(f"skipped {name}: {reason}")
    for checkpoint in summary["checkpoints"]:
        flood = checkpoint["rock_share"]
        interval = flood["interval"]
        print(f"{checkpoint['run_name']} ({checkpoint['run_id'][:8]}, epoch {checkpoint['epoch']}, "
              f"{checkpoint['precision']}): mean rock share {flood['mean']:.1%} (min {flood['min']:.1%}, max "
              f"{flood['max']:.1%}" + (f", 95% CI [{interval[0]:.1%}, {interval[1]:.1%}]" if interval else "")
              + f") in {checkpoint['seconds']:.2f}s on {summary['device']}")
    if summary["comparison"]:
        difference = summary["comparison"]["rock_share_difference"]
        interval = difference["interval"]
        run, other = summary["comparison"]["run"], summary["comparison"]["compare"]
        print(f"{run} - {other}: {difference['mean']:+.1%} rock share"
              + (f" (95% CI [{interval[0]:+.1%}, {interval[1]:+.1%}])" if interval else "")
              + f"; {run} calls more rock on {difference['a_more']} photos, {other} on {difference['b_more']}, "
              f"{difference['ties']} ties")
    print(f"logged {', '.join(names.REAL_SET)} and tag {names.REAL_DIGEST} to each run; artifacts in a new "
          f"{names.REAL}/<UTC time>/ folder: photos.csv, photos.json, panels/, contact_sheet.png")


def main(argv=None):
    with refusals():
        measure(build_parser().parse_args(argv))


if __name__ == "__main__":
    main()
