"""Deltas at matched flood on constructed curves whose answer is known: a variant that is only more eager, and
one that is better; the bootstrap that resamples frames and photos together; the table, metrics and figure."""

import numpy as np
import pytest
import torch

from regolith import ablation, compare, curve, figures, flood, names, stats


def margins_to_counts(rng, shift_rock: float = 0.0, shift_all: float = 0.0) -> dict:
    """A curve as evaluate.read_curve returns it, from margins drawn per pixel (same draw for every call's rng)."""
    labels = torch.from_numpy(rng.choice([0, 1, 2, 255], size=(6, 16, 16), p=[0.5, 0.2, 0.25, 0.05]))
    margin = torch.from_numpy(np.where(labels.numpy() == 1, 1.0, -1.0) + rng.normal(0, 1.5, (6, 16, 16))).float()
    margin = margin + shift_all + shift_rock * (labels == 1)
    photo_margin = torch.from_numpy(rng.normal(-1.5, 1.5, (5, 16, 16))).float() + shift_all
    valid = torch.ones(5, 16, 16, dtype=torch.bool)
    valid[:, :3] = False  # letterbox padding
    return {"frames": curve.frame_counts(margin, labels).numpy(), "photos": curve.photo_counts(photo_margin, valid).numpy(),
            "digest": "photos1", "fit": "letterbox", "tta": "none", "split_digest": "val1", "photo_names": []}


def run(dr, frames, run_id, rock):
    return {"run_id": run_id, "run_name": run_id, "start_time": 0, "dr": dr, "frames": frames, "seed": 0,
            "variant": names.variant(dr, frames), "best_epoch": 1, "iou_rock": rock, "iou_regolith": 0.9,
            "iou_sky": 0.9, "miou": 0.8, "real_rock_share": None, "settings": {}}


RUNS = [run(False, 8, "n", 0.5), run(True, 8, "d", 0.6), run(True, 16, "D", 0.7)]


def test_only_more_eager_gains_nothing_at_matched_flood_and_a_better_curve_holds():
    # dr_8 is nodr_8 with every margin raised by 1 (40 bins): the same curve, an argmax further along it.
    # dr_16 separates rock better (rock pixels' margins up by 2, nothing else moves).
    curves = {"n": margins_to_counts(np.random.default_rng(0)),
              "d": margins_to_counts(np.random.default_rng(0), shift_all=1.0),
              "D": margins_to_counts(np.random.default_rng(0), shift_all=1.0, shift_rock=2.0)}
    results = ablation.ablation_results(RUNS, "x", curves=curves)
    dr, size = results["flood"]["dr_delta"], results["flood"]["size_delta"]
    assert dr["argmax_share"][0] > dr["argmax_share"][1]  # more eager: floods more at its argmax
    assert dr["argmax_iou"][0] != dr["argmax_iou"][1]
    matched = dr["iou_at_matched"]
    assert matched["delta"] == 0.0 and matched["low"] == matched["high"] == 0.0  # same curve in every resample
    assert dr["verdict"] == "the interval includes zero"
    assert size["iou_at_matched"]["low"] > 0 and size["verdict"] == "more data's gain holds at matched flood"
    assert size["share_at_matched_iou"]["delta"] < 0  # the better curve reaches the same rock-IoU with less flood
    assert size["photos"] == 5 and size["frames"] == 6
    # the table, the compare run's metrics and the figure carry it
    table = compare.format_table(results)
    assert "At matched flood" in table and "verdict: more data's gain holds at matched flood" in table
    logged = compare.delta_metrics(results)
    assert logged["dr_delta/iou_at_matched"] == 0.0 and logged["size_delta/iou_at_matched_low"] > 0
    assert set(results["flood"]["curves"]) == {"nodr_8", "dr_8", "dr_16"}


def test_curves_of_other_photo_sets_are_refused_not_compared():
    curves = {r["run_id"]: margins_to_counts(np.random.default_rng(0)) for r in RUNS}
    curves["D"] = {**curves["D"], "fit": "cover"}
    results = ablation.ablation_results(RUNS, "x", curves=curves)
    assert "different photo sets" in results["flood"]["refused"]
    assert any(w.startswith("no deltas at matched flood") for w in results["warnings"])
    assert "At matched flood" not in compare.format_table(results)
    assert ablation.ablation_results(RUNS, "x")["flood"] is None  # no curves at all: nothing to say


def test_the_figure_has_a_panel_with_every_variants_curve(tmp_path):
    curves = {r["run_id"]: margins_to_counts(np.random.default_rng(0), shift_all=i) for i, r in enumerate(RUNS)}
    results = ablation.ablation_results(RUNS, "x", curves=curves)
    path = tmp_path / "ablation.png"
    figures.plot_ablation(results, {}, path)
    assert path.stat().st_size > 50_000


def test_bootstrap_of_sums_resamples_each_group_on_its_own():
    rng = np.random.default_rng(1)
    frames, photos = rng.normal(size=(40, 2)), rng.normal(3, 1, size=(9, 1))
    intervals = stats.bootstrap_sums((frames, photos), lambda f, p: np.stack([f[:, 0] / 40, p[:, 0] / 9], 1))
    (f_low, f_high), (p_low, p_high) = intervals
    assert f_low < frames[:, 0].mean() < f_high and p_low < photos.mean() < p_high
    assert (p_high - p_low) > (f_high - f_low)  # 9 photos spread more than 40 frames
    assert stats.bootstrap_sums((frames[:1], photos), lambda f, p: f) is None
    assert flood.verdict("DR's gain", {"delta": -0.1, "low": -0.2, "high": -0.01}).startswith("DR's gain disappears")


def test_labelled_splits_per_variant_with_intervals_over_frames():
    # two frames per split: rock 8 labelled, 6 found, 2 false alarms on frame 0; rock 4, 4 found on frame 1
    frames = [[[10, 2, 0], [2, 6, 0], [0, 0, 9]], [[12, 0, 0], [0, 4, 0], [0, 0, 5]]]
    variants = {"nodr_8": {"run_ids": ["n"], "seeds": [0]}, "dr_8": {"run_ids": ["d", "e"], "seeds": [0, 1]}}
    splits = {"n": {"real_frames": {"digest": "a", "frames": ["0", "1"], "confusion": frames}},
              "d": {"real_frames": {"digest": "a", "frames": ["0", "1"], "confusion": frames}},
              "e": {}}  # one dr_8 seed was never evaluated there: dr_8 is left out of that split
    table = flood.split_scores(variants, splits)
    row = table["real_frames"]["nodr_8"]
    assert row["iou_rock"]["delta"] == pytest.approx(10 / 14) and row["precision"]["delta"] == pytest.approx(10 / 12)
    assert row["recall"]["delta"] == pytest.approx(10 / 12) and row["iou_rock"]["low"] <= 10 / 14 <= row["iou_rock"]["high"]
    assert "dr_8" not in table["real_frames"]


def test_a_lever_delta_is_read_at_matched_flood_too():
    # dr_8+gray: dr_8 with every margin raised (only more eager); dr_8+blur: rock separated better.
    lever = [run(True, 8, "g", 0.65), run(True, 8, "b", 0.7)]
    lever[0]["variant"], lever[1]["variant"] = names.variant(True, 8, "hflip,gray"), names.variant(True, 8, "hflip,blur")
    curves = {"n": margins_to_counts(np.random.default_rng(0)), "d": margins_to_counts(np.random.default_rng(0)),
              "D": margins_to_counts(np.random.default_rng(0), shift_rock=1.0),
              "g": margins_to_counts(np.random.default_rng(0), shift_all=1.0),
              "b": margins_to_counts(np.random.default_rng(0), shift_rock=2.0)}
    asked = ("dr_8:dr_8+gray", "dr_8:dr_8+blur")
    eager, better = ablation.ablation_results(RUNS + lever, "x", curves=curves, asked=asked)["deltas"]
    assert eager["flood"]["argmax_share"][0] > eager["flood"]["argmax_share"][1]
    assert eager["flood"]["iou_at_matched"]["delta"] == 0.0 and eager["flood"]["verdict"] == "the interval includes zero"
    assert better["flood"]["iou_at_matched"]["low"] > 0
    assert better["flood"]["verdict"] == "dr_8+blur's gain holds at matched flood"
    results = ablation.ablation_results(RUNS + lever, "x", curves=curves, asked=asked)
    table = compare.format_table(results)
    assert "at matched flood: dr_8+blur - dr_8; argmax real share" in table
    assert "verdict: dr_8+blur's gain holds at matched flood" in table
    logged = compare.delta_metrics(results)
    assert logged["delta_1/iou_at_matched"] == 0.0 and logged["delta_2/iou_at_matched_low"] > 0
    assert "delta_2/iou_rock_at_real_10pct" in logged
    # a side without a curve: said, not guessed
    del curves["b"]
    missing = ablation.ablation_results(RUNS + lever, "x", curves=curves, asked=asked)
    assert missing["deltas"][1]["flood"] == {"refused": "no operating curve for dr_8+blur: run python -m "
                                                        "regolith.evaluate with --images on each"}
    assert "no delta at matched flood: no operating curve for dr_8+blur" in compare.format_table(missing)
    assert ablation.ablation_results(RUNS + lever, "x", asked=asked)["deltas"][0]["flood"] is None
