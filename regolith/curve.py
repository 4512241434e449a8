"""A checkpoint's operating curve: every rock threshold at once, from margins counted into fixed bins.

The argmax is one operating point. Calling a pixel rock when its **rock margin** (the rock logit
minus the largest other logit) exceeds a threshold t gives all of them; t = 0 is the argmax. One
inference pass counts the margins into fixed bins, on the device (``frame_counts``: per
validation frame, by label: rock, another class, 255; ``photo_counts``: per photo, over its own
pixels, never padding). Everything else comes from the counts alone (``operating_curve``): for
each bin edge t, validation rock-IoU, precision and recall, and the real photos' rock share.

Only rock moves between "rock" and "the best other class" as t changes; a pixel that is not
called rock keeps its argmax among the other classes, so rock's own TP, FP and FN, and hence
rock-IoU, precision and recall, are exact at every edge. (Other classes' IoU would need to know
which other class a demoted pixel goes to; the curve does not claim them.)

Pure torch and numpy: evaluate runs the pass and records the curve; compare reads it back.
"""

import numpy as np
import torch

from regolith import IGNORE_INDEX, ROCK

# Thresholds t, in logits: -10 to 10 in steps of 1/40, 0 exactly among them (the argmax). A margin beyond
# the ends lands in an end bin, so the counts still hold every pixel; the curve is exact at the edges only.
EDGES = (torch.arange(-400, 401, dtype=torch.float64) / 40).float()
LABELS = ("rock", "other", "ignore")  # the label groups of frame_counts' middle axis
SHARES = (0.05, 0.10, 0.20)  # fixed real rock shares at which the run records its rock-IoU
COLUMNS = ("t", "iou_rock", "iou_rock_strict", "precision", "recall", "real_share")


def rock_margin(logits: torch.Tensor) -> torch.Tensor:
    """N x C x H x W logits -> N x H x W: the rock logit minus the largest other class's logit.

    margin > 0 is the argmax calling rock, but for exact ties of rock with a later class (argmax takes
    the first maximum): measure zero in float32 logits, and the test checks t = 0 against the argmax.
    """
    others = torch.cat([logits[:, :ROCK], logits[:, ROCK + 1:]], 1)
    return logits[:, ROCK] - others.amax(1)


def _bins(margin: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """Bin index per pixel: bin i holds margins in (edges[i-1], edges[i]]; 0 and len(edges) are the ends."""
    return torch.bucketize(margin.float(), edges.to(margin.device), right=False)


def frame_counts(margin: torch.Tensor, masks: torch.Tensor, edges: torch.Tensor = EDGES) -> torch.Tensor:
    """N x 3 x (E + 1) pixel counts per frame, label group (rock, other, 255) and margin bin, on the device.

    scatter_add_ into a fixed size rather than bincount, as ``metrics.confusion_matrix``: no host sync.
    """
    masks = masks.to(margin.device).long()
    group = torch.where(masks == ROCK, 0, torch.where(masks == IGNORE_INDEX, 2, 1))
    bins = len(edges) + 1
    frame = torch.arange(len(margin), device=margin.device).view(-1, 1, 1)
    index = ((frame * len(LABELS) + group) * bins + _bins(margin, edges)).reshape(-1)
    counts = torch.zeros(len(margin) * len(LABELS) * bins, dtype=torch.long, device=margin.device)
    counts.scatter_add_(0, index, torch.ones((), dtype=torch.long, device=margin.device).expand_as(index))
    return counts.view(len(margin), len(LABELS), bins)


def photo_counts(margin: torch.Tensor, valid: torch.Tensor, edges: torch.Tensor = EDGES) -> torch.Tensor:
    """N x (E + 1) counts per photo and margin bin, over each photo's own pixels (letterbox padding adds 0)."""
    valid = valid.to(margin.device)
    bins = len(edges) + 1
    photo = torch.arange(len(margin), device=margin.device).view(-1, 1, 1)
    index = (photo * bins + _bins(margin, edges)).reshape(-1)
    counts = torch.zeros(len(margin) * bins, dtype=torch.long, device=margin.device)
    counts.scatter_add_(0, index, valid.long().reshape(-1))
    return counts.view(len(margin), bins)


def above(counts: np.ndarray) -> np.ndarray:
    """(..., E + 1) bin counts -> (..., E): at edge k, the pixels whose margin exceeds edges[k] (bins k+1 on)."""
    tail = np.cumsum(np.asarray(counts)[..., ::-1], axis=-1)[..., ::-1]
    return tail[..., 1:]


def rock_figures(totals: np.ndarray) -> dict:
    """Rock-IoU (standard and strict), precision and recall at every edge from (..., 3, E + 1) counts summed over
    frames (any leading axes: variants, bootstrap resamples).

    ``metrics.iou_per_class``'s own arithmetic (float64, intersection / (predicted + labelled -
    intersection)), so t = 0 reproduces it to the last bit.
    """
    totals = np.asarray(totals, dtype=np.float64)
    tp, fp, fp_ignored = (above(totals[..., g, :]) for g in range(len(LABELS)))
    labelled = totals[..., 0, :].sum(-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        return {"iou_rock": tp / ((tp + fp) + labelled - tp),
                "iou_rock_strict": tp / ((tp + fp + fp_ignored) + labelled - tp),
                "precision": tp / (tp + fp), "recall": tp / labelled}


def photo_shares(photos: np.ndarray) -> np.ndarray:
    """photos x (E + 1) counts -> photos x E: each photo's share of its own pixels called rock, at each edge."""
    photos = np.asarray(photos, dtype=np.int64)
    return above(photos) / photos.sum(-1, keepdims=True)


def real_share(photos: np.ndarray) -> np.ndarray:
    """The mean over photos of each photo's rock share, at each edge (``photoset.set_statistics``' mean)."""
    # One contiguous row per edge, reduced as set_statistics reduces a list of shares: the same bits at t = 0.
    return np.ascontiguousarray(photo_shares(photos).T).mean(axis=1)


def operating_curve(frames: np.ndarray, photos: np.ndarray | None, edges: torch.Tensor = EDGES) -> dict:
    """Every edge's operating point: {column: list} for ``COLUMNS`` (real_share None without photos), and argmax."""
    totals = np.asarray(frames, dtype=np.int64).sum(0)
    curve = {"t": [float(t) for t in edges], **{k: v.tolist() for k, v in rock_figures(totals).items()},
             "real_share": real_share(photos).tolist() if photos is not None and len(photos) else None}
    curve["argmax"] = argmax_index(edges)
    return curve


def argmax_index(edges: torch.Tensor = EDGES) -> int:
    """Where t = 0 sits among the edges: the argmax's operating point."""
    return int(torch.nonzero(edges == 0)[0])


def at_share(curve: dict, share: float, column: str = "iou_rock") -> float | None:
    """``column`` at the most eager edge whose real share is at most ``share`` (the flood held to ``share``).

    None where the curve never floods more than ``share`` (even its most eager edge stays below: the
    share is not reached, and reading the end point as "at share" would flatter a timid model).
    """
    if curve.get("real_share") is None:
        return None
    value = held_to(np.asarray(curve[column], float)[None], np.asarray(curve["real_share"], float)[None],
                    np.asarray([share]))
    return _finite(value[0])


def held_to(values: np.ndarray, shares: np.ndarray, share: np.ndarray) -> np.ndarray:
    """(..., E) values and real shares (falling with t), (...) shares to hold -> (...): the value at the first
    edge whose share is at most the held share; NaN where the most eager edge is already at or below it."""
    share = np.asarray(share, float)[..., None]
    under = shares <= share
    first = np.argmax(under, axis=-1)[..., None]
    picked = np.take_along_axis(values, first, axis=-1)[..., 0]
    return np.where(under.any(-1) & (shares[..., 0] > share[..., 0]), picked, np.nan)


def share_at_iou(curve: dict, iou: float) -> float | None:
    """The least real rock share at which the curve's rock-IoU reaches ``iou`` (the mirror of ``at_share``)."""
    if curve.get("real_share") is None:
        return None
    return _finite(least_share(np.asarray(curve["iou_rock"], float)[None], np.asarray(curve["real_share"], float)[None],
                               np.asarray([iou]))[0])


def least_share(iou: np.ndarray, shares: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(..., E) rock-IoU and real shares, (...) target IoU -> (...): the smallest share over the edges scoring at
    least the target (rock-IoU rises then falls with t, so no single crossing); NaN where none does."""
    reached = np.nan_to_num(iou, nan=-np.inf) >= np.asarray(target, float)[..., None]
    least = np.where(reached, shares, np.inf).min(-1)
    return np.where(np.isfinite(least), least, np.nan)


def _finite(value) -> float | None:
    return None if value is None or np.isnan(value) else float(value)


def rows(curve: dict) -> list:
    """The curve as CSV rows, one per edge, in ``COLUMNS`` order (real_share empty without photos)."""
    shares = curve["real_share"] or [None] * len(curve["t"])
    return [[curve["t"][k], curve["iou_rock"][k], curve["iou_rock_strict"][k], curve["precision"][k],
             curve["recall"][k], shares[k]] for k in range(len(curve["t"]))]
