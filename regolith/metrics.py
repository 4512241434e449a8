"""Segmentation metrics: a confusion matrix over a whole split, then IoU from it.

Counting and reducing are separate so that IoU is always global over every pixel of
the split, never an average of per-batch IoUs. Imports torch only, so the training
loop, the fresh inference pass and the tests all use the same arithmetic.

The matrix keeps one more row than there are classes: what was predicted on pixels labelled
255. The standard rule (the headline) leaves those pixels out; the original study's rule counts
a 255 pixel predicted as class c as a false positive of c (``strict``). Both come from the same
counts.
"""

import torch

from regolith import CLASSES, IGNORE_INDEX, ROCK, names


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int = len(CLASSES),
                     ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Counts of (true class, predicted class): (C + 1) x C, the last row the pixels labelled ``ignore_index``.

    Counted into fixed bins on the tensors' device, so accumulating it per batch needs no host
    sync. Rows are the true class, columns the prediction. Labels are checked on load to be the
    classes or ``ignore_index``.
    """
    # One count over (label, prediction) pairs, with no boolean indexing and no relabelling pass: the
    # ignore label's pairs land in bins of their own, read as row C. scatter_add_ into a tensor of a
    # fixed size, not bincount, whose CUDA kernel reads the largest index back to size its output:
    # a host sync per batch (on the CPU the two cost the same).
    index = target.reshape(-1).long() * num_classes + pred.reshape(-1).long()
    counts = torch.zeros((max(ignore_index, num_classes) + 1) * num_classes, dtype=torch.long, device=index.device)
    counts.scatter_add_(0, index, torch.ones((), dtype=torch.long, device=index.device).expand_as(index))
    ignored = counts[ignore_index * num_classes:(ignore_index + 1) * num_classes]
    return torch.cat([counts[:num_classes * num_classes], ignored]).reshape(num_classes + 1, num_classes)


def iou_per_class(confusion: torch.Tensor, strict: bool = False) -> torch.Tensor:
    """Intersection over union per class, as float64, of a confusion matrix or a stack of them (... x R x C).

    The first C rows are the labelled pixels; a last row, where present, holds the predictions on
    pixels labelled 255, which count only with ``strict`` (as false positives of the class
    predicted there: the original study's rule). A class absent from both the labels and the
    predictions has no union; its IoU is NaN rather than 0 or 1, so it cannot silently lift or
    sink a mean.
    """
    confusion = confusion.double()
    classes = confusion.shape[-1]
    labelled = confusion[..., :classes, :]
    intersection = labelled.diagonal(dim1=-2, dim2=-1)
    predicted = (confusion if strict else labelled).sum(-2)
    return intersection / (predicted + labelled.sum(-1) - intersection)


def mean_iou(iou: torch.Tensor) -> torch.Tensor:
    """The mean over the classes present: a class absent from labels and predictions (NaN) is left out."""
    return iou.nanmean(-1)


def iou_summary(confusion: torch.Tensor) -> dict:
    """Per-class IoU and mIoU as plain floats keyed as logged (``names.SCORES``); with the 255 row, the strict pair too."""
    iou = iou_per_class(confusion)
    summary = dict(zip(names.SCORES, [*iou.tolist(), mean_iou(iou).item()]))
    if confusion.shape[-2] > confusion.shape[-1]:
        strict = iou_per_class(confusion, strict=True)
        summary.update(dict(zip(names.STRICT_SCORES, [strict[ROCK].item(), mean_iou(strict).item()])))
    return summary
