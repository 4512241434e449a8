"""Answer the size-matched ablation from the tracking store: what DR adds, and what more data adds.

    python -m regolith.compare [--experiment NAME] [--out DIR]
    mlflow run . --env-manager local -e compare --experiment-name NAME

Reads the FINISHED training runs of one experiment (through MLflow's client, so a local
SQLite store and a remote tracking server answer the same), groups them into variants by
the ``regolith.dr`` and ``regolith.frames`` tags, and compares best validation rock-IoU:

- DR delta: dr vs nodr at the largest frame count both have (the reference study's
  dr_750 vs nodr_750, shared/reference/03-training.txt);
- data-size delta: dr at its largest frame count vs dr at that matched count (dr_1500 vs dr_750).

A variant run with several seeds reports the mean and the standard deviation over seeds;
the deltas pair runs by seed, since a seed fixes both the initialization and the data
order. Of several runs with the same variant and seed, the latest counts.

Writes ``ablation-results.json``, ``ablation.png`` and ``ablation.txt`` (the table printed
here) into a new subfolder ``OUT/<UTC time>/`` of the results directory (default
``experiments/results/<experiment>``), so an earlier result is never overwritten, and
records a compare run named ``ablation`` (tag ``regolith.kind=compare``) in the same
experiment with the deltas as metrics and those files as artifacts.
"""

import argparse
import json
import re
import shlex
import statistics
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from scipy import stats

from regolith import ROCK, Refused, metrics, names, refusals, track

# What must be equal across the variants for the deltas to isolate DR and data size: the training
# recipe (params as train.py logs them), the validation split (its digest tag), and precision and
# compile, which change the numbers too (bf16 rounding; inductor's own dropout draws).
SETTINGS = ("epochs", "lr", "batch", "patience", "pretrained_id", "image_size", names.VAL_DIGEST,
            names.PRECISION, names.COMPILED)
TERMINAL_STATUSES = ("FAILED", "KILLED")
SCORE_ORDER = names.SCORES  # the per-class panel's order: regolith, rock, sky, mIoU
DELTAS = ("dr_delta", "size_delta")  # the two questions of the ablation, as keyed in the results


def build_parser() -> argparse.ArgumentParser:
    """Flags are the kebab-case twins of the MLproject parameters, with the same defaults."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", default="",
                        help="experiment to compare ('': the one training runs go to by default: the mlflow run's, "
                             "else MLFLOW_EXPERIMENT_NAME or MLFLOW_EXPERIMENT_ID, else Default)")
    parser.add_argument("--out", default="",
                        help="results directory; each compare writes a new subfolder "
                             "('': experiments/results/<experiment>)")
    return parser


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
            **{score: recorded.get(names.key(names.BEST, score)) for score in names.SCORES}, names.HEADLINE: headline,
            "settings": {key: settings.get(key) for key in SETTINGS}}


def select_runs(rows: list) -> tuple:
    """The training runs that count: FINISHED, complete, and the latest per (variant, seed).

    Returns (runs sorted by variant then seed, counts of the training runs left out and why).
    Runs of other kinds (earlier compare runs, an ablation wrapper) are not candidates at all.
    """
    ignored = {"failed": 0, "killed": 0, "running": 0, "incomplete": 0, "superseded": 0}
    latest = {}
    for row in rows:
        if row["tags"].get(names.KIND) != names.KIND_TRAIN:
            continue
        if row["status"] != "FINISHED":
            ignored[row["status"].lower() if row["status"] in TERMINAL_STATUSES else "running"] += 1
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
            **{score: spread([r[score] for r in group]) for score in names.SCORES},
            "per_seed": {str(r["seed"]): {score: r[score] for score in names.SCORES} for r in group},
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
        result["seed_interval"] = seed_interval([x - y for x, y in pairs])
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


def paired_bootstrap(variant: np.ndarray, baseline: np.ndarray, resamples: int = 2000, seed: int = 0) -> dict:
    """95% interval of the rock-IoU delta by a paired percentile bootstrap over validation frames.

    ``variant`` and ``baseline`` are frames x 3 x 3 confusion counts on the same frames. Each
    resample draws frames with replacement and recomputes global IoU on both sides from that
    same draw (``scipy.stats.bootstrap(paired=True)``), so frame difficulty, shared by both models,
    cancels out of the spread.
    """
    frames = len(variant)
    samples = (np.asarray(variant, float).reshape(frames, 9), np.asarray(baseline, float).reshape(frames, 9))

    def rock_delta(v, b, axis=-1):  # scipy hands resamples with the frame axis last
        return rock_iou(np.moveaxis(v.sum(axis), 0, -1)) - rock_iou(np.moveaxis(b.sum(axis), 0, -1))

    point = float(rock_iou(samples[0].sum(0)) - rock_iou(samples[1].sum(0)))
    result = stats.bootstrap(samples, rock_delta, paired=True, vectorized=True, axis=0, n_resamples=resamples,
                             method="percentile", rng=np.random.default_rng(seed))
    low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    return {"low": low, "high": high, "point": point, "frames": frames, "resamples": resamples,
            "includes_zero": bool(low <= 0 <= high)}


def seed_interval(deltas: list) -> dict | None:
    """95% t-interval of the mean per-seed delta (``scipy.stats.ttest_1samp``); None with fewer than two seeds."""
    if len(deltas) < 2:
        return None
    interval = stats.ttest_1samp(deltas, 0.0).confidence_interval(0.95)
    low, high = float(interval.low), float(interval.high)
    return {"low": low, "high": high, "seeds": len(deltas), "includes_zero": bool(low <= 0 <= high)}


def frame_interval(entry: dict, variants: dict, confusions: dict) -> dict | None:
    """The paired bootstrap for a delta, pooling each side's confusions over the seeds both ran.

    ``confusions`` maps a run id to its per-frame confusions (or None where the run has no fresh
    inference pass); without them for every run involved, or on different frames, there is no interval.
    """
    sides = []
    for name in (entry["variant"], entry["baseline"]):
        runs = [run_id for run_id, run_seed in zip(variants[name]["run_ids"], variants[name]["seeds"])
                if run_seed in entry["seeds"]]
        found = [confusions.get(run_id) for run_id in runs]
        if not runs or any(f is None for f in found) or any(f["frames"] != found[0]["frames"] for f in found):
            return None
        sides.append((found[0]["frames"], np.sum([np.asarray(f["confusion"]) for f in found], axis=0)))
    if sides[0][0] != sides[1][0]:
        return None
    return paired_bootstrap(sides[0][1], sides[1][1])


def _same(a, b) -> bool:
    try:
        return float(a) == float(b)  # lr logged as "6e-5" by one run and "0.00006" by another
    except (TypeError, ValueError):
        return a == b


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
                if _same(known, value):
                    labels.append(label)
                    break
            else:
                values.append((value, [label]))
        if len(values) > 1:
            lines.append(f"the runs compared differ in {key}: " + "; ".join(
                f"{value} ({', '.join(labels)})" for value, labels in values))
    return lines


def ablation_results(runs: list, experiment: str, confusions: dict | None = None) -> dict:
    """The whole answer as plain data: the variants table, both deltas and their intervals.

    ``confusions`` (run id -> per-frame confusions of its fresh inference pass) gives each delta
    its paired bootstrap interval over validation frames; without it, ``frame_interval`` is None.
    """
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
        results[key]["frame_interval"] = frame_interval(results[key], variants, confusions or {})
    return results


# ---- presentation ------------------------------------------------------------------------------

def _number(spread_: dict, digits: int = 4) -> str:
    if spread_["mean"] is None:
        return "not recorded"
    text = f"{spread_['mean']:.{digits}f}"
    return text + (f" ± {spread_['std']:.{digits}f}" if spread_["std"] is not None else "")


def _signed(value, std=None, percent=False) -> str:
    if value is None:
        return "n/a"
    scale, digits, unit = (100, 1, "%") if percent else (1, 4, "")
    text = f"{value * scale:+.{digits}f}{unit}"
    return text + (f" ± {std * scale:.{digits}f}{unit}" if std is not None else "")


def delta_line(label: str, entry: dict) -> str:
    seeds = entry["seeds"]
    over = (f"paired over seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}" if seeds
            else "difference of means, no seed in common")
    return (f"{label}: {entry['variant']} - {entry['baseline']} = "
            f"{_signed(entry['absolute'], entry['absolute_std'])} rock-IoU "
            f"({_signed(entry['relative'], entry['relative_std'], percent=True)} relative; {over})"
            + "".join(f"\n            {line}" for line in interval_lines(entry)))


def interval_lines(entry: dict) -> list:
    """The 95% intervals of a delta, each saying whether it includes zero."""
    lines = []
    frames, seeds = entry.get("frame_interval"), entry.get("seed_interval")
    if frames:
        lines.append(f"95% CI over {frames['frames']} validation frames (paired bootstrap): "
                     f"[{frames['low']:+.4f}, {frames['high']:+.4f}]"
                     + (" includes zero" if frames["includes_zero"] else " excludes zero"))
    else:
        lines.append("no frame interval: run `python -m regolith.evaluate --run <id>` on every run compared")
    if seeds:
        lines.append(f"95% CI over {seeds['seeds']} seeds (t): [{seeds['low']:+.4f}, {seeds['high']:+.4f}]"
                     + (" includes zero" if seeds["includes_zero"] else " excludes zero"))
    return lines


def format_table(results: dict) -> str:
    """The terminal table: every variant's best IoUs (mean ± std over seeds), then the two deltas."""
    columns = ["variant", "dr", "frames", "seeds", "rock-IoU", "regolith", "sky", "mIoU", "best epoch"]
    rows = [[name, "yes" if v["dr"] else "no", str(v["frames"]), ",".join(map(str, v["seeds"])),
             _number(v["iou_rock"]), _number(v["iou_regolith"]), _number(v["iou_sky"]), _number(v["miou"]),
             ",".join("?" if epoch is None else str(epoch) for epoch in v["best_epoch"])]
            for name, v in results["variants"].items()]
    widths = [max(len(row[i]) for row in [columns, *rows]) for i in range(len(columns))]
    lines = [f"Size-matched ablation, experiment {results['experiment']!r}: best validation IoU per variant"
             " (mean ± std over seeds)", ""]
    lines += ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in [columns, *rows]]
    lines += ["", delta_line("DR delta  ", results["dr_delta"]), delta_line("size delta", results["size_delta"])]
    lines += [f"warning: {warning}" for warning in results["warnings"]]
    return "\n".join(lines)


def _colors(variants: dict) -> dict:
    """nodr variants in greys, dr variants in blues, darker with more frames."""
    import matplotlib

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
    ax.text((x0 + x1) / 2, y + 0.01, text, ha="center", va="bottom", fontsize=10.5, color=color,
            fontweight="bold", linespacing=1.3)


def plot_ablation(results: dict, curves: dict, path: Path):
    """One figure: best rock-IoU with both deltas, the validation rock-IoU curves, per-class IoU.

    ``curves`` maps a run id to its (epoch, val/iou_rock) pairs.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = results["variants"]
    shown = list(variants)
    colors = _colors(variants)
    x = {name: i for i, name in enumerate(shown)}
    fig, (bars, lines, classes) = plt.subplots(1, 3, figsize=(17, 5.6), gridspec_kw={"width_ratios": [1, 1.15, 1.3]})

    # 1. best rock-IoU per variant, both deltas as brackets above the bars
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
    top = max(m + e for m, e in zip(means, errors))
    dr_entry, size_entry = results["dr_delta"], results["size_delta"]
    y = top + 0.06  # each bracket sits above the one before and its label
    for entry, label, color in (
            (dr_entry, f"DR at {variants[dr_entry['variant']]['frames']} frames", "#b2182b"),
            (size_entry, f"more data: {variants[size_entry['baseline']]['frames']} → "
                         f"{variants[size_entry['variant']]['frames']} frames", "#2166ac")):
        text = (f"{label}\n{_signed(entry['absolute'], entry['absolute_std'])} "
                f"({_signed(entry['relative'], None, percent=True)})")
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

    # 2. per-epoch validation rock-IoU of every run, best epoch marked
    for name in shown:
        v = variants[name]
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

    # 3. per-class IoU and mIoU of every variant's best checkpoint
    labels = [score.removeprefix("iou_") if score != "miou" else "mIoU" for score in SCORE_ORDER]
    width = 0.8 / len(shown)
    for i, name in enumerate(shown):
        v = variants[name]
        scores = [v[score] for score in SCORE_ORDER]
        offsets = [k + (i - (len(shown) - 1) / 2) * width for k in range(len(labels))]
        errors = [score["std"] or 0 for score in scores]
        # A score no run of the variant recorded (older runs) is left out of the panel, not drawn as 0.
        classes.bar(offsets, [np.nan if score["mean"] is None else score["mean"] for score in scores], width, color=colors[name], edgecolor="black",
                    linewidth=0.6, label=name, yerr=errors if any(errors) else None, capsize=3)
    classes.set_xticks(range(len(labels)), labels)
    classes.set_ylim(0, 1.25)  # room for the legend above bars that reach 1
    classes.set_yticks([tick / 10 for tick in range(0, 11, 2)])
    classes.set_ylabel("best-checkpoint IoU")
    classes.set_title("IoU per class at each variant's best epoch")
    classes.grid(axis="y", alpha=0.3)
    classes.set_axisbelow(True)
    classes.legend(fontsize=9.5, ncols=len(shown), loc="upper center")

    for ax in (bars, lines, classes):
        ax.title.set_fontsize(12.5)
        ax.xaxis.label.set_fontsize(11.5)
        ax.yaxis.label.set_fontsize(11.5)
        ax.tick_params(labelsize=10.5)
    fig.suptitle(f"Size-matched domain-randomization ablation — experiment '{results['experiment']}' "
                 f"(validation: unseen-domain split; mean ± std over seeds where several)", fontsize=13.5)
    fig.tight_layout()
    fig.savefig(path, dpi=160)
    plt.close(fig)


# ---- the verb ----------------------------------------------------------------------------------

def results_folder(out: str, experiment: str) -> Path:
    """A new subfolder of the results directory, named by the UTC time; never one that exists."""
    root = Path(out) if out else Path("experiments/results") / re.sub(r"[^A-Za-z0-9._-]+", "_", experiment)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    root.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, 100):
        folder = root / (stamp if attempt == 1 else f"{stamp}-{attempt}")
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue
    raise Refused(f"{root}: could not make a new results folder for {stamp}")


def record(results: dict, curves: dict, args, run_id: str) -> Path:
    """Inside the compare run: write the JSON, the table and the figure, then log them and the deltas."""
    folder = results_folder(args.out, results["experiment"])
    results = {**results, "compare_run_id": run_id,
               "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    source = [source_id for v in results["variants"].values() for source_id in v["run_ids"]]
    track.log_params({"experiment": shlex.quote(args.experiment), "out": shlex.quote(args.out)})
    track.set_tags({names.KIND: names.KIND_COMPARE, names.EXPERIMENT: results["experiment"],
                    names.SOURCE_RUNS: ",".join(source), names.RESULTS_DIR: str(folder),
                    **{names.source_tag(name): ",".join(v["run_ids"]) for name, v in results["variants"].items()},
                    **{names.delta_tag(key): f"{results[key]['variant']} vs {results[key]['baseline']}"
                       for key in DELTAS}})
    logged = {names.key(name, score): v[score]["mean"] for name, v in results["variants"].items()
              for score in names.SCORES}
    for key in DELTAS:
        logged.update({names.key(key, field): results[key][field]
                       for field in ("absolute", "absolute_std", "relative", "relative_std")})
        for kind in ("frame_interval", "seed_interval"):
            if results[key].get(kind):
                logged.update({names.key(key, f"{kind}_{end}"): results[key][kind][end] for end in ("low", "high")})
    track.log_metrics({key: value for key, value in logged.items() if value is not None})

    table = format_table(results)
    json_path, png_path, text_path = (folder / name for name in ("ablation-results.json", "ablation.png",
                                                                 "ablation.txt"))
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    text_path.write_text(table + "\n")
    plot_ablation(results, curves, png_path)
    track.log_artifacts([json_path, png_path, text_path])
    print(table)
    print(f"\nresults: {json_path}\nfigure:  {png_path}\n"
          f"compare run {run_id} ('ablation', kind=compare) in experiment {results['experiment']!r}")
    return folder


def main(argv=None):
    args = build_parser().parse_args(argv)
    with refusals():
        track.check_reachable()
        experiment = track.default_experiment(args.experiment)
        attached = track.attached_experiment()
        if attached is not None and attached != experiment:
            raise Refused(f"experiment={args.experiment!r}, but mlflow run put this compare run in experiment "
                             f"{attached!r}; run `mlflow run . -e compare --experiment-name {args.experiment}` so "
                             f"the compare run lands beside the runs it compares")
        runs, ignored = select_runs(track.read_runs(experiment))
        left_out = ", ".join(f"{count} {why}" for why, count in ignored.items() if count)
        print(f"experiment {experiment!r}: {len(runs)} training run(s) count"
              + (f"; left out: {left_out}" if left_out else ""))
        results = ablation_results(runs, experiment, {run["run_id"]: track.read_frame_confusions(run["run_id"])
                                                      for run in runs})
        results["ignored"] = ignored
        curves = {run["run_id"]: track.read_metric_history(run["run_id"], names.EPOCH_MARKER) for run in runs}
        with track.run("ablation", experiment) as (run_id, _):
            record(results, curves, args, run_id)


if __name__ == "__main__":
    main()
