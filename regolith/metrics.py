"""Segmentation metrics: a confusion matrix over a whole split, then IoU from it.

Counting and reducing are separate so that IoU is always global over every pixel of
the split, never an average of per-batch IoUs. Imports torch only, so the training
loop, the fresh inference pass and the tests all use the same arithmetic.
"""

import torch

from regolith import CLASSES, IGNORE_INDEX, names


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int = len(CLASSES),
                     ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Counts of (true class, predicted class) over all pixels whose label is not ignored.

    Built with one bincount on the tensors' device, so accumulating it per batch needs
    no host sync. Rows are the true class, columns the prediction.
    """
    # No boolean indexing (it would force a host sync per batch): ignored pixels land in bins past
    # the first num_classes**2, which are dropped. Labels are checked to be in {0, 1, 2, 255} on load.
    index = target.reshape(-1).long() * num_classes + pred.reshape(-1).long()
    counts = torch.bincount(index, minlength=(max(ignore_index, num_classes) + 1) * num_classes)
    return counts[:num_classes * num_classes].reshape(num_classes, num_classes)


def iou_per_class(confusion: torch.Tensor) -> torch.Tensor:
    """Intersection over union per class, as float64, of a C x C matrix or a stack of them (... x C x C).

    A class absent from both the labels and the predictions has no union; its IoU is
    NaN rather than 0 or 1, so it cannot silently lift or sink a mean.
    """
    confusion = confusion.double()
    intersection = confusion.diagonal(dim1=-2, dim2=-1)
    union = confusion.sum(-2) + confusion.sum(-1) - intersection
    return intersection / union


def iou_summary(confusion: torch.Tensor) -> dict:
    """Per-class IoU and mIoU (the mean over the classes) as plain floats keyed as logged (``names.SCORES``)."""
    iou = iou_per_class(confusion).tolist()
    return dict(zip(names.SCORES, [*iou, sum(iou) / len(iou)]))
