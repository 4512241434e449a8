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

from regolith import ROCK, Refused, augment, flood, metrics, names, photoset, reference, same_value, stats

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
    where = f"run {row['run_id']} ({row['run_name']})"
    if frames < 1:
        raise Refused(f"{where}: tag {names.FRAMES}={tags[names.FRAMES]!r}; expected the positive number of frames "
                      f"it trained on (a training run never records another)")
    for score in RECORDED:
        value = recorded.get(names.key(names.BEST, score))
        # NaN would pass through every mean and delta; inf or a value outside [0, 1] is no IoU or share.
        if value is not None and not 0 <= value <= 1:
            raise Refused(f"{where}: {names.key(names.BEST, score)} = {value}; expected an IoU or share in "
                          f"[0, 1] (a training run never records another; delete or fix the run)")
    best_epoch = recorded.get(names.BEST_EPOCH)
    settings = {**row.get("params", {}), **tags}
    # The variant as the run named itself (dr_750+gray); a run from before levers were named is the plain one.
    return {"run_id": row["run_id"], "run_name": row["run_name"], "start_time": row["start_time"],
            "dr": dr, "frames": frames, "seed": seed, "variant": tags.get(names.VARIANT) or names.variant(dr, frames),
            "plain": (tags.get(names.VARIANT) or names.variant(dr, frames)) == names.variant(dr, frames),
            "labels": settings,
            "best_epoch": None if best_epoch is None else int(best_epoch),
            "real_digest": tags.get(names.REAL_DIGEST),  # the photos training watched (-P real_images), if any
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
        key = (run["dr"], run["frames"], run["variant"], run["seed"])
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
    for run in sorted(runs, key=lambda r: (r["dr"], r["frames"], r["variant"], r["seed"])):
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


def ablation_results(runs: list, experiment: str, confusions: dict | None = None, real: dict | None = None,
                     curves: dict | None = None, splits: dict | None = None, *, asked: tuple = ()) -> dict:
    """The whole answer as plain data: the variants table, both deltas and their intervals, and each delta ``asked``.

    ``confusions`` (run id -> per-frame confusions of its fresh inference pass) gives each delta
    its paired bootstrap interval over validation frames; without it, ``frame_interval`` is None.
    ``real`` (run id -> per-photo rock shares of its latest ``regolith.photos`` measurement, or None)
    is each run's real rock share where it has one; a run without takes the share training saw at
    its best epoch (``best/real_rock_share``, with ``-P real_images``), if any. ``curves`` (run id ->
    ``evaluate.read_curve``'s counts, or None) gives the deltas at matched flood (``flood.flood_deltas``),
    ``splits`` the scores on other labelled splits. The DR and size deltas are over the plain variants
    (no lever beyond the original's); ``asked`` (``A:B`` specs, ``lever_delta``) adds deltas of any two
    sides, and where it does, an experiment without the built-in pairs still answers.
    """
    real = real or {}
    runs = [{**run, REAL_SHARE: statistics.fmean(real[run["run_id"]]["rock"])} if real.get(run["run_id"]) else run
            for run in runs]
    runs = [{**run, "real_set": photo_set(run, real.get(run["run_id"]))} for run in runs]
    variants = summarize_variants(runs)
    for name, v in variants.items():
        v["real_sets"] = distinct([run["real_set"] for run in runs if run["variant"] == name and run["real_set"]])
    plain = [run for run in runs if run.get("plain", True)]
    results = {"experiment": experiment, "metric": names.key(names.BEST, names.HEADLINE), "variants": variants,
               "deltas": [lever_delta(spec, runs, confusions or {}, real, curves or {}) for spec in asked]}
    try:
        builtin = builtin_deltas(plain, experiment, confusions or {}, real, curves or {}, splits or {})
    except Refused as refusal:
        if not asked:
            raise
        builtin = {key: None for key in DELTAS}  # the lever deltas answer; the study's two questions do not apply
        builtin.update({"per_frame_overall": None, "reference": None, "real": None, "real_refused": None,
                        "flood": None, "splits": None, "warnings": [], "builtin_note": str(refusal)})
    return {**results, **builtin}


def builtin_deltas(runs: list, experiment: str, confusions: dict, real: dict, curves: dict, splits: dict) -> dict:
    """The study's two questions over ``runs`` (the plain variants): DR at matched size and more data with DR."""
    variants = summarize_variants(runs)
    for name, v in variants.items():
        v["real_sets"] = distinct([run["real_set"] for run in runs if run["variant"] == name and run["real_set"]])
    matched, largest = pick_comparisons(variants, experiment)
    dr_matched, nodr_matched = names.variant(True, matched), names.variant(False, matched)
    dr_largest = names.variant(True, largest)
    results = {
        "dr_delta": {"question": f"domain randomization at matched size ({matched} frames)",
                     **delta(variants, dr_matched, nodr_matched)},
        "size_delta": {"question": f"more data with DR ({matched} -> {largest} frames)",
                       **delta(variants, dr_largest, dr_matched)},
        "warnings": setting_differences(runs),
    }
    for key in DELTAS:
        entry = results[key]
        entry["frame_interval"] = frame_interval(entry, variants, confusions)
        entry["per_frame"] = per_frame(variants, entry["variant"], entry["baseline"], entry["seeds"], confusions)
    # The study's own per-frame count: its largest DR variant against no-DR at the matched size.
    seeds = sorted(set(variants[dr_largest]["seeds"]) & set(variants[nodr_matched]["seeds"]))
    results["per_frame_overall"] = per_frame(variants, dr_largest, nodr_matched, seeds, confusions)
    results["reference"] = reference_comparison(variants, experiment)
    involved = {run_id for key in DELTAS for side in ("variant", "baseline")
                for run_id in variants[results[key][side]]["run_ids"]}
    results["real_refused"] = mixed_photo_sets([run for run in runs if run["run_id"] in involved])
    if results["real_refused"]:  # shares of different photos (or fits) say nothing about DR or data size
        results["warnings"].append(f"real rock shares not compared: {results['real_refused']}")
        results["real"] = None
    else:
        results["real"] = real_deltas(results, variants, real)
    results["flood"] = flood.flood_deltas(results, variants, curves)
    results["splits"] = flood.split_scores(variants, splits)  # other labelled splits (evaluate --split)
    if results["flood"] and results["flood"].get("refused"):
        results["warnings"].append(f"no deltas at matched flood: {results['flood']['refused']}")
    return results


def photo_set(run: dict, measured: dict | None) -> dict | None:
    """What a run's real rock share was measured on: {"digest", "fit", "tta"}, or None where it has no share.

    regolith.photos records its set, fit and TTA; a share training saw (``-P real_images``) was
    letterboxed with no TTA, on the set of the run's ``real/photos_digest`` tag.
    """
    if measured:
        return {"digest": measured.get("digest"), "fit": measured.get("fit", "letterbox"),
                "tta": measured.get("tta", "none")}
    if run.get(REAL_SHARE) is None:
        return None
    return {"digest": run.get("real_digest"), "fit": "letterbox", "tta": "none"}


def distinct(sets: list) -> list:
    """The photo sets, each once, in first-seen order."""
    return [entry for i, entry in enumerate(sets) if entry not in sets[:i]]


def mixed_photo_sets(runs: list) -> str | None:
    """Why the runs' real rock shares cannot be compared (other photos, fit or TTA, or an unrecorded set), or None.

    Only runs that have a share count; a run with none leaves the real deltas out on its own.
    """
    measured = [run for run in runs if run.get("real_set")]
    unknown = [run for run in measured if not run["real_set"]["digest"]]
    if unknown:
        return ("the photo set of " + ", ".join(f"{r['variant']} seed {r['seed']}" for r in unknown)
                + " was not recorded (tag " + names.REAL_DIGEST + "); measure it again with regolith.photos")
    sets = distinct([run["real_set"] for run in measured])
    if len(sets) < 2:
        return None
    described = []
    for entry in sets:
        labels = [f"{r['variant']} seed {r['seed']}" for r in measured if r["real_set"] == entry]
        described.append(f"photos {entry['digest'][:12]} fit={entry['fit']} tta={entry['tta']} ({', '.join(labels)})")
    return ("measured on different photo sets, fits or TTA: " + "; ".join(described)
            + "; measure every run on one set with regolith.photos (same --images, --fit)")


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


# ---- any two sides: compare --delta A:B ------------------------------------------------------------

# Filters on these keys compare augmentation lists as applied, so gray,hflip finds hflip,gray.
AUGMENT_KEYS = ("augment", names.AUGMENT)


def parse_delta(spec: str) -> tuple:
    """``A:B`` as (A, B): each a variant name (dr_750+gray) or tag filters key=value joined by & (regolith.augment=hflip)."""
    sides = spec.split(":")
    if len(sides) != 2 or not all(side.strip() for side in sides) or sides[0].strip() == sides[1].strip():
        raise Refused(f"delta={spec!r}: expected A:B, two different sides, each a variant name (dr_750+gray) or "
                      f"tag filters key=value joined by & (regolith.augment=hflip,gray&regolith.frames=750)")
    return sides[0].strip(), sides[1].strip()


def matches(run: dict, selector: str) -> bool:
    """Whether a run is on the side ``selector`` names: its variant, or every key=value filter of it."""
    if "=" not in selector:
        return run["variant"] == selector
    for condition in selector.split("&"):
        key, _, wanted = (part.strip() for part in condition.partition("="))
        value = run["labels"].get(key)
        if key in AUGMENT_KEYS and value is not None:
            value, wanted = augment.canonical(str(value)), augment.canonical(wanted)
        if value is None or not same_value(value, wanted):
            return False
    return True


def side_runs(runs: list, selector: str, spec: str) -> list:
    """The runs of one side, one per seed, relabelled as the side; refused where none match or seeds repeat."""
    chosen = [run for run in runs if matches(run, selector)]
    if not chosen:
        known = ", ".join(sorted({run["variant"] for run in runs})) or "none"
        raise Refused(f"delta={spec!r}: no FINISHED training run matches {selector!r}; variants found: {known}")
    seeds = [run["seed"] for run in chosen]
    if len(set(seeds)) < len(seeds):
        raise Refused(f"delta={spec!r}: {selector!r} matches runs of several variants with the same seed ("
                      f"{', '.join(sorted({run['variant'] for run in chosen}))}); narrow it with another "
                      f"filter, e.g. &{names.VARIANT}=...")
    return [{**run, "variant": selector} for run in chosen]


def lever_delta(spec: str, runs: list, confusions: dict, real: dict, curves: dict | None = None) -> dict:
    """B - A for ``spec`` = ``A:B``, as the built-in deltas: paired by seed, intervals over frames, seeds and
    photos, per-frame wins, the real rock share, at matched flood where both sides have operating curves
    (``curves``, as ``ablation_results`` takes them), and every setting the two sides differ in (the lever
    itself among them: that is what the delta measures)."""
    baseline, variant = parse_delta(spec)
    sides = side_runs(runs, baseline, spec) + side_runs(runs, variant, spec)
    variants = summarize_variants(sides)
    entry = {"spec": spec, "question": f"{variant} against {baseline}", **delta(variants, variant, baseline)}
    entry["frame_interval"] = frame_interval(entry, variants, confusions)
    entry["per_frame"] = per_frame(variants, variant, baseline, entry["seeds"], confusions)
    entry["real"] = None
    if all(variants[name][REAL_SHARE]["mean"] is not None for name in (variant, baseline)):
        entry["real"] = delta(variants, variant, baseline, score=REAL_SHARE)
        entry["real"]["photo_interval"] = photo_interval(entry["real"], variants, real)
    entry["flood"] = flood.lever_at_matched_flood(entry, variants, curves or {})
    entry["differences"] = setting_differences(sides)
    entry["sides"] = {name: {"run_ids": v["run_ids"], "seeds": v["seeds"], "iou_rock": v[names.HEADLINE]}
                      for name, v in variants.items()}
    return entry
