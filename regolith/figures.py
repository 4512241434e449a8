"""Every picture regolith draws: the class palette, overlays, the verify sheet, photo panels and contact sheets,
and the small per-epoch images a training run logs for MLflow's image view.

Pictures only: no MLflow, no model. Colours are Okabe-Ito hues (distinguishable with the common
colour-vision deficiencies), and rock, the hazard, is always the loud one. Figures use
matplotlib's ``Figure`` (no pyplot: no GUI backend, no global state); the per-epoch images are
composed with numpy and PIL, because they are drawn every epoch and must cost almost nothing.
"""

import math
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle
from PIL import Image, ImageDraw, ImageOps

from regolith import CLASS_IDS, CLASSES, IGNORE_INDEX, ROCK

CLASS_COLOURS = {"regolith": (204, 180, 134), "rock": (213, 94, 0), "sky": (0, 114, 178)}
IGNORE_COLOUR = (255, 255, 255)
ERROR_COLOURS = {"rock found": (0, 158, 115), "rock missed": (240, 228, 66), "false rock": (204, 121, 167)}


PAD_COLOUR = (128, 128, 128)  # how padding is drawn: neutral grey, hatched, never a class colour
PAD_HATCH = (168, 168, 168)


def colorize(labels: np.ndarray) -> np.ndarray:
    """H x W class ids -> H x W x 3 uint8 in the class colours; ignored pixels white."""
    out = np.empty((*labels.shape, 3), np.uint8)
    out[:] = IGNORE_COLOUR
    for index, name in enumerate(CLASSES):
        out[labels == index] = CLASS_COLOURS[name]
    return out


def rock_errors(image: np.ndarray, truth: np.ndarray, prediction: np.ndarray) -> np.ndarray:
    """The image dimmed to grey, with rock hits, misses and false alarms painted over it."""
    grey = (image.mean(-1, keepdims=True) * 0.5).astype(np.uint8).repeat(3, -1)
    labelled = truth != IGNORE_INDEX
    is_rock, said_rock = (truth == ROCK) & labelled, (prediction == ROCK) & labelled
    for name, where in (("rock found", is_rock & said_rock), ("rock missed", is_rock & ~said_rock),
                        ("false rock", ~is_rock & said_rock)):
        grey[where] = ERROR_COLOURS[name]
    return grey


def overlay_sheet(panels: list, title: str, path: Path):
    """A grid, one row per frame: image, ground truth, prediction, rock errors; a legend on top.

    ``panels`` holds (row label, image H x W x 3 uint8, truth H x W, prediction H x W).
    """
    height, width = panels[0][2].shape
    panel_w = 3.6
    panel_h = panel_w * height / width
    top, left = 1.4, 1.7  # inches for the title, note and legend, and for the row labels
    fig_w, fig_h = left + 4 * panel_w + 0.2, top + len(panels) * (panel_h + 0.1) + 0.1
    fig = Figure(figsize=(fig_w, fig_h))
    axes = fig.subplots(len(panels), 4, squeeze=False)
    fig.subplots_adjust(left=left / fig_w, right=1 - 0.2 / fig_w, top=1 - top / fig_h, bottom=0.1 / fig_h,
                        wspace=0.03, hspace=0.06)
    for row, (label, image, truth, prediction) in enumerate(panels):
        pictures = (image, colorize(truth), colorize(prediction), rock_errors(image, truth, prediction))
        for column, picture in enumerate(pictures):
            ax = axes[row, column]
            ax.imshow(picture, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(("image", "ground truth", "prediction", "rock errors")[column], fontsize=12)
        axes[row, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=10, labelpad=8)
    classes = [Patch(facecolor=np.array(CLASS_COLOURS[name]) / 255, edgecolor="black", label=name)
               for name in CLASSES]
    classes.append(Patch(facecolor="white", edgecolor="black", label=f"ignored ({IGNORE_INDEX})"))
    errors = [Patch(facecolor=np.array(colour) / 255, edgecolor="black", label=name)
              for name, colour in ERROR_COLOURS.items()]
    fig.legend(handles=classes + errors, loc="upper center", ncol=7, frameon=False, fontsize=10,
               bbox_to_anchor=(0.5, 1 - 0.68 / fig_h))
    fig.suptitle(title, fontsize=12, y=1 - 0.08 / fig_h, va="top")
    fig.text(0.5, 1 - 0.38 / fig_h, "rows: the worst, median and best frames by rock-IoU; rock errors are drawn "
             "over the dimmed image", ha="center", va="top", fontsize=10, color="0.3")
    fig.savefig(path, dpi=110)


def _palette():
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

    ``image`` and ``valid`` are what ``photos.fit`` returned; ``predictions`` holds (label, S x S
    class ids, class shares over the photo's own pixels), one per checkpoint. Saved as PNG to
    ``path`` when given.
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
    for label, prediction, shares in predictions:
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

    ``entries`` holds (name, image, valid, prediction, rock share) per photo, as for ``photo_panel``
    with one checkpoint's prediction; drawn in the order given. Saved as PNG to ``path``.
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
    for ax, (name, image, valid, prediction, rock) in zip(axes.flat, entries):
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


# ---- the small images a training run logs every epoch (MLflow's image view) --------------------

def thumbnail(picture: np.ndarray, size: int, labels: bool = False) -> np.ndarray:
    """An H x W x 3 uint8 picture scaled so its long side is ``size``; class colourings keep hard edges."""
    return np.asarray(ImageOps.contain(Image.fromarray(picture), (size, size),
                                       Image.Resampling.NEAREST if labels else Image.Resampling.BILINEAR))


def stamp(picture: np.ndarray, text: str) -> np.ndarray:
    """``text`` in white on a dark box in the top-left corner, in PIL's built-in font: legible on any photo."""
    image = Image.fromarray(picture)
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = draw.textbbox((3, 2), text)
    draw.rectangle((0, 0, right + 3, bottom + 2), fill=(0, 0, 0))
    draw.text((3, 2), text, fill=(255, 255, 255))
    return np.asarray(image)


def grid(pictures: list, columns: int, gap: int = 4) -> np.ndarray:
    """H x W x 3 uint8 pictures (each no larger than the first) in rows of ``columns`` on white."""
    height, width = max(p.shape[0] for p in pictures), max(p.shape[1] for p in pictures)
    rows = math.ceil(len(pictures) / columns)
    sheet = np.full((rows * (height + gap) - gap, columns * (width + gap) - gap, 3), 255, np.uint8)
    for n, picture in enumerate(pictures):
        top, left = (n // columns) * (height + gap), (n % columns) * (width + gap)
        sheet[top:top + picture.shape[0], left:left + picture.shape[1]] = picture
    return sheet


def prediction_strip(images: np.ndarray, truths: np.ndarray, predictions: np.ndarray, size: int = 160) -> np.ndarray:
    """One row per validation frame: image, ground truth, prediction, each ``size`` px on its long side.

    ``images`` N x H x W x 3 uint8, ``truths`` and ``predictions`` N x H x W class ids. Logged each
    epoch at the same frames, so MLflow's image view shows the model learning.
    """
    panels = []
    for image, truth, prediction in zip(images, truths, predictions):
        panels += [thumbnail(image, size), thumbnail(colorize(truth), size, labels=True),
                   thumbnail(colorize(prediction), size, labels=True)]
    panels[:3] = [stamp(panel, title) for panel, title in zip(panels[:3], ("image", "truth", "prediction"))]
    return grid(panels, 3)


def flood_sheet(images, valid, predictions, rock_shares: list, size: int = 128) -> np.ndarray:
    """Real photos at a glance, every epoch: predicted rock painted over each, its rock share stamped on it."""
    thumbnails = [stamp(thumbnail(overlay(image, photo_valid, prediction, classes=(ROCK,)), size), f"rock {share:.0%}")
                  for image, photo_valid, prediction, share in zip(images, valid, predictions, rock_shares)]
    return grid(thumbnails, min(len(thumbnails), 6))
