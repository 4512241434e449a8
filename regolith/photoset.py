"""A folder of real photographs, no masks: read as found, fitted to the model's frame, rock shares and their spread.

The study's question is what a checkpoint trained on rendered frames does on real photographs
of the Moon. Real photos have no masks, so there is no IoU; the measure is the share of each
photo's pixels predicted as rock, and the "rock flood" is its mean over the photos (synthetic
rock-IoU rose 0.815 -> 0.8521 while the share of real Apollo photos called rock rose 52% -> 83%).

This module holds the pure pieces, with no MLflow (the verb ``regolith.photos``, training's
``-P real_images``, compare and the served model ``regolith.serving`` use them): reading a folder
(``read_photos``) or one encoded image (``decode_photo``), its
identity (``photo_set_digest``), fitting each photo to the square frame the model runs on
(``fit``, ``stack``), class shares over the photo's own pixels (``class_shares``), statistics
over photos (``set_statistics``, ``paired_difference``); the pictures are ``regolith.figures``'
(``photo_panel``, ``contact_sheet``). Inference is the caller's: ``model.logits_at_mask_size`` on ``stack``'s
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

Conversion to 8-bit RGB (``data.to_rgb8``): the EXIF orientation is applied first, as a viewer
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

import hashlib
import io
import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from regolith import CLASSES, Refused, data, names, stats

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png")
# Named when skipped rather than ignored: a folder of scans is often TIFF, and silence would
# leave the user wondering where their photos went.
UNREAD_SUFFIXES = (".tif", ".tiff")
# MPO is how PIL reports a camera JPEG that carries a second (preview or stereo) picture.
PHOTO_FORMATS = {"JPEG": "JPEG", "MPO": "JPEG", "PNG": "PNG"}
SIGNATURES = {"PNG": b"\x89PNG\r\n\x1a\n", "JPEG": b"\xff\xd8\xff"}  # first bytes, to name a damaged file
FIT_MODES = ("letterbox", "cover")
# Where ImageOps.pad puts a letterboxed photo: a hair left of centre, so an odd padding's extra pixel goes
# right and below (pad rounds half to even). That is where regolith's letterbox has always put it, so the
# shares recorded before are reproduced pixel for pixel (checked on 3,000 random sizes against the old code).
CENTRE = (0.5 - 1e-6, 0.5 - 1e-6)


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


def read_photo(path) -> tuple:
    """(H x W x 3 uint8, warnings) for one photo file; raises ``Refused`` saying why it cannot be read.

    The bytes are read once and decoded from memory (``decode_photo``).
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise Refused(f"{path}: unreadable ({error.strerror or error})") from error
    return decode_photo(raw, str(path), path.name)


def decode_photo(raw: bytes, where: str, name: str | None = None, max_pixels: int | None = None) -> tuple:
    """(H x W x 3 uint8, warnings) for one encoded JPEG or PNG; raises ``Refused`` starting with ``where``.

    ``name``: the file name, whose suffix is checked against the content (None for bytes from elsewhere, a
    served request). A truncated file is decoded as far as it goes (the decoder fills the rest, grey for
    JPEG) with a warning naming it. The size is checked on the header, before any pixel is decoded: an
    image with no pixels, one over ``max_pixels`` or over PIL's decompression-bomb limit is refused.
    """
    if not raw:
        raise Refused(f"{where}: empty file (0 bytes)")
    warnings, label = [], name or where
    image, kind = _open_photo(raw, where)
    if name is not None and (Path(name).suffix.lower() == ".png") != (kind == "PNG"):
        warnings.append(f"{name}: a {kind} file named {Path(name).suffix}; read as {kind}")
    width, height = image.size
    if max_pixels and width * height > max_pixels:
        raise Refused(f"{where}: a {width}x{height} {kind} ({width * height / 1e6:.0f} MP) is over the "
                      f"{max_pixels / 1e6:g} MP limit; downscale it first")
    try:
        try:
            image.load()
        except OSError as error:
            if "truncated" not in str(error):
                raise
            image = Image.open(io.BytesIO(raw))
            with _truncated_images_allowed():
                image.load()
            warnings.append(f"{label}: truncated {kind} ({error}); read as far as it goes, "
                            f"the rest filled by the decoder")
        image = ImageOps.exif_transpose(image)
        return data.to_rgb8(image), warnings
    except Refused:
        raise
    except Exception as error:
        raise Refused(f"{where}: {kind} does not decode ({error})") from error


def _open_photo(raw: bytes, where: str) -> tuple:
    """(the PIL image, header read, nothing decoded yet; JPEG or PNG), or ``Refused`` saying what the bytes are."""
    signature = next((kind for kind, magic in SIGNATURES.items() if raw.startswith(magic)), None)
    # A PNG's size is in its first chunk (IHDR), readable where PIL gives up on the file.
    size = (int.from_bytes(raw[16:20], "big"), int.from_bytes(raw[20:24], "big")) \
        if signature == "PNG" and raw[12:16] == b"IHDR" and len(raw) >= 24 else None
    try:
        image = Image.open(io.BytesIO(raw))
    except Image.DecompressionBombError as error:
        shown = f"a {size[0]}x{size[1]} PNG ({size[0] * size[1] / 1e6:.0f} MP)" if size else f"an image ({error})"
        raise Refused(f"{where}: {shown} is too large to decode (PIL refuses over "
                      f"{2 * Image.MAX_IMAGE_PIXELS / 1e6:.0f} MP, against decompression bombs); downscale it "
                      f"first") from error
    except Exception as error:  # PIL raises many types for unknown or damaged headers
        if size and 0 in size:
            raise Refused(f"{where}: a {size[0]}x{size[1]} PNG has no pixels") from error
        if signature:  # PIL's own words for an unidentified file name only its BytesIO
            detail = "" if isinstance(error, UnidentifiedImageError) else f" ({error})"
            raise Refused(f"{where}: a {signature} whose header is cut short or damaged{detail}") from error
        if isinstance(error, UnidentifiedImageError):
            raise Refused(f"{where}: not an image (content not recognised as JPEG or PNG; starts {raw[:8]!r})") \
                from error
        raise Refused(f"{where}: unreadable image header ({error})") from error
    kind = PHOTO_FORMATS.get(image.format)
    if kind is None:
        raise Refused(f"{where}: a {image.format} file by its content, expected JPEG or PNG")
    return image, kind


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
        if suffix in PHOTO_SUFFIXES + UNREAD_SUFFIXES and not _utf8(path.name):
            # MLflow records names as UTF-8 text (dataset, csv, panels): one that is not cannot be recorded.
            raise Refused(f"photo folder {shown_path(folder)}: the file name '{shown_path(path.name)}' is not valid "
                          f"UTF-8 (as written by another system's encoding); rename it")
        if suffix in PHOTO_SUFFIXES:
            candidates.append(path)
        elif suffix in UNREAD_SUFFIXES:
            unread.append(path)
    return candidates, unread


def _utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
        return True
    except UnicodeEncodeError:  # Python holds an undecodable byte as a lone surrogate
        return False


def shown_path(path) -> str:
    """A path as printable text: bytes that are not UTF-8 shown as \\xNN (caf\\xe9.jpg)."""
    return os.fsencode(str(path)).decode("utf-8", "backslashreplace")


def read_photos(folder, each=None) -> tuple:
    """Every photo in ``folder``: (photos, skipped, warnings).

    photos: [(file name, H x W x 3 uint8)] sorted by file name; skipped: [(file name, reason)]
    for files that looked like photos but could not be read; warnings: strings naming the file
    (a truncated photo read as far as it goes, a suffix that lies about the content). Refuses a
    folder with no readable photo, saying what was found there. ``each``: applied to every photo
    as it is read, and kept in its place (``prepare`` fits it, so only one full-size decode is
    held at a time: a 12000x12000 JPEG is about 420 MB decoded).
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
        photos.append((path.name, rgb if each is None else each(rgb)))
        del rgb
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

def training_size(run: dict) -> int:
    """The square a checkpoint's photos are fitted to: its training frames' long side (param ``image_size``)."""
    try:
        return max(int(side) for side in run["params"][names.IMAGE_SIZE].split("x"))
    except (KeyError, ValueError) as error:
        raise Refused(f"run {run['run_id']} ({run['run_name']}) records no image_size param (HxW); expected a "
                      f"training run of regolith.train") from error


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
    if round(min(height, width) * size / max(height, width)) < 1:
        raise Refused(f"a {width}x{height} photo is too narrow to letterbox into {size}x{size}: its short side "
                      f"would be under one pixel; crop it, or fit=cover")
    frame = ImageOps.pad(image, (size, size), method=Image.Resampling.BILINEAR, color=(0, 0, 0), centering=CENTRE)
    # The photo's own pixels, placed as pad placed the photo: a white mask letterboxed the same way.
    own = ImageOps.pad(Image.new("L", image.size, 255), (size, size), method=Image.Resampling.NEAREST, color=0,
                       centering=CENTRE)
    valid = torch.from_numpy(np.asarray(own) == 255)
    return torch.from_numpy(np.asarray(frame).transpose(2, 0, 1).copy()), valid


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
    fit(np.zeros((1, 1, 3), np.uint8), size, mode)  # an unknown mode or size refused before any photo is read
    found, skipped, warnings = read_photos(folder, lambda rgb: fit(rgb, size, mode))
    images, valid = stack([fitted for _, fitted in found])
    return {"folder": folder, "names": [name for name, _ in found], "images": images, "valid": valid,
            "digest": photo_set_digest([folder / name for name, _ in found]), "size": size, "fit": mode,
            "padding": (~valid).flatten(1).sum(1).tolist(), "skipped": skipped, "warnings": warnings}


def rock_flood(predictions: torch.Tensor, valid: torch.Tensor) -> tuple:
    """(per-photo class shares, set statistics of the rock share) of one checkpoint's predictions."""
    shares = [class_shares(prediction, photo_valid) for prediction, photo_valid in zip(predictions, valid)]
    return shares, set_statistics([share["rock"] for share in shares])
