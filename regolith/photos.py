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

import hashlib
import io
import math
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global figure state
from matplotlib.patches import Patch, Rectangle
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError
from scipy import stats

from regolith import CLASSES, ROCK, Refused

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
CONFIDENCE = 0.95
RESAMPLES = 9999  # scipy's default; the mean of a few dozen photos resamples in milliseconds
PAD_COLOUR = (128, 128, 128)  # how padding is drawn: neutral grey, hatched, never a class colour
PAD_HATCH = (168, 168, 168)


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
        try:
            raw = path.read_bytes()
        except OSError as error:
            raise Refused(f"{path}: unreadable ({error.strerror or error})") from error
        digest.update(f"{path.name}\0{len(raw)}\0".encode())
        digest.update(raw)
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


def _interval(samples: tuple, statistic, seed: int, paired: bool = False):
    if len(samples[0]) < 2:
        return None  # one photo has no spread to resample
    # random_state rather than rng: scipy took rng only from 1.15, and the project allows 1.10.
    result = stats.bootstrap(samples, statistic, paired=paired, vectorized=True, confidence_level=CONFIDENCE,
                             n_resamples=RESAMPLES, method="percentile", random_state=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


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
            "interval": _interval((shares,), lambda x, axis: x.mean(axis=axis), seed)}


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
            "interval": _interval((a, b), lambda x, y, axis: (x - y).mean(axis=axis), seed, paired=True),
            # One photo fitted the same way for both: equal shares are equal pixel counts, exactly.
            "a_more": int((a > b).sum()), "b_more": int((a < b).sum()), "ties": int((a == b).sum())}


# ---- pictures ----

def _palette():
    # evaluate owns the class colours; imported here, not at the top, because evaluate imports
    # track and so MLflow, which the reading and statistics above must not need.
    from regolith.evaluate import CLASS_COLOURS
    return {index: np.array(CLASS_COLOURS[name], np.float32) for index, name in enumerate(CLASSES)}


def _hwc(image) -> np.ndarray:
    """A fitted image as H x W x 3 uint8, from ``fit``'s 3 x S x S tensor or an H x W x 3 array."""
    if isinstance(image, torch.Tensor):
        return image.permute(1, 2, 0).cpu().numpy()
    return np.asarray(image)


def overlay(image, valid, prediction, classes=CLASS_IDS) -> np.ndarray:
    """The photo with the given classes' colours blended over it, rock loudest; padding grey and hatched."""
    rgb = _hwc(image).astype(np.float32)
    valid = np.asarray(torch.as_tensor(valid, dtype=torch.bool).cpu())
    prediction = np.asarray(torch.as_tensor(prediction).cpu())
    palette = _palette()
    out = rgb.copy()
    for index in classes:
        # Rock is the hazard the picture is about: near-opaque so a flood reads from across the room;
        # the other classes only tint, so the photo stays readable under them.
        strength = 0.6 if index == ROCK else 0.3
        where = (prediction == index) & valid
        out[where] = (1 - strength) * rgb[where] + strength * palette[index]
    size = valid.shape[0]
    period = max(4, size // 32)  # stripes scale with the frame, so they survive a thumbnail
    rows, columns = np.indices(valid.shape)
    hatch = (rows + columns) % period < period // 3
    out[~valid] = PAD_COLOUR
    out[~valid & hatch] = PAD_HATCH
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def _legend_handles(classes) -> list:
    palette = _palette()
    handles = [Patch(facecolor=palette[i] / 255, edgecolor="black", label=CLASSES[i]) for i in classes]
    handles.append(Patch(facecolor=np.array(PAD_COLOUR) / 255, edgecolor="black", hatch="///",
                         label="padding (not counted)"))
    return handles


def _short(name: str, limit: int) -> str:
    """A file name cut in the middle to ``limit`` characters, keeping its start and its suffix."""
    if len(name) <= limit:
        return name
    keep = limit - 1
    return f"{name[:keep - keep // 3]}…{name[-(keep // 3):]}"


def photo_panel(name: str, image, valid, predictions: list, path=None) -> Figure:
    """One photo in a row: the fitted photo, then each checkpoint's prediction over it, rock share in the title.

    ``image`` and ``valid`` are what ``fit`` returned; ``predictions`` holds (label, S x S class
    ids), one per checkpoint. Saved as PNG to ``path`` when given.
    """
    valid_t = torch.as_tensor(valid, dtype=torch.bool)
    panel = 3.4  # inches per picture
    columns = 1 + len(predictions)
    fig_w, fig_h = columns * panel + 0.3, panel + 1.15
    fig = Figure(figsize=(fig_w, fig_h))
    axes = fig.subplots(1, columns, squeeze=False)[0]
    fig.subplots_adjust(left=0.15 / fig_w, right=1 - 0.15 / fig_w, top=1 - 0.75 / fig_h, bottom=0.4 / fig_h,
                        wspace=0.04)
    padding = 1 - valid_t.float().mean().item()
    pictures = [(_hwc(image), f"photo ({padding:.0%} padding)" if padding else "photo")]
    for label, prediction in predictions:
        shares = class_shares(prediction, valid_t)
        title = (f"{label}\nrock {shares['rock']:.1%}  (regolith {shares['regolith']:.0%}, "
                 f"sky {shares['sky']:.0%})")
        pictures.append((overlay(image, valid_t, prediction), title))
    for ax, (picture, title) in zip(axes, pictures):
        ax.imshow(picture, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(title, fontsize=9)
    if padding:  # outline the photo's own pixels: its black sky and the black bars would run together
        photo_rows, photo_columns = valid_t.any(1).nonzero().flatten(), valid_t.any(0).nonzero().flatten()
        axes[0].add_patch(Rectangle((photo_columns[0].item() - 0.5, photo_rows[0].item() - 0.5),
                                    len(photo_columns), len(photo_rows),
                                    fill=False, edgecolor="0.6", linewidth=0.8, linestyle="--"))
    fig.suptitle(name, fontsize=11, y=1 - 0.08 / fig_h, va="top")
    fig.legend(handles=_legend_handles(CLASS_IDS), loc="lower center", ncol=len(CLASSES) + 1,
               frameon=False, fontsize=8, bbox_to_anchor=(0.5, 0.0))
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig


def sheet_layout(count: int) -> tuple:
    """(columns, thumbnail inches) for a contact sheet of ``count`` photos, no wider than about 14 inches."""
    if count <= 30:
        return max(1, min(count, 6)), 2.2
    # Beyond 30 the grid widens and the thumbnails shrink, so the sheet stays about 1,500 px wide.
    columns = min(12, max(6, math.ceil(math.sqrt(count))))
    return columns, min(1.8, 13.2 / columns)


def contact_sheet(entries: list, path, title: str) -> Figure:
    """Every photo at a glance: each thumbnail the photo with its predicted rock painted over it and its rock share.

    ``entries`` holds (name, image, valid, prediction) per photo, as for ``photo_panel`` with one
    checkpoint's prediction; drawn in the order given. Saved as PNG to ``path``.
    """
    if not entries:
        raise ValueError("contact_sheet: no photos")
    columns, thumb = sheet_layout(len(entries))
    rows = math.ceil(len(entries) / columns)
    label_h = 0.22 * thumb / 2.2 + 0.08  # room for the file name under each thumbnail
    top = 0.9
    # At least 6.5 inches wide, so the title and the note fit over a sheet of one or two photos.
    fig_w, fig_h = max(columns * thumb + 0.3, 6.5), top + rows * (thumb + label_h) + 0.05
    fig = Figure(figsize=(fig_w, fig_h))
    axes = fig.subplots(rows, columns, squeeze=False)
    fig.subplots_adjust(left=0.15 / fig_w, right=1 - 0.15 / fig_w, top=1 - top / fig_h,
                        bottom=(label_h + 0.05) / fig_h,
                        wspace=0.04, hspace=label_h / thumb)
    font = max(6.0, 8.5 * thumb / 2.2)
    rock_shares = []
    for ax, (name, image, valid, prediction) in zip(axes.flat, entries):
        rock = class_shares(prediction, valid)["rock"]
        rock_shares.append(rock)
        ax.imshow(overlay(image, valid, prediction, classes=(ROCK,)), interpolation="bilinear")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel(_short(name, int(4 + 11 * thumb)), fontsize=font, labelpad=2)
        # The share is the number the sheet is for: large, in the corner, legible on any photo.
        ax.text(0.03, 0.96, f"rock {rock:.0%}", transform=ax.transAxes, ha="left", va="top",
                fontsize=font * 1.15, fontweight="bold", color="white",
                bbox={"boxstyle": "round,pad=0.2", "facecolor": "black", "alpha": 0.6, "linewidth": 0})
    for ax in axes.flat[len(entries):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=11, y=1 - 0.08 / fig_h, va="top")
    counted = f"{len(entries)} photo{'s' if len(entries) > 1 else ''}"
    fig.text(0.5, 1 - 0.4 / fig_h, f"{counted}, mean rock share {np.mean(rock_shares):.1%}; "
             f"predicted rock painted over each photo", ha="center", va="top", fontsize=9, color="0.3")
    fig.legend(handles=_legend_handles((ROCK,)), loc="upper center", ncol=2, frameon=False, fontsize=8,
               bbox_to_anchor=(0.5, 1 - 0.62 / fig_h))
    fig.savefig(path, dpi=110)
    return fig
