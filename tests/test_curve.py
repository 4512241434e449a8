"""The operating curve: counts in fixed bins against brute-force thresholding of the same logits, its shape,
and its argmax point against the recorded verify/ rock-IoU and real/ rock share of a tracked run."""

import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from transformers import SegformerForSemanticSegmentation

from conftest import simple_frame, tiny_config
from regolith import IGNORE_INDEX, ROCK, curve, evaluate, model as segformer, photos, photoset


@pytest.fixture(scope="module")
def logits_and_labels():
    """A tiny random SegFormer's logits on four 32 px frames (a 255 row in each) and three letterboxed photos."""
    torch.manual_seed(0)
    config = tiny_config()
    config.num_labels = 3
    net = SegformerForSemanticSegmentation(config).eval()
    rng = np.random.default_rng(0)
    frames = [simple_frame(rng) for _ in range(4)]
    images = torch.from_numpy(np.stack([rgb for rgb, _ in frames]).astype(np.uint8)).permute(0, 3, 1, 2).contiguous()
    masks = torch.from_numpy(np.stack([mask for _, mask in frames]))
    # Photos of other shapes, letterboxed: their padding must never count.
    fitted = [photoset.fit(rng.integers(0, 255, shape, dtype=np.uint8), 32) for shape in
              ((20, 32, 3), (32, 12, 3), (32, 32, 3))]
    photo_images, valid = photoset.stack(fitted)
    with torch.no_grad():
        # A random head's logits barely differ; standardized per class, margins spread over many bins.
        frame_logits, photo_logits = (spread(segformer.logits_at_mask_size(net, batch)) for batch in (images, photo_images))
    assert (masks == IGNORE_INDEX).any() and not valid.all()
    return frame_logits, masks, photo_logits, valid


def spread(logits: torch.Tensor) -> torch.Tensor:
    return (logits - logits.mean((0, 2, 3), keepdim=True)) / logits.std((0, 2, 3), keepdim=True) * 6


def brute_force(frame_logits, masks, photo_logits, valid, t: float) -> dict:
    """Threshold every pixel's margin at t and count, with no bins."""
    rock_called = curve.rock_margin(frame_logits) > t
    rock, other = masks == ROCK, (masks != ROCK) & (masks != IGNORE_INDEX)
    tp, fp = int((rock_called & rock).sum()), int((rock_called & other).sum())
    fp_ignored = int((rock_called & (masks == IGNORE_INDEX)).sum())
    labelled = int(rock.sum())
    called = curve.rock_margin(photo_logits) > t
    shares = [int((c & v).sum()) / int(v.sum()) for c, v in zip(called, valid)]
    return {"iou_rock": tp / ((tp + fp) + labelled - tp), "iou_rock_strict": tp / ((tp + fp + fp_ignored) + labelled - tp),
            "precision": tp / (tp + fp) if tp + fp else float("nan"), "recall": tp / labelled,
            "real_share": float(np.asarray(shares, dtype=float).mean())}


def the_curve(frame_logits, masks, photo_logits, valid) -> dict:
    frames = curve.frame_counts(curve.rock_margin(frame_logits), masks)
    photo = curve.photo_counts(curve.rock_margin(photo_logits), valid)
    assert int(frames.sum()) == masks.numel() and int(photo.sum()) == int(valid.sum())  # every pixel, no padding
    return curve.operating_curve(frames.numpy(), photo.numpy())


def test_counts_are_exact_at_every_bin_edge(logits_and_labels):
    operating = the_curve(*logits_and_labels)
    margins = curve.rock_margin(logits_and_labels[0])
    assert margins.std() > 1 and (margins > 0).any() and (margins < 0).any()  # spread over many bins
    for k in [*range(0, len(curve.EDGES), 37), curve.argmax_index(), len(curve.EDGES) - 1]:
        expected = brute_force(*logits_and_labels, float(curve.EDGES[k]))
        for column, value in expected.items():
            got = operating[column][k]
            assert (np.isnan(got) and np.isnan(value)) or got == value, (column, k, got, value)


def test_share_and_recall_fall_as_the_threshold_rises(logits_and_labels):
    operating = the_curve(*logits_and_labels)
    for column in ("real_share", "recall"):
        values = np.asarray(operating[column])
        assert (np.diff(values) <= 0).all(), column
        assert values[0] > values[-1]
    assert operating["t"][operating["argmax"]] == 0.0


def test_argmax_point_is_the_argmax(logits_and_labels):
    frame_logits, masks, photo_logits, valid = logits_and_labels
    operating = the_curve(*logits_and_labels)
    from regolith import metrics
    confusion = sum(metrics.confusion_matrix(p, m) for p, m in zip(frame_logits.argmax(1), masks))
    assert operating["iou_rock"][operating["argmax"]] == metrics.iou_summary(confusion)["iou_rock"]
    shares, flood = photoset.rock_flood(photo_logits.argmax(1), valid)
    assert operating["real_share"][operating["argmax"]] == flood["mean"]


def test_rock_iou_at_a_held_share_reads_the_most_eager_edge_at_or_below_it():
    operating = {"t": [-1, 0, 1, 2], "iou_rock": [0.3, 0.6, 0.5, 0.2], "real_share": [0.5, 0.2, 0.08, 0.01]}
    assert curve.at_share(operating, 0.10) == 0.5 and curve.at_share(operating, 0.20) == 0.6
    assert curve.at_share(operating, 0.6) is None  # never flooded that much: not reached
    assert curve.share_at_iou(operating, 0.5) == 0.08 and curve.share_at_iou(operating, 0.6) == 0.2  # least flood
    assert curve.share_at_iou(operating, 0.7) is None
    assert curve.at_share({**operating, "real_share": None}, 0.1) is None


def test_evaluate_records_the_curve_and_its_argmax_is_the_recorded_numbers(in_store, tmp_path, capsys):
    run_id = in_store["run_id"]
    assert photos.main(["--run", run_id, "--images", str(in_store["photos"])]) is None
    assert evaluate.main(["--run", run_id, "--images", str(in_store["photos"])]) is None
    out = capsys.readouterr().out
    assert "operating curve on 3 photos" in out
    data = MlflowClient().get_run(run_id).data
    assert data.metrics["verify/real_share_at_argmax"] == data.metrics["real/rock_share_mean"]
    assert data.tags["verify/curve_photos_digest"] == data.tags["real/photos_digest"]
    folder = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=data.tags["verify/artifacts"],
                                                      dst_path=str(tmp_path)))
    assert {"curve.csv", "curve.json", "curve_counts.npz", "curve.png"} <= {p.name for p in folder.iterdir()}
    recorded = json.loads((folder / "curve.json").read_text())
    assert recorded["iou_rock"][recorded["argmax"]] == data.metrics["verify/iou_rock"]
    assert recorded["real_share"][recorded["argmax"]] == data.metrics["real/rock_share_mean"]
    assert len((folder / "curve.csv").read_text().splitlines()) == len(curve.EDGES) + 1
    counted = evaluate.read_curve(run_id)  # what compare resamples
    assert counted["frames"].shape == (4, 3, len(curve.EDGES) + 1) and counted["photos"].shape == (3, len(curve.EDGES) + 1)
    assert counted["digest"] == data.tags["real/photos_digest"] and counted["tta"] == "none"
    assert curve.operating_curve(counted["frames"], counted["photos"])["iou_rock"] == recorded["iou_rock"]
    images = [info.path for info in MlflowClient().list_artifacts(run_id, "images")]
    assert any("operating_curve" in path for path in images)  # in MLflow's image view
    # The same pass without photos records no curve and no curve metric from it.
    before = len(MlflowClient().get_metric_history(run_id, "verify/real_share_at_argmax"))
    assert evaluate.main(["--run", run_id, "--images", "none"]) is None
    assert len(MlflowClient().get_metric_history(run_id, "verify/real_share_at_argmax")) == before


def test_entropy_lies_between_zero_and_log_3():
    scores = torch.randn(2, 3, 8, 8) * 5
    entropy = segformer.entropy(scores)
    assert (entropy >= 0).all() and (entropy <= np.log(3) + 1e-6).all()
    assert torch.allclose(segformer.entropy(torch.zeros(1, 3, 2, 2)), torch.full((1, 2, 2), float(np.log(3))))
    assert segformer.entropy(torch.tensor([[[[1e4]], [[0.0]], [[0.0]]]])).item() == pytest.approx(0, abs=1e-6)


def test_flip_tta_is_mirror_equivariant_and_none_is_the_logits_themselves():
    torch.manual_seed(0)
    config = tiny_config()
    config.num_labels = 3
    net = SegformerForSemanticSegmentation(config).eval()
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        assert torch.equal(segformer.class_scores(net, images), segformer.logits_at_mask_size(net, images))
        tta = segformer.class_scores(net, images, tta="hflip")
        mirrored = segformer.class_scores(net, images.flip(-1), tta="hflip").flip(-1)
        plain = segformer.logits_at_mask_size(net, images)
    # Averaging an image with its mirror gives its mirror's answer mirrored: the choice of side is gone.
    assert torch.allclose(tta, mirrored, atol=1e-5) and not torch.allclose(tta, plain.log_softmax(1), atol=1e-3)
    assert torch.allclose(tta.exp().sum(1), torch.ones(2, 32, 32), atol=1e-5)  # log of a mean softmax


def test_tta_and_entropy_are_recorded_beside_the_plain_numbers(in_store, tmp_path):
    run_id = in_store["run_id"]
    assert evaluate.main(["--run", run_id, "--images", str(in_store["photos"])]) is None
    plain = MlflowClient().get_run(run_id).data
    assert evaluate.main(["--run", run_id, "--images", str(in_store["photos"]), "--tta", "hflip"]) is None
    after = MlflowClient().get_run(run_id).data
    assert {k: v for k, v in after.metrics.items() if k.startswith("verify/") and "/hflip/" not in k} == \
        {k: v for k, v in plain.metrics.items() if k.startswith("verify/") and "/hflip/" not in k}
    assert after.tags["verify/check"] == plain.tags["verify/check"] == "pass"
    assert after.tags["verify/hflip/check"].endswith("tta=hflip: reported only")
    for prefix in ("verify", "verify/hflip"):
        val, photo = after.metrics[f"{prefix}/entropy_val"], after.metrics[f"{prefix}/entropy_photos"]
        assert 0 < val <= np.log(3) and 0 < photo <= np.log(3)
        assert after.metrics[f"{prefix}/entropy_ratio_photos_val"] == pytest.approx(photo / val)
    assert photos.main(["--run", run_id, "--images", str(in_store["photos"]), "--tta", "hflip"]) is None
    measured = MlflowClient().get_run(run_id).data
    assert "real/hflip/rock_share_mean" in measured.metrics and 0 < measured.metrics["real/hflip/mean_entropy"]
    assert photos.read_measurement(run_id)["tta"] == "hflip"  # compare sees the TTA and will not mix it
