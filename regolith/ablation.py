"""The size-matched ablation as arithmetic: store rows -> training runs -> variants -> deltas and their intervals.

``compare`` reads the store and hands its rows here (``select_runs``), then the per-frame
confusions and real-photo measurements of the runs that count (``ablation_results``); what
comes back is plain data, the whole answer that compare prints, draws and records. Several
experiments, one per generation of the rendered data, line up with ``generations_results``.
No MLflow and no printing here, so every number can be checked on small hand-made tables.
"""

import statistics

import numpy as np
import torch

from regolith import ROCK, Refused, metrics, names, photoset, reference, same_value, stats

# What must be equal across the variants for the deltas to isolate DR and data size: the training
# recipe (params as train.py logs them), the validation split (its digest tag), and precision and
# compile, which change the numbers too (bf16 rounding; inductor's own dropout draws).
SETTINGS = ("epochs", "lr", "batch", "patience", "augment", "weight_decay", "schedule", names.PRETRAINED_ID,
            names.IMAGE_SIZE, names.VAL_DIGEST, names.PRECISION, names.COMPILED)
TERMINAL_STATUSES = ("FAILED", "KILLED")
DELTAS = ("dr_delta", "size_delta")  # the two questions of the ablation, as keyed in the results
GAINS = {"dr_delta": ("dr_750", "nodr_750"), "size_delta": ("dr_1500", "dr_750")}  # the study's own pairs
# Best-checkpoint scores a variant summarizes: the standard rule's, the original study's strict one, and the
# share of real photos' pixels called rock (the rock flood), where the runs were pointed at real photos.
REAL_SHARE = names.REAL_SHARE
RECORDED = (*names.SCORES, *names.STRICT_SCORES, REAL_SHARE)


# ---- the store's rows -> training runs -------------------------------------------------------

def training_run(row: dict) -> dict | None:
    """A store row as a training-run record, or None where it lacks what the ablation needs.

    It needs its variant tags and the headline score (``best/iou_rock``); any other score a run
    did not record (an older run, before that metric existed) is None, "not recorded".
    """
    tags, recorded = row["tags"], row["metrics"]
    try:
        dr = {"true": True, "false": False}[tags[names.DR]]
        frames, seed = int(tags[names.FRAMES]), int(tags[names.SEED])
        headline = recorded[names.key(names.BEST, names.HEADLINE)]
    except (KeyError, ValueError):
        return None
    best_epoch = recorded.get(names.BEST_EPOCH)
    settings = {**row.get("params", {}), **tags}
    return {"run_id": row["run_id"], "run_name": row["run_name"], "start_time": row["start_time"],
            "dr": dr, "frames": frames, "seed": seed, "variant": names.variant(dr, frames),
            "best_epoch": None if best_epoch is None else int(best_epoch),
            **{score: recorded.get(names.key(names.BEST, score)) for score in RECORDED}, names.HEADLINE: headline,
            "settings": {key: settings.get(key) for key in SETTINGS}}


def select_runs(rows: list, stale: tuple = ()) -> tuple:
    """The training runs that count: FINISHED, complete, and the latest per (variant, seed).

    Returns (runs sorted by variant then seed, counts of the training runs left out and why).
    Runs of other kinds (earlier compare runs, an ablation wrapper) are not candidates at all.
    ``stale``: ids of RUNNING runs whose process is gone (``regolith.runs``), counted as such.
    """
    ignored = {"failed": 0, "killed": 0, "running": 0, "stale": 0, "incomplete": 0, "superseded": 0}
    latest = {}
    for row in rows:
        if row["tags"].get(names.KIND) != names.KIND_TRAIN:
            continue
        if row["status"] != "FINISHED":
            ignored[row["status"].lower() if row["status"] in TERMINAL_STATUSES
                    else "stale" if row["run_id"] in stale else "running"] += 1
            continue
        run = training_run(row)
        if run is None:
            ignored["incomplete"] += 1
            continue
        key = (run["dr"], run["frames"], run["seed"])
        if key in latest:
            ignored["superseded"] += 1
            if (run["start_time"], run["run_id"]) < (latest[key]["start_time"], latest[key]["run_id"]):
                continue
        latest[key] = run
    return [latest[key] for key in sorted(latest)], ignored


# ---- runs -> variants -> deltas (pure) ---------------------------------------------------------

def spread(values: list) -> dict:
    """Mean and sample standard deviation of the values recorded (None: not recorded).

    The deviation is None for a single value; both are None where no run recorded the score.
    """
    values = [value for value in values if value is not None]
    if not values:
        return {"mean": None, "std": None}
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else None}


def summarize_variants(runs: list) -> dict:
    """Per variant, ordered nodr before dr and by frames: ids, seeds, and each best score's spread."""
    groups = {}
    for run in sorted(runs, key=lambda r: (r["dr"], r["frames"], r["seed"])):
        groups.setdefault(run["variant"], []).append(run)
    variants = {}
    for name, group in groups.items():
        variants[name] = {
            "dr": group[0]["dr"], "frames": group[0]["frames"],
            "seeds": [r["seed"] for r in group], "run_ids": [r["run_id"] for r in group],
            "run_names": [r["run_name"] for r in group], "best_epoch": [r["best_epoch"] for r in group],
            **{score: spread([r.get(score) for r in group]) for score in RECORDED},
            "per_seed": {str(r["seed"]): {score: r.get(score) for score in RECORDED} for r in group},
            "settings": group[0]["settings"],
        }
    return variants


def pick_comparisons(variants: dict, experiment: str) -> tuple:
    """(matched, larger): the dr/nodr pair at the largest count both have, and dr at its largest count.

    Refuses, naming the variant it needs and the ones found, where either is missing.
    """
    found = ", ".join(variants) or "none"
    dr_counts = {v["frames"] for v in variants.values() if v["dr"]}
    nodr_counts = {v["frames"] for v in variants.values() if not v["dr"]}
    common = dr_counts & nodr_counts
    if not common:
        if nodr_counts and dr_counts:
            needed = "a dr and a nodr variant with the same frame count (e.g. " + ", ".join(
                f"{names.variant(True, n)} beside {names.variant(False, n)}" for n in sorted(nodr_counts)) + ")"
        elif nodr_counts or dr_counts:
            needed = f"a {'nodr (regolith.dr=false)' if dr_counts else 'dr (regolith.dr=true)'} variant"
        else:
            needed = "a nodr and a dr variant at the same frame count"
        raise Refused(f"experiment {experiment!r}: the DR delta needs {needed}; found FINISHED training runs of: "
                      f"{found}")
    matched = max(common)
    if max(dr_counts) == matched:
        raise Refused(
            f"experiment {experiment!r}: the data-size delta needs a dr variant with more than the matched {matched} "
            f"frames (e.g. {names.variant(True, 2 * matched)}); found FINISHED training runs of: {found}")
    return matched, max(dr_counts)


def delta(variants: dict, variant: str, baseline: str, score: str = names.HEADLINE) -> dict:
    """``variant`` minus ``baseline`` on ``score``, absolute and relative to the baseline.

    Paired by seed: the delta of each seed both variants ran, then their mean and standard
    deviation. Seeds only one variant ran are left out of the delta (they stay in the table).
    """
    a, b = variants[variant], variants[baseline]
    seeds = sorted(set(a["seeds"]) & set(b["seeds"]))
    result = {"variant": variant, "baseline": baseline, "metric": names.key(names.BEST, score), "seeds": seeds,
              "seed_interval": None}
    if seeds:
        pairs = [(a["per_seed"][str(s)][score], b["per_seed"][str(s)][score]) for s in seeds]
        absolute = spread([x - y for x, y in pairs])
        result["seed_interval"] = stats.seed_interval([x - y for x, y in pairs])
        relative = spread([(x - y) / y for x, y in pairs]) if all(y for _, y in pairs) else None
    else:
        # No common seed: the difference of the means, with no spread to give.
        absolute = {"mean": a[score]["mean"] - b[score]["mean"], "std": None}
        base = b[score]["mean"]
        relative = {"mean": absolute["mean"] / base, "std": None} if base else None
    result.update({"absolute": absolute["mean"], "absolute_std": absolute["std"],
                   "relative": relative and relative["mean"], "relative_std": relative and relative["std"],
                   "paired": bool(seeds)})
    return result


def rock_iou(counts: np.ndarray) -> np.ndarray:
    """Global rock-IoU (``metrics.iou_per_class``) of flattened 3 x 3 confusion counts: (..., 9) -> (...)."""
    return metrics.iou_per_class(torch.from_numpy(counts).reshape(*counts.shape[:-1], 3, 3))[..., ROCK].numpy()


def paired_bootstrap(variant: np.ndarray, baseline: np.ndarray, seed: int = 0) -> dict | None:
    """The rock-IoU delta's interval by a paired percentile bootstrap over validation frames (``stats.bootstrap``).

    ``variant`` and ``baseline`` are frames x 3 x 3 confusion counts on the same frames. Each
    resample draws frames with replacement and recomputes global IoU on both sides from that
    same draw, so frame difficulty, shared by both models, cancels out of the spread. None with
    a single frame.
    """
    frames = len(variant)
    samples = (np.asarray(variant, float).reshape(frames, 9), np.asarray(baseline, float).reshape(frames, 9))

    def rock_delta(v, b, axis=-1):  # scipy hands resamples with the frame axis last
        return rock_iou(np.moveaxis(v.sum(axis), 0, -1)) - rock_iou(np.moveaxis(b.sum(axis), 0, -1))

    interval = stats.bootstrap(samples, rock_delta, seed, paired=True)
    if interval is None:
        return None
    low, high = interval
    point = float(rock_iou(samples[0].sum(0)) - rock_iou(samples[1].sum(0)))
    return {"low": low, "high": high, "point": point, "frames": frames, "resamples": stats.RESAMPLES,
            "includes_zero": bool(low <= 0 <= high)}


def pooled_confusions(variants: dict, variant: str, baseline: str, seeds: list, confusions: dict) -> tuple | None:
    """(variant, baseline) per-frame confusions (frames x 3 x 3), each pooled over ``seeds``, on the same frames.

    ``confusions`` maps a run id to its per-frame confusions (or None where the run has no fresh
    inference pass); without them for every run involved, or on different frames, there is nothing to pool.
    """
    sides = []
    for name in (variant, baseline):
        runs = [run_id for run_id, run_seed in zip(variants[name]["run_ids"], variants[name]["seeds"])
                if run_seed in seeds]
        found = [confusions.get(run_id) for run_id in runs]
        if not runs or any(f is None for f in found) or any(f["frames"] != found[0]["frames"] for f in found):
            return None
        sides.append((found[0]["frames"], np.sum([np.asarray(f["confusion"]) for f in found], axis=0)))
    if sides[0][0] != sides[1][0]:
        return None
    return sides[0][1], sides[1][1]


def frame_interval(entry: dict, variants: dict, confusions: dict) -> dict | None:
    """The paired bootstrap for a delta, pooling each side's confusions over the seeds both ran."""
    pooled = pooled_confusions(variants, entry["variant"], entry["baseline"], entry["seeds"], confusions)
    return paired_bootstrap(*pooled) if pooled else None


def per_frame(variants: dict, variant: str, baseline: str, seeds: list, confusions: dict) -> dict | None:
    """On how many validation frames ``variant`` scores a higher rock-IoU than ``baseline``, and the mean gain.

    Per-frame rock-IoU from the fresh inference passes' confusions (pooled over ``seeds``). A frame
    where either side has no rock-IoU (no rock labelled and none predicted) is left out.
    """
    pooled = pooled_confusions(variants, variant, baseline, seeds, confusions)
    if not pooled:
        return None
    ours, theirs = (rock_iou(np.asarray(side, float).reshape(len(side), 9)) for side in pooled)
    scored = ~(np.isnan(ours) | np.isnan(theirs))
    gains = (ours - theirs)[scored]
    return {"variant": variant, "baseline": baseline, "frames": int(scored.sum()), "of_frames": len(ours),
            "wins": int((gains > 0).sum()), "losses": int((gains < 0).sum()), "ties": int((gains == 0).sum()),
            "mean_gain": float(gains.mean()) if len(gains) else None}


def reference_comparison(variants: dict, experiment: str) -> dict | None:
    """The study's numbers beside the measured ones, where the variants are the study's (nodr_750, dr_750, dr_1500).

    The generation is the experiment's name where that is one (v1, v2, v3), else v2, the write-up's.
    """
    if not set(reference.VARIANTS) <= set(variants):
        return None
    generation = reference.generation_for(experiment)
    study = reference.ROCK_IOU[generation]
    measured = {name: variants[name][names.HEADLINE]["mean"] for name in reference.VARIANTS}
    rows = {name: {"study": study[name], "measured": measured[name], "difference": measured[name] - study[name]}
            for name in reference.VARIANTS}
    gains = {}
    for key, (variant, baseline) in GAINS.items():
        gains[key] = {"study": study[variant] - study[baseline], "measured": measured[variant] - measured[baseline]}
        gains[key]["difference"] = gains[key]["measured"] - gains[key]["study"]
    return {"generation": generation, "source": reference.SOURCE, "variants": rows, **gains}


def differing_settings(a: dict, b: dict, keys=SETTINGS) -> list:
    """The keys of ``keys`` whose recorded values differ between two settings dicts (``same_value``'s rule).

    compare flags counted runs that differ this way; a sweep retrains a pair whose run differs this
    way from what it would run (``regolith.sweep``). A key one side lacks differs from any value.
    """
    return [key for key in keys if not same_value(a.get(key), b.get(key))]


def setting_differences(runs: list) -> list:
    """One line per setting the counted runs disagree on, naming the values and the runs that have them.

    The latest run per variant and seed counts, so a quick check with fewer epochs can quietly stand
    in for a full run; this says so instead of letting the deltas mix two recipes.
    """
    lines = []
    for key in SETTINGS:
        values = []  # (value, [run labels]) in first-seen order
        for run in runs:
            value = run["settings"].get(key)
            label = f"{run['variant']} seed {run['seed']}"
            for known, labels in values:
                if not differing_settings({key: known}, {key: value}, (key,)):
                    labels.append(label)
                    break
            else:
                values.append((value, [label]))
        if len(values) > 1:
            lines.append(f"the runs compared differ in {key}: " + "; ".join(
                f"{value} ({', '.join(labels)})" for value, labels in values))
    return lines


def ablation_results(runs: list, experiment: str, confusions: dict | None = None, real: dict | None = None) -> dict:
    """The whole answer as plain data: the variants table, both deltas and their intervals.

    ``confusions`` (run id -> per-frame confusions of its fresh inference pass) gives each delta
    its paired bootstrap interval over validation frames; without it, ``frame_interval`` is None.
    ``real`` (run id -> per-photo rock shares of its latest ``regolith.photos`` measurement, or None)
    is each run's real rock share where it has one; a run without takes the share training saw at
    its best epoch (``best/real_rock_share``, with ``-P real_images``), if any.
    """
    real = real or {}
    runs = [{**run, REAL_SHARE: statistics.fmean(real[run["run_id"]]["rock"])} if real.get(run["run_id"]) else run
            for run in runs]
    variants = summarize_variants(runs)
    matched, largest = pick_comparisons(variants, experiment)
    dr_matched, nodr_matched = names.variant(True, matched), names.variant(False, matched)
    dr_largest = names.variant(True, largest)
    results = {
        "experiment": experiment,
        "metric": names.key(names.BEST, names.HEADLINE),
        "variants": variants,
        "dr_delta": {"question": f"domain randomization at matched size ({matched} frames)",
                     **delta(variants, dr_matched, nodr_matched)},
        "size_delta": {"question": f"more data with DR ({matched} -> {largest} frames)",
                       **delta(variants, dr_largest, dr_matched)},
        "warnings": setting_differences(runs),
    }
    for key in DELTAS:
        entry = results[key]
        entry["frame_interval"] = frame_interval(entry, variants, confusions or {})
        entry["per_frame"] = per_frame(variants, entry["variant"], entry["baseline"], entry["seeds"], confusions or {})
    # The study's own per-frame count: its largest DR variant against no-DR at the matched size.
    seeds = sorted(set(variants[dr_largest]["seeds"]) & set(variants[nodr_matched]["seeds"]))
    results["per_frame_overall"] = per_frame(variants, dr_largest, nodr_matched, seeds, confusions or {})
    results["reference"] = reference_comparison(variants, experiment)
    results["real"] = real_deltas(results, variants, real)
    return results


def real_deltas(results: dict, variants: dict, real: dict) -> dict | None:
    """Both deltas in real rock share, with a seed interval and, where the runs' photos match, one over photos.

    None unless every variant of both deltas has a real rock share.
    """
    if any(variants[results[key][side]][REAL_SHARE]["mean"] is None for key in DELTAS for side in ("variant", "baseline")):
        return None
    deltas = {}
    for key in DELTAS:
        entry = delta(variants, results[key]["variant"], results[key]["baseline"], score=REAL_SHARE)
        entry["photo_interval"] = photo_interval(entry, variants, real)
        deltas[key] = entry
    return deltas


def photo_interval(entry: dict, variants: dict, real: dict) -> dict | None:
    """The paired bootstrap over photos of a rock-share delta, each side's per-photo shares averaged over the seeds.

    Only where every run involved was measured by regolith.photos on the same photo set.
    """
    sides = []
    for name in (entry["variant"], entry["baseline"]):
        measured = [real.get(run_id) for run_id, seed in zip(variants[name]["run_ids"], variants[name]["seeds"])
                    if seed in entry["seeds"]]
        if not measured or any(m is None for m in measured):
            return None
        sides.append(measured)
    digests = {m["digest"] for side in sides for m in side}
    if len(digests) != 1:
        return None
    a, b = (np.mean([m["rock"] for m in side], axis=0) for side in sides)
    difference = photoset.paired_difference(a, b)
    low, high = difference["interval"] or (None, None)
    return {"low": low, "high": high, "photos": difference["photos"], "digest": digests.pop(),
            "variant_more": difference["a_more"], "baseline_more": difference["b_more"],
            "includes_zero": None if low is None else bool(low <= 0 <= high)}


# ---- generations side by side ------------------------------------------------------------------

def generations_results(per_experiment: list) -> dict:
    """One row per experiment (a generation of the rendered data): its variants, both gains, the study's.

    ``per_experiment`` holds each experiment's ``ablation_results``, oldest generation first.
    """
    rows = []
    for results in per_experiment:
        dr, size = results["dr_delta"], results["size_delta"]
        shown = (dr["baseline"], dr["variant"], size["variant"])
        rows.append({"experiment": results["experiment"], "variants": list(shown),
                     "rock_iou": {name: results["variants"][name][names.HEADLINE]["mean"] for name in shown},
                     **{key: {field: results[key].get(field) for field in
                              ("absolute", "absolute_std", "frame_interval", "seed_interval", "per_frame")}
                        for key in DELTAS},
                     "study": reference.ROCK_IOU.get(results["experiment"]) if results.get("reference") else None})
    first, last = rows[0], rows[-1]
    return {"experiments": [row["experiment"] for row in rows], "metric": names.key(names.BEST, names.HEADLINE),
            "generations": rows,
            "baseline_change": last["rock_iou"][last["variants"][0]] - first["rock_iou"][first["variants"][0]],
            "dr_gain_change": last["dr_delta"]["absolute"] - first["dr_delta"]["absolute"],
            "per_experiment": per_experiment}
