"""Every picture regolith draws: the class palette, overlays, the verify sheet, photo panels and contact sheets,
the small per-epoch images a training run logs for MLflow's image view, and the ablation's charts.

Pictures only: no MLflow, no model. Colours are Okabe-Ito hues (distinguishable with the common
colour-vision deficiencies), and rock, the hazard, is always the loud one. Figures use
matplotlib's ``Figure`` (no pyplot: no GUI backend, no global state); the per-epoch images are
composed with numpy and PIL, because they are drawn every epoch and must cost almost nothing.
The ablation's charts take the plain results that ``regolith.ablation`` computes and
``regolith.compare`` writes beside its tables (``plot_ablation``, ``plot_generations``).
"""

import math
from pathlib import Path

import matplotlib
import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle
from matplotlib.ticker import PercentFormatter
from PIL import Image, ImageDraw, ImageOps

from regolith import CLASS_IDS, CLASSES, IGNORE_INDEX, ROCK, names, reference

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
    # A 4th element, the per-pixel entropy (S x S, nats), adds the checkpoint's uncertainty map beside it.
    columns = 1 + sum(1 + (len(entry) > 3) for entry in predictions)
    fig_w, fig_h = columns * panel + 0.3, panel + 1.15
    fig = Figure(figsize=(fig_w, fig_h))
    axes = fig.subplots(1, columns, squeeze=False)[0]
    fig.subplots_adjust(left=0.15 / fig_w, right=1 - 0.15 / fig_w, top=1 - 0.75 / fig_h, bottom=0.4 / fig_h,
                        wspace=0.04)
    padding = 1 - valid_t.float().mean().item()
    pictures = [(_hwc(image), f"photo ({padding:.0%} padding)" if padding else "photo")]
    for label, prediction, shares, *uncertain in predictions:
        title = (f"{label}\nrock {shares['rock']:.1%}  (regolith {shares['regolith']:.0%}, "
                 f"sky {shares['sky']:.0%})")
        pictures.append((overlay(image, valid_t, prediction), title))
        if uncertain:
            pictures.append(uncertainty_map(uncertain[0], valid_t))
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


def uncertainty_map(entropy, valid) -> tuple:
    """(picture, title): the softmax entropy from 0 (black: certain) to log 3 (white: uniform), padding grey."""
    entropy = torch.as_tensor(entropy, dtype=torch.float32)
    level = (entropy / math.log(len(CLASSES))).clamp(0, 1).numpy()
    picture = (np.stack([level] * 3, -1) * 255).astype(np.uint8)
    picture[~valid.numpy()] = PAD_COLOUR
    return picture, f"uncertainty (softmax entropy)\nmean {entropy[valid].mean().item():.3f} nats of {math.log(3):.3f}"


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


# ---- the ablation's charts (compare) ------------------------------------------------------------

# The two number formats the charts share with compare's tables; they live here, the lower of the two modules,
# so that a delta reads the same in ablation.txt and on ablation.png.
def signed(value, std=None, percent=False) -> str:
    """A delta with its sign, ± its spread where given: 4 decimals, or 1 as a percentage; n/a where not computed."""
    if value is None:
        return "n/a"
    scale, digits, unit = (100, 1, "%") if percent else (1, 4, "")
    text = f"{value * scale:+.{digits}f}{unit}"
    return text + (f" ± {std * scale:.{digits}f}{unit}" if std is not None else "")


def gain(value: float | None) -> str:
    """A gain to the study's 3 decimals; float noise is rounded away first (0.8521 - 0.8486 is +0.0035, not less)."""
    return "n/a" if value is None else f"{round(value, 10):+.3f}"


def _colors(variants: dict) -> dict:
    """nodr variants in greys, dr variants in blues, darker with more frames."""
    colors = {}
    for dr, cmap in ((False, "Greys"), (True, "Blues")):
        group = [name for name, v in variants.items() if v["dr"] == dr]
        for i, name in enumerate(group):
            colors[name] = matplotlib.colormaps[cmap](0.55 + 0.35 * (i + 1) / len(group) - 0.35 / len(group))
    return colors


def _bracket(ax, x0: float, x1: float, y: float, text: str, color: str):
    """A labelled bracket from bar x0 to bar x1 at height y (axes data units)."""
    tick = 0.025
    ax.plot([x0, x0, x1, x1], [y - tick, y, y, y - tick], color=color, lw=1.5, clip_on=False)
    ax.text((x0 + x1) / 2, y + 0.01, text, ha="center", va="bottom", fontsize=9.5, color=color,
            fontweight="bold", linespacing=1.3)


def plot_ablation(results: dict, curves: dict, path: Path):
    """One figure: best rock-IoU with both deltas, the validation rock-IoU curves, per-class IoU, and where the
    runs were pointed at real photos, synthetic rock-IoU against the real rock share. Saved as PNG to ``path``.

    ``results`` is ``ablation.ablation_results``'s; ``curves`` maps a run id to its (epoch,
    val/iou_rock) pairs.
    """
    variants = results["variants"]
    colors = _colors(variants)
    real = any(v[names.REAL_SHARE]["mean"] is not None for v in variants.values())
    operating = (results.get("flood") or {}).get("curves")  # every variant's operating curve, where counted
    ratios = [1, 1.15, 1.3] + ([1.15] if real else []) + ([1.15] if operating else [])
    fig = Figure(figsize=(17 + 5.5 * real + 5.5 * bool(operating), 5.6))
    axes = fig.subplots(1, len(ratios), gridspec_kw={"width_ratios": ratios})
    plot_bars(axes[0], results, colors)
    plot_curves(axes[1], variants, curves, colors)
    plot_classes(axes[2], variants, colors)
    if real:
        plot_real(axes[3], results, colors)
    if operating:
        plot_operating_curves(axes[-1], list(operating.items()), colors)
        axes[-1].set_title("Better, or only more eager?\nrock threshold swept (dot: argmax)")
    for ax in axes:
        ax.title.set_fontsize(12.5)
        ax.xaxis.label.set_fontsize(11.5)
        ax.yaxis.label.set_fontsize(11.5)
        ax.tick_params(labelsize=10.5)
    fig.suptitle(f"Size-matched domain-randomization ablation — experiment '{results['experiment']}' "
                 f"(validation: unseen-domain split; mean ± std over seeds where several)", fontsize=13.5)
    fig.tight_layout()
    fig.savefig(path, dpi=160)


def plot_bars(bars, results: dict, colors: dict):
    """Best rock-IoU per variant, the study's marks where it has them, and both deltas as brackets above."""
    variants = results["variants"]
    shown = list(variants)
    x = {name: i for i, name in enumerate(shown)}
    rock = [variants[n]["iou_rock"] for n in shown]
    means = [r["mean"] for r in rock]
    errors = [r["std"] or 0 for r in rock]
    bars.bar(range(len(shown)), means, color=[colors[n] for n in shown], edgecolor="black", linewidth=0.6,
             yerr=errors if any(errors) else None, capsize=5)
    for i, value in enumerate(means):
        if value >= 0.15:
            bars.text(i, value / 2, f"{value:.3f}", ha="center", va="center", fontsize=11, color="white",
                      fontweight="bold", bbox={"boxstyle": "round,pad=0.2", "fc": "black", "alpha": 0.35, "lw": 0})
        else:  # too short a bar to write in
            bars.text(i, value + errors[i] + 0.01, f"{value:.3f}", ha="center", va="bottom", fontsize=11,
                      fontweight="bold")
    comparison = results.get("reference")
    if comparison:  # the study's number as a dashed mark on each of its variants' bars
        for name, row in comparison["variants"].items():
            bars.plot([x[name] - 0.42, x[name] + 0.42], [row["study"]] * 2, color="black", ls="--", lw=1.4,
                      label=f"the study ({comparison['generation']})" if name == reference.VARIANTS[0] else None)
        bars.legend(loc="lower right", fontsize=9.5)
    top = max(m + e for m, e in zip(means, errors))
    dr_entry, size_entry = results["dr_delta"], results["size_delta"]
    y = top + 0.06  # each bracket sits above the one before and its label
    brackets = [] if dr_entry is None else [
        (dr_entry, f"DR at {variants[dr_entry['variant']]['frames']} frames", "#b2182b"),
        (size_entry, f"more data: {variants[size_entry['baseline']]['frames']} → "
                     f"{variants[size_entry['variant']]['frames']} frames", "#2166ac")]
    # compare --delta A:B between two variants of the table (a side given by tag filters has no bar of its own)
    brackets += [(entry, f"B - A: {entry['variant']} - {entry['baseline']}", "#1b7837")
                 for entry in results.get("deltas", []) if {entry["variant"], entry["baseline"]} <= set(x)]
    for entry, label, color in brackets:
        text = (f"{label}\n{signed(entry['absolute'], entry['absolute_std'])} "
                f"({signed(entry['relative'], None, percent=True)})")
        for name, interval in (("frames", entry.get("frame_interval")), ("seeds", entry.get("seed_interval"))):
            if interval:
                text += (f"\n95% CI ({name}) [{interval['low']:+.3f}, {interval['high']:+.3f}]"
                         + (", includes 0" if interval["includes_zero"] else ""))
        _bracket(bars, x[entry["baseline"]], x[entry["variant"]], y, text, color)
        y += 0.06 + 0.05 * (text.count("\n") + 1)  # about 0.05 of height per label line
    bars.set_ylim(0, y)
    bars.set_yticks([tick / 10 for tick in range(0, 11, 2) if tick / 10 <= y])
    bars.set_xticks(range(len(shown)), [f"{n}\n({len(variants[n]['seeds'])} seed"
                                        f"{'s' if len(variants[n]['seeds']) > 1 else ''})" for n in shown])
    bars.set_ylabel("best validation rock-IoU")
    bars.set_title("Best rock-IoU per variant and the two deltas")
    bars.grid(axis="y", alpha=0.3)
    bars.set_axisbelow(True)


def plot_curves(lines, variants: dict, curves: dict, colors: dict):
    """Per-epoch validation rock-IoU of every run, its best epoch marked."""
    for name, v in variants.items():
        for i, (run_id, seed, best_epoch) in enumerate(zip(v["run_ids"], v["seeds"], v["best_epoch"])):
            points = curves.get(run_id, [])
            if not points:
                continue
            epochs, values = zip(*points)
            label = name if len(v["seeds"]) == 1 else f"{name} (seed {seed})"
            lines.plot(epochs, values, color=colors[name], lw=2, marker="o", ms=3, label=label,
                       linestyle=("-", "--", ":", "-.")[i % 4])
            best_value = dict(points).get(best_epoch)
            if best_value is not None:
                lines.plot(best_epoch, best_value, marker="*", ms=16, color=colors[name], markeredgecolor="black",
                           linestyle="none")
    lines.plot([], [], marker="*", ms=12, color="white", markeredgecolor="black", linestyle="none",
               label="best epoch")
    lines.set_xlabel("epoch")
    lines.set_ylabel("validation rock-IoU")
    lines.set_title("Validation rock-IoU per epoch")
    lines.xaxis.get_major_locator().set_params(integer=True)
    lines.grid(alpha=0.3)
    lines.legend(fontsize=9.5, loc="best")


def plot_classes(classes, variants: dict, colors: dict):
    """Per-class IoU and mIoU of every variant's best checkpoint, in ``names.SCORES``' order (rock second)."""
    labels = [score.removeprefix("iou_") if score != "miou" else "mIoU" for score in names.SCORES]
    width = 0.8 / len(variants)
    for i, (name, v) in enumerate(variants.items()):
        scores = [v[score] for score in names.SCORES]
        offsets = [k + (i - (len(variants) - 1) / 2) * width for k in range(len(labels))]
        errors = [score["std"] or 0 for score in scores]
        # A score no run of the variant recorded (older runs) is left out of the panel, not drawn as 0.
        classes.bar(offsets, [np.nan if score["mean"] is None else score["mean"] for score in scores], width,
                    color=colors[name], edgecolor="black", linewidth=0.6, label=name,
                    yerr=errors if any(errors) else None, capsize=3)
    classes.set_xticks(range(len(labels)), labels)
    classes.set_ylim(0, 1.25)  # room for the legend above bars that reach 1
    classes.set_yticks([tick / 10 for tick in range(0, 11, 2)])
    classes.set_ylabel("best-checkpoint IoU")
    classes.set_title("IoU per class at each variant's best epoch")
    classes.grid(axis="y", alpha=0.3)
    classes.set_axisbelow(True)
    classes.legend(fontsize=9.5, ncols=len(variants), loc="upper center")


def plot_real(ax, results: dict, colors: dict):
    """Synthetic rock-IoU against the real rock share, one point per variant: the study's punchline is that they part."""
    variants = results["variants"]
    refused = results.get("real_refused")  # shares of different photo sets: drawn, labelled with their set, flagged
    for name, v in variants.items():
        share = v[names.REAL_SHARE]
        if share["mean"] is None:
            continue
        ax.errorbar(v[names.HEADLINE]["mean"], share["mean"], xerr=v[names.HEADLINE]["std"], yerr=share["std"],
                    marker="o", ms=11, color=colors[name], markeredgecolor="black", capsize=4, label=name,
                    linestyle="none")
        sets = v.get("real_sets") or []
        label = name + (" (" + ", ".join(f"{s['digest'][:8] if s['digest'] else '?'} {s['fit']} {s['tta']}"
                                          for s in sets) + ")" if refused else "")
        ax.annotate(label, (v[names.HEADLINE]["mean"], share["mean"]), textcoords="offset points", xytext=(9, 6),
                    fontsize=10)
    comparison = results.get("reference")
    if comparison:  # the study's dr_1500 from one generation to the next, on its own real photos
        points = [(reference.ROCK_IOU[g]["dr_1500"], reference.REAL_ROCK_SHARE[g][0], g) for g in reference.ROCK_IOU]
        ax.plot([p[0] for p in points], [p[1] for p in points], color="0.55", ls=":", marker="s", mfc="white",
                label="the study's dr_1500, v1→v3 (its photos)")
        for x, y, generation in points:
            ax.annotate(generation, (x, y), textcoords="offset points", xytext=(6, -12), fontsize=9, color="0.4")
    ax.margins(0.18)  # room for the labels beside the points
    highest = max((v[names.REAL_SHARE]["mean"] or 0) + (v[names.REAL_SHARE]["std"] or 0) for v in variants.values())
    ax.set_ylim(0, max(ax.get_ylim()[1], 1.2 * highest) or 1)  # from 0: the flood's size; room for the top label
    ax.set_xlabel("best validation rock-IoU (synthetic)")
    ax.set_ylabel("share of real photos' pixels called rock")
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_title("NOT COMPARABLE: the shares come from different photo sets, fits or TTA" if refused else
                 "Synthetic rock-IoU against the rock flood on real photos", color="red" if refused else "black")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9, loc="best")


def plot_generations(results: dict, path: Path):
    """Two panels: each generation's three variants, and the no-DR baseline against the two gains over generations.

    ``results`` is ``ablation.generations_results``'s; saved as PNG to ``path``.
    """
    rows = results["generations"]
    fig = Figure(figsize=(15, 5.8))
    bars, trend = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.2, 1]})
    plot_generation_bars(bars, rows)
    plot_generation_trend(trend, rows)
    labels = [row["experiment"] for row in rows]
    fig.suptitle(f"Generations side by side: {', '.join(labels)} (best validation rock-IoU)", fontsize=13)
    fig.tight_layout()
    fig.savefig(path, dpi=150)


def plot_generation_bars(bars, rows: list):
    """Each generation's no-DR, DR and DR-with-more-data rock-IoU side by side, each bar labelled with its variant."""
    colours = ("#8c8c8c", "#6baed6", "#08519c")
    width = 0.8 / 3
    for k, role in enumerate(("no DR", "DR", "DR, more data")):
        values = [row["rock_iou"][row["variants"][k]] for row in rows]
        bars.bar([i + (k - 1) * width for i in range(len(rows))], values, width, color=colours[k],
                 edgecolor="black", linewidth=0.6, label=role)
        for i, (row, value) in enumerate(zip(rows, values)):
            bars.text(i + (k - 1) * width, value + 0.01, f"{value:.4f}\n{row['variants'][k]}", ha="center",
                      va="bottom", fontsize=8.5)
    bars.set_xticks(range(len(rows)), [row["experiment"] for row in rows])
    bars.set_ylim(0, 1.15)
    bars.set_ylabel("best validation rock-IoU")
    bars.set_title("Each generation's variants")
    bars.legend(loc="upper left", ncols=3, fontsize=9.5)
    bars.grid(axis="y", alpha=0.3)
    bars.set_axisbelow(True)


def plot_generation_trend(trend, rows: list):
    """The no-DR baseline (left axis) and both gains with their intervals (right axis) from generation to generation."""
    x = range(len(rows))
    baseline = [row["rock_iou"][row["variants"][0]] for row in rows]
    trend.plot(x, baseline, color="#4d4d4d", marker="o", lw=2.2, label="no-DR baseline (rock-IoU, left)")
    for i, value in zip(x, baseline):
        trend.annotate(f"{value:.4f}", (i, value), textcoords="offset points", xytext=(8, -12), fontsize=9,
                       color="#4d4d4d")
    gains = trend.twinx()
    for key, colour, label in (("dr_delta", "#b2182b", "DR gain (right)"),
                               ("size_delta", "#2166ac", "more-data gain (right)")):
        values = [row[key]["absolute"] for row in rows]
        intervals = [row[key]["frame_interval"] or row[key]["seed_interval"] for row in rows]
        low = [v - i["low"] if i else 0 for v, i in zip(values, intervals)]
        high = [i["high"] - v if i else 0 for v, i in zip(values, intervals)]
        gains.errorbar(x, values, yerr=[low, high] if any(low + high) else None, color=colour, marker="s", lw=2,
                       capsize=4, label=label)
        for i, value in zip(x, values):
            gains.annotate(gain(value), (i, value), textcoords="offset points", xytext=(8, 4), fontsize=9,
                           color=colour)
    gains.axhline(0, color="black", lw=0.6)
    trend.set_xticks(list(x), [row["experiment"] for row in rows])
    trend.set_xlim(-0.25, len(rows) - 0.6)  # room for the labels beside the last points
    trend.set_ylabel("no-DR baseline rock-IoU")
    gains.set_ylabel("gain in rock-IoU")
    trend.set_title("The baseline rose while the DR gain shrank")
    handles = trend.get_legend_handles_labels()[0] + gains.get_legend_handles_labels()[0]
    trend.legend(handles, [h.get_label() for h in handles], loc="upper center", bbox_to_anchor=(0.5, -0.07),
                 ncols=3, fontsize=9.5, frameon=False)
    trend.grid(alpha=0.3)


# ---- operating curves (regolith.curve) ------------------------------------------------------------

def plot_operating_curves(ax, curves: list, colors: dict | None = None):
    """Synthetic rock-IoU against the real rock share, one line per (label, curve), each argmax a big dot.

    Read it as: at the same flood (a vertical line), the higher curve is better; a variant that only
    moved its argmax along the same curve is more eager, not better.
    """
    for n, (label, operating) in enumerate(curves):
        color = (colors or {}).get(label, f"C{n}")
        shares, iou = np.asarray(operating["real_share"], float), np.asarray(operating["iou_rock"], float)
        ax.plot(shares, iou, color=color, lw=1.8, label=label)
        point = operating["argmax"]
        ax.plot(shares[point], iou[point], "o", ms=10, color=color, markeredgecolor="black")
        ax.annotate(f"{label} argmax", (shares[point], iou[point]), textcoords="offset points", xytext=(8, -12),
                    fontsize=9)
    ax.set_xlabel("real photos' pixels called rock (the flood)")
    ax.set_ylabel("validation rock-IoU (synthetic)")
    ax.xaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_xlim(0, 1)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9, loc="upper right")  # the curves fall towards the lower right


def operating_curve(curves: list, title: str, path: Path | None = None) -> np.ndarray:
    """One checkpoint's (or several) operating curve as a PNG at ``path``; returns the picture (H x W x 3 uint8)."""
    fig = Figure(figsize=(7.5, 5.5), layout="constrained")
    ax = fig.add_subplot()
    plot_operating_curves(ax, curves)
    ax.set_title("Rock threshold swept: the dot is the argmax (t = 0)", fontsize=11)
    fig.suptitle(_short(title, 110), fontsize=10)
    canvas = FigureCanvasAgg(fig)  # no pyplot: the Agg canvas renders the picture MLflow's image view shows
    canvas.draw()
    picture = np.asarray(canvas.buffer_rgba())[..., :3].copy()
    if path is not None:
        fig.savefig(path, dpi=100)
    return picture
