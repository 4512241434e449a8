"""Metrics against hand-computed tensors and against independent implementations."""

import math

import numpy as np
import torch
from torchmetrics.classification import MulticlassJaccardIndex

from regolith import metrics


def test_confusion_and_iou_by_hand():
    # Two images of 2x3 pixels; 255 pixels must not count whatever is predicted there.
    target = torch.tensor([[[0, 0, 1], [2, 255, 1]],
                           [[0, 2, 2], [255, 255, 0]]])
    pred = torch.tensor([[[0, 1, 1], [2, 1, 0]],
                         [[0, 2, 0], [2, 2, 0]]])
    confusion = metrics.confusion_matrix(pred, target)
    # rows: true class, columns: predicted; the last row: what was predicted on the 255 pixels
    assert confusion[:3].tolist() == [[3, 1, 0],
                                      [1, 1, 0],
                                      [1, 0, 2]]
    assert confusion[3].tolist() == [0, 1, 2]
    summary = metrics.iou_summary(confusion)
    assert summary["iou_regolith"] == 3 / (3 + 1 + 2)   # tp 3, fn 1, fp 2
    assert summary["iou_rock"] == 1 / (1 + 1 + 1)       # tp 1, fn 1, fp 1
    assert summary["iou_sky"] == 2 / (2 + 1 + 0)        # tp 2, fn 1, fp 0
    assert math.isclose(summary["miou"], (0.5 + 1 / 3 + 2 / 3) / 3)


def test_class_absent_from_predictions_scores_zero_and_absent_everywhere_is_nan():
    target = torch.tensor([0, 0, 1, 1, 2, 255])
    pred = torch.tensor([0, 0, 0, 0, 2, 1])  # rock never predicted; the 255 pixel's "rock" is ignored
    iou = metrics.iou_per_class(metrics.confusion_matrix(pred, target))
    assert iou.tolist() == [0.5, 0.0, 1.0]
    only_regolith = metrics.iou_per_class(metrics.confusion_matrix(torch.zeros(4), torch.zeros(4)))
    assert only_regolith[0] == 1.0 and torch.isnan(only_regolith[1:]).all()


def test_global_iou_matches_torchmetrics_and_numpy_on_random_batches():
    generator = torch.Generator().manual_seed(0)
    confusion = torch.zeros(4, 3, dtype=torch.long)
    reference = MulticlassJaccardIndex(num_classes=3, ignore_index=255, average=None)
    all_pred, all_target = [], []
    for _ in range(5):  # accumulate over batches, as validation does
        target = torch.randint(0, 3, (4, 17, 23), generator=generator)
        target[torch.rand(target.shape, generator=generator) < 0.1] = 255
        pred = torch.randint(0, 3, (4, 17, 23), generator=generator)
        confusion += metrics.confusion_matrix(pred, target)
        reference.update(pred, target)
        all_pred.append(pred.numpy().ravel())
        all_target.append(target.numpy().ravel())
    ours = metrics.iou_per_class(confusion)
    assert torch.allclose(ours.float(), reference.compute(), atol=1e-6)

    pred, target = np.concatenate(all_pred), np.concatenate(all_target)
    keep = target != 255
    for c in range(3):
        inter = np.sum((pred == c) & (target == c) & keep)
        union = np.sum(((pred == c) | (target == c)) & keep)
        assert math.isclose(ours[c].item(), inter / union, rel_tol=1e-12)


def test_global_iou_is_not_the_mean_of_per_batch_ious():
    # One batch with a huge rock, one with a tiny one: averaging per-batch IoU would give 0.5.
    big_t, big_p = torch.ones(100), torch.ones(100)
    small_t, small_p = torch.tensor([1, 0]), torch.tensor([0, 0])
    confusion = metrics.confusion_matrix(big_p, big_t) + metrics.confusion_matrix(small_p, small_t)
    assert metrics.iou_summary(confusion)["iou_rock"] == 100 / 101


def test_strict_rule_counts_ignored_pixels_predicted_as_a_class_as_its_false_positives():
    # The original study's rule: a 255 pixel predicted as rock is a false positive of rock.
    target = torch.tensor([[1, 1, 0, 0], [2, 255, 255, 255]])
    pred = torch.tensor([[1, 1, 0, 0], [2, 1, 1, 0]])
    confusion = metrics.confusion_matrix(pred, target)
    standard, strict = metrics.iou_per_class(confusion), metrics.iou_per_class(confusion, strict=True)
    assert standard.tolist() == [1.0, 1.0, 1.0]  # every labelled pixel right
    assert strict.tolist() == [2 / 3, 2 / 4, 1.0]  # rock: tp 2, fp 2 (two 255 pixels); regolith: tp 2, fp 1
    summary = metrics.iou_summary(confusion)
    assert summary["iou_rock"] == 1.0 and summary["iou_rock_strict"] == 0.5
    assert math.isclose(summary["miou_strict"], (2 / 3 + 0.5 + 1) / 3)


def test_miou_leaves_out_a_class_absent_from_labels_and_predictions():
    # A frame without sky anywhere: its mIoU is over regolith and rock (the original's nanmean), not NaN.
    target = torch.tensor([0, 0, 1, 1])
    pred = torch.tensor([0, 1, 1, 1])
    summary = metrics.iou_summary(metrics.confusion_matrix(pred, target))
    assert math.isnan(summary["iou_sky"])
    assert summary["miou"] == (1 / 2 + 2 / 3) / 2
