"""Deltas at matched flood: is a variant better, or only more eager to call rock?

Each variant's operating curve (``regolith.curve``, counted by evaluate on the validation split
and a photo set) gives its rock-IoU at any real rock share. compare asks, per delta (DR at matched
size, more data with DR): the rock-IoU difference at the argmax share of the less-flooding side
and at fixed shares, and the mirror question, the real-share difference at matched synthetic
rock-IoU. Each comes with a paired bootstrap 95% interval that resamples validation frames and
photos together (``stats.bootstrap_sums``): both curves move with the threshold, so the matched
share is found again in every resample. Pure: numpy, no MLflow.
"""

import numpy as np

from regolith import ROCK, curve, names, stats

HELD = ("matched", *curve.SHARES)  # where a delta is read: the matched flood, then each fixed share
# their keys in the results and the compare run's metrics: iou_at_matched, iou_rock_at_real_5pct, ...
HELD_KEYS = ("iou_at_matched", *(names.at_share(share) for share in curve.SHARES))
GAIN_WORDS = {"dr_delta": "DR's gain", "size_delta": "more data's gain"}


def pooled(curves: list) -> tuple | None:
    """(frames x 3 x bins counts summed over seeds, photos x edges shares averaged over seeds), or None.

    Seeds of a variant pool as one model would: validation counts add up (the pooled rock-IoU), each
    photo's share is the mean of its seeds' shares. Needs every curve on the same frames and photos.
    """
    if not curves or any(c is None for c in curves):
        return None
    if any(c["frames"].shape != curves[0]["frames"].shape or c["photos"].shape != curves[0]["photos"].shape
           for c in curves):
        return None
    frames = np.sum([c["frames"] for c in curves], axis=0)
    shares = np.mean([curve.photo_shares(c["photos"]) for c in curves], axis=0)
    return frames, shares


def statistics(frame_sums: np.ndarray, photo_sums: np.ndarray, photos: int) -> np.ndarray:
    """R resampled sums of (variant, baseline) -> R x 5: rock-IoU deltas at the matched flood and at each fixed
    share, then the real-share delta at matched rock-IoU (both sides' lower argmax rock-IoU)."""
    resamples = len(frame_sums)
    iou = curve.rock_figures(frame_sums.reshape(resamples, 2, len(curve.LABELS), -1))["iou_rock"]
    share = photo_sums.reshape(resamples, 2, -1) / photos
    point = curve.argmax_index()
    matched = share[:, :, point].min(1)  # the less-flooding side's argmax share
    columns = []
    for held in (matched, *(np.full(resamples, s) for s in curve.SHARES)):
        at = curve.held_to(iou, share, np.stack([held, held], 1))
        columns.append(at[:, 0] - at[:, 1])
    target = iou[:, :, point].min(1)
    least = curve.least_share(iou, share, np.stack([target, target], 1))
    columns.append(least[:, 0] - least[:, 1])
    return np.stack(columns, 1)


def matched_delta(variant: tuple, baseline: tuple, seed: int = 0) -> dict:
    """Both pooled sides of a delta -> point values, intervals and the matched operating points."""
    frames = np.concatenate([variant[0].reshape(len(variant[0]), -1), baseline[0].reshape(len(baseline[0]), -1)], 1)
    photos = np.concatenate([variant[1], baseline[1]], 1)
    count = len(photos)
    point = statistics(frames.sum(0, keepdims=True), photos.sum(0, keepdims=True), count)[0]
    intervals = stats.bootstrap_sums((frames, photos), lambda f, p: statistics(f, p, count), seed) \
        or [None] * (len(HELD) + 1)
    sides = [curve.operating_curve(side[0], None) for side in (variant, baseline)]
    argmax = curve.argmax_index()
    shares = [side[1].mean(0) for side in (variant, baseline)]
    entry = {"frames": len(frames), "photos": count, "resamples": stats.RESAMPLES,
             "argmax_share": [float(s[argmax]) for s in shares],
             "argmax_iou": [float(side["iou_rock"][argmax]) for side in sides]}
    entry["matched_share"] = min(entry["argmax_share"])
    for n, held in enumerate(HELD_KEYS):
        entry[held] = interval_entry(point[n], intervals[n])
    entry["share_at_matched_iou"] = interval_entry(point[len(HELD)], intervals[len(HELD)])
    return entry


def interval_entry(value: float, interval: tuple | None) -> dict:
    """{"delta" (the value), "low", "high", "includes_zero"}: one number and its interval, None where undefined."""
    value = None if not np.isfinite(value) else float(value)
    low, high = interval or (None, None)
    return {"delta": value, "low": low, "high": high,
            "includes_zero": None if low is None else bool(low <= 0 <= high)}


def verdict(gain_words: str, entry: dict) -> str:
    """Plain words for a rock-IoU delta at matched flood, from its interval."""
    if entry["delta"] is None:
        return "not measured: a side never floods that much"
    if entry["low"] is None:
        return "no interval (fewer than two frames or photos)"
    if entry["low"] > 0:
        return f"{gain_words} holds at matched flood"
    if entry["high"] < 0:
        return f"{gain_words} disappears at matched flood: the variant scores lower there"
    return "the interval includes zero"


def flood_deltas(results: dict, variants: dict, curves: dict) -> dict | None:
    """Per delta, the matched-flood comparison; per variant, its pooled curve for the figure. None without curves.

    ``curves`` maps a run id to ``evaluate.read_curve``'s counts (or None). Every run of both deltas
    needs one, on one photo set, fit, TTA and validation split; otherwise {"refused": why}.
    """
    involved = {name for key in GAIN_WORDS for name in (results[key]["variant"], results[key]["baseline"])}
    refused = curve_refusal(involved, variants, curves)
    if refused is not None:
        return refused or None
    out = {"curves": {}, "photos_digest": curves[variants[next(iter(involved))]["run_ids"][0]]["digest"]}
    for name in sorted(involved, key=list(variants).index):
        frames, shares = pooled([curves[r] for r in variants[name]["run_ids"]])
        operating = curve.operating_curve(frames, None)
        out["curves"][name] = {"t": operating["t"], "iou_rock": operating["iou_rock"],
                               "real_share": shares.mean(0).tolist(), "argmax": operating["argmax"]}
    for key, words in GAIN_WORDS.items():
        out[key] = pair_at_matched_flood(results[key], variants, curves, words)
    return out


def lever_at_matched_flood(entry: dict, variants: dict, curves: dict) -> dict | None:
    """A ``--delta A:B`` at matched flood, as the built-in deltas: None without curves, {"refused": why} where
    some run of a side has none or the sides' curves were counted on different photos."""
    refused = curve_refusal({entry["variant"], entry["baseline"]}, variants, curves)
    if refused is not None:
        return refused or None
    return pair_at_matched_flood(entry, variants, curves, f"{entry['variant']}'s gain")


def curve_refusal(involved: set, variants: dict, curves: dict) -> dict | None:
    """None where every run of the ``involved`` variants has a curve, all on one photo set, fit, TTA and split;
    {} where none has one (nothing to say); else {"refused": why}."""
    found = {run_id: curves.get(run_id) for name in involved for run_id in variants[name]["run_ids"]}
    if not found or all(c is None for c in found.values()):
        return {}
    if any(c is None for c in found.values()):
        missing = sorted(name for name in involved if any(found.get(r) is None for r in variants[name]["run_ids"]))
        return {"refused": f"no operating curve for {', '.join(missing)}: run python -m regolith.evaluate with "
                           f"--images on each"}
    sets = {(c["digest"], c["fit"], c["tta"], c["split_digest"]) for c in found.values()}
    if len(sets) > 1:
        return {"refused": "the curves were counted on different photo sets, fits, TTA or validation splits: "
                           + "; ".join(f"photos {d[:12]} fit={f} tta={t} split {s[:12]}" for d, f, t, s in sorted(sets))}
    return None


def pair_at_matched_flood(entry: dict, variants: dict, curves: dict, words: str) -> dict | None:
    """One delta (``entry``: its variant, baseline and paired seeds) at matched flood, with its verdict."""
    seeds = entry["seeds"] or None
    sides = [pooled([curves[r] for r, s in zip(variants[name]["run_ids"], variants[name]["seeds"])
                     if seeds is None or s in seeds]) for name in (entry["variant"], entry["baseline"])]
    if any(side is None for side in sides):
        return None
    matched = matched_delta(*sides)
    matched["verdict"] = verdict(words, matched["iou_at_matched"])
    return {"variant": entry["variant"], "baseline": entry["baseline"], **matched}


def metrics(flood: dict | None, levers: dict | None = None) -> dict:
    """The compare run's matched-flood metrics: dr_delta/iou_at_matched, ..._low, ..._high, per held share.

    ``levers``: {key: a ``--delta``'s ``lever_at_matched_flood``}, logged as delta_1/iou_at_matched, ...
    """
    logged = {}
    entries = {**{key: (flood or {}).get(key) for key in GAIN_WORDS}, **(levers or {})}
    for key, entry in entries.items():
        if not entry or entry.get("refused"):
            continue
        for field in (*HELD_KEYS, "share_at_matched_iou"):
            for end in ("delta", "low", "high"):
                if entry[field][end] is not None:
                    logged[names.key(key, field if end == "delta" else f"{field}_{end}")] = entry[field][end]
    return logged


def split_scores(variants: dict, splits: dict) -> dict:
    """{split: {variant: rock-IoU, precision, recall and their 95% intervals over frames}} from each run's pass on
    the labelled splits that are not its validation split (``evaluate.read_split_confusions``), seeds pooled.

    A variant shows on a split only when all its runs were evaluated on it, on the same frames (digest).
    """
    table = {}
    for split in sorted({name for found in splits.values() for name in (found or {})}):
        for variant, v in variants.items():
            passes = [(splits.get(run_id) or {}).get(split) for run_id in v["run_ids"]]
            if any(p is None for p in passes) or len({p["digest"] for p in passes}) != 1:
                continue
            counts = np.sum([np.asarray(p["confusion"], dtype=float) for p in passes], axis=0)  # frames x 3 x 3
            point = rock_scores(counts.sum(0, keepdims=True).reshape(1, -1))[0]
            intervals = stats.bootstrap_sums((counts.reshape(len(counts), -1),), rock_scores) or [None] * 3
            table.setdefault(split, {})[variant] = {
                "frames": len(counts), "seeds": v["seeds"],
                **{name: interval_entry(value, interval) for name, value, interval in
                   zip(("iou_rock", "precision", "recall"), point, intervals)}}
    return table


def rock_scores(sums: np.ndarray) -> np.ndarray:
    """R x 9 summed confusion counts (true x predicted) -> R x 3: rock-IoU, precision, recall."""
    confusion = sums.reshape(len(sums), 3, 3)
    tp = confusion[:, ROCK, ROCK]
    predicted, labelled = confusion[:, :, ROCK].sum(1), confusion[:, ROCK].sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.stack([tp / (predicted + labelled - tp), tp / predicted, tp / labelled], 1)
