"""Answer the size-matched ablation from the tracking store: what DR adds, and what more data adds.

    python -m regolith.compare [--experiment NAME] [--out DIR]
    python -m regolith.compare --experiment v1 --experiment v2 [--experiment v3]   # generations side by side
    mlflow run . --env-manager local -e compare --experiment-name NAME [-P experiment="v1 v2"]

Reads the FINISHED training runs of one experiment (through MLflow's client, so a local
SQLite store and a remote tracking server answer the same), groups them into variants by
the ``regolith.dr`` and ``regolith.frames`` tags, and compares best validation rock-IoU:

- DR delta: dr vs nodr at the largest frame count both have (the reference study's
  dr_750 vs nodr_750, shared/reference/03-training.txt);
- data-size delta: dr at its largest frame count vs dr at that matched count (dr_1500 vs dr_750).

A variant run with several seeds reports the mean and the standard deviation over seeds;
the deltas pair runs by seed, since a seed fixes both the initialization and the data
order. Of several runs with the same variant and seed, the latest counts. Where the runs
were verified (``python -m regolith.evaluate``), each delta also gets a paired bootstrap
interval over validation frames and a per-frame count (on how many frames it wins). Where the
variants are the study's (nodr_750, dr_750, dr_1500), its numbers (``regolith.reference``)
stand beside the measured ones.

Writes ``ablation-results.json``, ``ablation.png`` and ``ablation.txt`` (the table printed
here) into a new subfolder ``OUT/<UTC time>/`` of the results directory (default
``experiments/results/<experiment>``), so an earlier result is never overwritten, and
records a compare run named ``ablation`` (tag ``regolith.kind=compare``) in the same
experiment with the deltas as metrics and those files as artifacts.

With several experiments (one per generation of the rendered data, named as the generations
are), it writes one table and one figure across them instead (``generations-results.json``,
``generations.txt``, ``generations.png`` under ``experiments/results/<v1+v2>/``): per generation
the three variants and both gains with their intervals, and how the no-DR baseline and the DR
gain moved from one generation to the next. Its compare run, ``generations``, goes to the
``mlflow run``'s experiment, else to the last experiment named.
"""

import argparse
import json
import re
import shlex
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from matplotlib.ticker import PercentFormatter

from regolith import Refused, ablation, names, reference, refusals, track
from regolith.runs import find_stale

SCORE_ORDER = names.SCORES  # the per-class panel's order: regolith, rock, sky, mIoU


def build_parser() -> argparse.ArgumentParser:
    """Flags are the kebab-case twins of the MLproject parameters, with the same defaults."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", action="append", default=[],
                        help="experiment to compare ('': the one training runs go to by default: the mlflow run's, "
                             "else MLFLOW_EXPERIMENT_NAME or MLFLOW_EXPERIMENT_ID, else Default); give it once per "
                             "generation, or one space-separated list (quote a name with spaces inside it)")
    parser.add_argument("--out", default="",
                        help="results directory; each compare writes a new subfolder "
                             "('': experiments/results/<experiment>)")
    return parser


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
    """The 95% intervals of a delta, each saying whether it includes zero, and the per-frame count."""
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
    if entry.get("per_frame"):
        lines.append(per_frame_line(entry["per_frame"]))
    return lines


def per_frame_line(counts: dict) -> str:
    gain = "n/a" if counts["mean_gain"] is None else f"{counts['mean_gain']:+.4f}"
    return (f"per frame: {counts['variant']} beats {counts['baseline']} on {counts['wins']} of {counts['frames']} "
            f"frames (mean per-frame rock-IoU gain {gain}"
            + (f"; {counts['of_frames'] - counts['frames']} frames without rock on either side left out)"
               if counts["of_frames"] > counts["frames"] else ")"))


def differs(a: float | None, b: float | None, digits: int = 4) -> bool:
    """Whether two recorded numbers differ at the table's precision."""
    return a is not None and b is not None and round(a, digits) != round(b, digits)


def format_table(results: dict) -> str:
    """The terminal table: every variant's best IoUs (mean ± std over seeds), the two deltas, the study's numbers.

    The original study's strict rock-IoU gets a column where it differs from the standard number.
    """
    variants = results["variants"]
    strict = any(differs(v["iou_rock_strict"]["mean"], v["iou_rock"]["mean"]) for v in variants.values())
    real = any(v[ablation.REAL_SHARE]["mean"] is not None for v in variants.values())
    columns = ["variant", "dr", "frames", "seeds", "rock-IoU", *(["rock (strict)"] if strict else []),
               "regolith", "sky", "mIoU", *(["real rock share"] if real else []), "best epoch"]
    rows = [[name, "yes" if v["dr"] else "no", str(v["frames"]), ",".join(map(str, v["seeds"])), _number(v["iou_rock"]),
             *([_number(v["iou_rock_strict"])] if strict else []), _number(v["iou_regolith"]), _number(v["iou_sky"]),
             _number(v["miou"]), *([_share(v[ablation.REAL_SHARE])] if real else []),
             ",".join("?" if epoch is None else str(epoch) for epoch in v["best_epoch"])]
            for name, v in variants.items()]
    lines = [f"Size-matched ablation, experiment {results['experiment']!r}: best validation IoU per variant"
             " (mean ± std over seeds)", "", *aligned([columns, *rows]), "",
             delta_line("DR delta  ", results["dr_delta"]), delta_line("size delta", results["size_delta"])]
    overall = results.get("per_frame_overall")
    if overall and (overall["variant"], overall["baseline"]) not in {
            (results[key]["variant"], results[key]["baseline"]) for key in ablation.DELTAS}:
        lines.append(per_frame_line(overall))
    if results.get("real"):
        lines += ["", *real_lines(results["real"])]
    if results.get("reference"):
        lines += ["", *reference_lines(results["reference"], overall)]
    lines += [f"warning: {warning}" for warning in results["warnings"]]
    return "\n".join(lines)


def _share(spread_: dict) -> str:
    if spread_["mean"] is None:
        return "not measured"
    return f"{spread_['mean']:.1%}" + (f" ± {spread_['std']:.1%}" if spread_["std"] is not None else "")


def real_lines(deltas: dict) -> list:
    """The deltas in real rock share (the rock flood on real photos), each with its intervals."""
    lines = ["On real photos, the share of their pixels called rock (synthetic gains can come with a flood):"]
    for key, label in (("dr_delta", "DR delta  "), ("size_delta", "size delta")):
        entry = deltas[key]
        lines.append(f"{label}: {entry['variant']} - {entry['baseline']} = {_signed_share(entry['absolute'])} "
                     f"real rock share")
        photo, seeds = entry.get("photo_interval"), entry.get("seed_interval")
        if photo and photo["low"] is not None:
            lines.append(f"            95% CI over {photo['photos']} photos (paired bootstrap): "
                         f"[{_signed_share(photo['low'])}, {_signed_share(photo['high'])}]"
                         + (" includes zero" if photo["includes_zero"] else " excludes zero")
                         + f"; more rock on {photo['variant_more']} photos, less on {photo['baseline_more']}")
        if seeds:
            lines.append(f"            95% CI over {seeds['seeds']} seeds (t): [{_signed_share(seeds['low'])}, "
                         f"{_signed_share(seeds['high'])}]" + (" includes zero" if seeds["includes_zero"] else
                                                                " excludes zero"))
    return lines


def _signed_share(value: float) -> str:
    return f"{value * 100:+.1f} points"


def aligned(rows: list) -> list:
    """Rows of cells as lines of left-aligned columns."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]


def reference_lines(comparison: dict, overall: dict | None) -> list:
    """The study's numbers beside the measured ones, with the differences."""
    rows = [["", "study", "measured", "measured - study"]]
    rows += [[name, f"{row['study']:.4f}", f"{row['measured']:.4f}", f"{row['difference']:+.4f}"]
             for name, row in comparison["variants"].items()]
    rows += [[label, _gain(comparison[key]["study"]), _gain(comparison[key]["measured"]),
              f"{comparison[key]['difference']:+.4f}"]
             for key, label in (("dr_delta", "DR gain"), ("size_delta", "more-data gain"))]
    lines = [f"Beside the study ({comparison['generation']}, numbers from regolith/reference.py): best validation rock-IoU",
             *aligned(rows)]
    study = reference.PER_FRAME_V2
    if comparison["generation"] == "v2" and overall:
        lines.append(f"per frame, the study: {study['variant']} beat {study['baseline']} on {study['wins']} of "
                     f"{study['frames']} frames (mean gain {study['mean_gain']:+.4f}); measured: {overall['wins']} of "
                     f"{overall['frames']}")
    return lines


def _gain(value: float | None) -> str:
    """A gain to the study's 3 decimals; float noise is rounded away first (0.8521 - 0.8486 is +0.0035, not less)."""
    return "n/a" if value is None else f"{round(value, 10):+.3f}"


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
    ax.text((x0 + x1) / 2, y + 0.01, text, ha="center", va="bottom", fontsize=9.5, color=color,
            fontweight="bold", linespacing=1.3)


def plot_ablation(results: dict, curves: dict, path: Path):
    """One figure: best rock-IoU with both deltas, the validation rock-IoU curves, per-class IoU, and where the
    runs were pointed at real photos, synthetic rock-IoU against the real rock share.

    ``curves`` maps a run id to its (epoch, val/iou_rock) pairs.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = results["variants"]
    colors = _colors(variants)
    real = any(v[ablation.REAL_SHARE]["mean"] is not None for v in variants.values())
    ratios = [1, 1.15, 1.3] + ([1.15] if real else [])
    fig, axes = plt.subplots(1, len(ratios), figsize=(17 + 5.5 * real, 5.6), gridspec_kw={"width_ratios": ratios})
    plot_bars(axes[0], results, colors)
    plot_curves(axes[1], variants, curves, colors)
    plot_classes(axes[2], variants, colors)
    if real:
        plot_real(axes[3], results, colors)
    for ax in axes:
        ax.title.set_fontsize(12.5)
        ax.xaxis.label.set_fontsize(11.5)
        ax.yaxis.label.set_fontsize(11.5)
        ax.tick_params(labelsize=10.5)
    fig.suptitle(f"Size-matched domain-randomization ablation — experiment '{results['experiment']}' "
                 f"(validation: unseen-domain split; mean ± std over seeds where several)", fontsize=13.5)
    fig.tight_layout()
    fig.savefig(path, dpi=160)
    plt.close(fig)


def plot_bars(bars, results: dict, colors: dict):
    """Best rock-IoU per variant, the study's marks where it has them, and both deltas as brackets above."""
    variants = results["variants"]
    shown = list(variants)
    x = {name: i for i, name in enumerate(shown)}
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
    comparison = results.get("reference")
    if comparison:  # the study's number as a dashed mark on each of its variants' bars
        for name, row in comparison["variants"].items():
            bars.plot([x[name] - 0.42, x[name] + 0.42], [row["study"]] * 2, color="black", ls="--", lw=1.4,
                      label=f"the study ({comparison['generation']})" if name == reference.VARIANTS[0] else None)
        bars.legend(loc="lower right", fontsize=9.5)
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


def plot_curves(lines, variants: dict, curves: dict, colors: dict):
    """Per-epoch validation rock-IoU of every run, its best epoch marked."""
    for name, v in variants.items():
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


def plot_classes(classes, variants: dict, colors: dict):
    """Per-class IoU and mIoU of every variant's best checkpoint."""
    labels = [score.removeprefix("iou_") if score != "miou" else "mIoU" for score in SCORE_ORDER]
    width = 0.8 / len(variants)
    for i, (name, v) in enumerate(variants.items()):
        scores = [v[score] for score in SCORE_ORDER]
        offsets = [k + (i - (len(variants) - 1) / 2) * width for k in range(len(labels))]
        errors = [score["std"] or 0 for score in scores]
        # A score no run of the variant recorded (older runs) is left out of the panel, not drawn as 0.
        classes.bar(offsets, [np.nan if score["mean"] is None else score["mean"] for score in scores], width,
                    color=colors[name], edgecolor="black", linewidth=0.6, label=name,
                    yerr=errors if any(errors) else None, capsize=3)
    classes.set_xticks(range(len(labels)), labels)
    classes.set_ylim(0, 1.25)  # room for the legend above bars that reach 1
    classes.set_yticks([tick / 10 for tick in range(0, 11, 2)])
    classes.set_ylabel("best-checkpoint IoU")
    classes.set_title("IoU per class at each variant's best epoch")
    classes.grid(axis="y", alpha=0.3)
    classes.set_axisbelow(True)
    classes.legend(fontsize=9.5, ncols=len(variants), loc="upper center")


def plot_real(ax, results: dict, colors: dict):
    """Synthetic rock-IoU against the real rock share, one point per variant: the study's punchline is that they part."""
    variants = results["variants"]
    for name, v in variants.items():
        share = v[ablation.REAL_SHARE]
        if share["mean"] is None:
            continue
        ax.errorbar(v[names.HEADLINE]["mean"], share["mean"], xerr=v[names.HEADLINE]["std"], yerr=share["std"],
                    marker="o", ms=11, color=colors[name], markeredgecolor="black", capsize=4, label=name,
                    linestyle="none")
        ax.annotate(name, (v[names.HEADLINE]["mean"], share["mean"]), textcoords="offset points", xytext=(9, 6),
                    fontsize=10)
    comparison = results.get("reference")
    if comparison:  # the study's dr_1500 from one generation to the next, on its own real photos
        points = [(reference.ROCK_IOU[g]["dr_1500"], reference.REAL_ROCK_SHARE[g][0], g) for g in reference.ROCK_IOU]
        ax.plot([p[0] for p in points], [p[1] for p in points], color="0.55", ls=":", marker="s", mfc="white",
                label="the study's dr_1500, v1→v3 (its photos)")
        for x, y, generation in points:
            ax.annotate(generation, (x, y), textcoords="offset points", xytext=(6, -12), fontsize=9, color="0.4")
    ax.margins(0.18)  # room for the labels beside the points
    ax.set_ylim(bottom=0)  # the flood's size, not only its differences: shares start at 0
    ax.set_xlabel("best validation rock-IoU (synthetic)")
    ax.set_ylabel("share of real photos' pixels called rock")
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_title("Synthetic rock-IoU against the rock flood on real photos")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9, loc="best")


# ---- the results on disk and in the compare run ---------------------------------------------------

def results_folder(out: str, experiment: str) -> Path:
    """A new subfolder of the results directory, named by the UTC time; never one that exists."""
    root = Path(out) if out else Path("experiments/results") / re.sub(r"[^A-Za-z0-9._+-]+", "_", experiment)
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
    results = stamped(results, run_id)
    source = [source_id for v in results["variants"].values() for source_id in v["run_ids"]]
    track.set_tags({names.KIND: names.KIND_COMPARE, names.EXPERIMENT: results["experiment"],
                    names.SOURCE_RUNS: ",".join(source), names.RESULTS_DIR: str(folder),
                    **{names.source_tag(name): ",".join(v["run_ids"]) for name, v in results["variants"].items()},
                    **{names.delta_tag(key): f"{results[key]['variant']} vs {results[key]['baseline']}"
                       for key in ablation.DELTAS}})
    track.log_metrics(delta_metrics(results))
    files = write_results(folder, "ablation", results, format_table(results),
                          lambda path: plot_ablation(results, curves, path))
    print(f"\nresults: {files[0]}\nfigure:  {files[1]}\n"
          f"compare run {run_id} ('ablation', kind=compare) in experiment {results['experiment']!r}")
    return folder


def stamped(results: dict, run_id: str) -> dict:
    return {**results, "compare_run_id": run_id, "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def delta_metrics(results: dict, prefix: str = "") -> dict:
    """The compare run's metrics: each variant's mean best scores, each delta and its interval ends."""
    logged = {names.key(name, score): v[score]["mean"] for name, v in results["variants"].items()
              for score in names.SCORES}
    for key in ablation.DELTAS:
        logged.update({names.key(key, field): results[key][field]
                       for field in ("absolute", "absolute_std", "relative", "relative_std")})
        for kind in ("frame_interval", "seed_interval"):
            if results[key].get(kind):
                logged.update({names.key(key, f"{kind}_{end}"): results[key][kind][end] for end in ("low", "high")})
    return {prefix + key: value for key, value in logged.items() if value is not None}


def write_results(folder: Path, stem: str, results: dict, table: str, plot) -> list:
    """``<stem>-results.json``, ``<stem>.png`` (drawn by ``plot(path)``) and ``<stem>.txt``, logged to the compare run."""
    json_path, png_path, text_path = folder / f"{stem}-results.json", folder / f"{stem}.png", folder / f"{stem}.txt"
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    text_path.write_text(table + "\n")
    plot(png_path)
    track.log_artifacts([json_path, png_path, text_path])
    print(table)
    return [json_path, png_path, text_path]


# ---- generations side by side ------------------------------------------------------------------

def format_generations(results: dict) -> str:
    """One table across generations, then how the no-DR baseline and the DR gain moved."""
    rows = [["generation", "no DR", "DR", "DR, more data", "DR gain", "more-data gain", "the study: DR / more data"]]
    for row in results["generations"]:
        gains = []
        for key in ablation.DELTAS:
            entry, interval = row[key], row[key]["frame_interval"] or row[key]["seed_interval"]
            gains.append(_gain(entry["absolute"]) + (f" [{interval['low']:+.3f}, {interval['high']:+.3f}]"
                                                     if interval else ""))
        study = row["study"]
        rows.append([row["experiment"], *(f"{row['rock_iou'][name]:.4f} {name}" for name in row["variants"]), *gains,
                     f"{_gain(study['dr_750'] - study['nodr_750'])} / {_gain(study['dr_1500'] - study['dr_750'])}"
                     if study else ""])
    first, last = results["generations"][0], results["generations"][-1]
    return "\n".join([
        f"Generations side by side ({', '.join(results['experiments'])}): best validation rock-IoU; gains with "
        "95% CI over frames (else seeds) where the store has it", "", *aligned(rows), "",
        f"no-DR baseline {first['experiment']} -> {last['experiment']}: "
        f"{first['rock_iou'][first['variants'][0]]:.4f} -> {last['rock_iou'][last['variants'][0]]:.4f} "
        f"({results['baseline_change']:+.4f}); DR gain {_gain(first['dr_delta']['absolute'])} -> "
        f"{_gain(last['dr_delta']['absolute'])} ({results['dr_gain_change']:+.4f})"])


def plot_generations(results: dict, path: Path):
    """Two panels: each generation's three variants, and the no-DR baseline against the two gains over generations."""
    from matplotlib.figure import Figure

    rows = results["generations"]
    labels = [row["experiment"] for row in rows]
    fig = Figure(figsize=(15, 5.8))
    bars, trend = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.2, 1]})
    colours = ("#8c8c8c", "#6baed6", "#08519c")
    width = 0.8 / 3
    for k, role in enumerate(("no DR", "DR", "DR, more data")):
        values = [row["rock_iou"][row["variants"][k]] for row in rows]
        bars.bar([i + (k - 1) * width for i in range(len(rows))], values, width, color=colours[k],
                 edgecolor="black", linewidth=0.6, label=role)
        for i, (row, value) in enumerate(zip(rows, values)):
            bars.text(i + (k - 1) * width, value + 0.01, f"{value:.4f}\n{row['variants'][k]}", ha="center",
                      va="bottom", fontsize=8.5)
    bars.set_xticks(range(len(rows)), labels)
    bars.set_ylim(0, 1.15)
    bars.set_ylabel("best validation rock-IoU")
    bars.set_title("Each generation's variants")
    bars.legend(loc="upper left", ncols=3, fontsize=9.5)
    bars.grid(axis="y", alpha=0.3)
    bars.set_axisbelow(True)

    x = range(len(rows))
    baseline = [row["rock_iou"][row["variants"][0]] for row in rows]
    trend.plot(x, baseline, color="#4d4d4d", marker="o", lw=2.2, label="no-DR baseline (rock-IoU, left)")
    for i, value in zip(x, baseline):
        trend.annotate(f"{value:.4f}", (i, value), textcoords="offset points", xytext=(8, -12), fontsize=9,
                       color="#4d4d4d")
    gains = trend.twinx()
    for key, colour, label in (("dr_delta", "#b2182b", "DR gain (right)"),
                               ("size_delta", "#2166ac", "more-data gain (right)")):
        values = [row[key]["absolute"] for row in rows]
        intervals = [row[key]["frame_interval"] or row[key]["seed_interval"] for row in rows]
        low = [v - i["low"] if i else 0 for v, i in zip(values, intervals)]
        high = [i["high"] - v if i else 0 for v, i in zip(values, intervals)]
        gains.errorbar(x, values, yerr=[low, high] if any(low + high) else None, color=colour, marker="s", lw=2,
                       capsize=4, label=label)
        for i, value in zip(x, values):
            gains.annotate(_gain(value), (i, value), textcoords="offset points", xytext=(8, 4), fontsize=9,
                           color=colour)
    gains.axhline(0, color="black", lw=0.6)
    trend.set_xticks(list(x), labels)
    trend.set_xlim(-0.25, len(rows) - 0.6)  # room for the labels beside the last points
    trend.set_ylabel("no-DR baseline rock-IoU")
    gains.set_ylabel("gain in rock-IoU")
    trend.set_title("The baseline rose while the DR gain shrank")
    handles = trend.get_legend_handles_labels()[0] + gains.get_legend_handles_labels()[0]
    trend.legend(handles, [h.get_label() for h in handles], loc="upper center", bbox_to_anchor=(0.5, -0.07),
                 ncols=3, fontsize=9.5, frameon=False)
    trend.grid(alpha=0.3)
    fig.suptitle(f"Generations side by side: {', '.join(labels)} (best validation rock-IoU)", fontsize=13)
    fig.tight_layout()
    fig.savefig(path, dpi=150)


def record_generations(results: dict, args, run_id: str) -> Path:
    folder = results_folder(args.out, "+".join(results["experiments"]))
    results = stamped(results, run_id)
    track.set_tags({names.KIND: names.KIND_COMPARE, names.EXPERIMENT: ",".join(results["experiments"]),
                    names.RESULTS_DIR: str(folder),
                    names.SOURCE_RUNS: ",".join(run_id for r in results["per_experiment"]
                                                for v in r["variants"].values() for run_id in v["run_ids"])})
    track.log_metrics({key: value for r in results["per_experiment"]
                       for key, value in delta_metrics(r, prefix=metric_safe(r["experiment"]) + "/").items()})
    files = write_results(folder, "generations", results, format_generations(results),
                          lambda path: plot_generations(results, path))
    print(f"\nresults: {files[0]}\nfigure:  {files[1]}\ncompare run {run_id} ('generations', kind=compare)")
    return folder


def metric_safe(name: str) -> str:
    """An experiment name as a metric-key prefix (MLflow allows letters, digits, _ - . / and spaces)."""
    return re.sub(r"[^A-Za-z0-9_\-. ]", "_", name)


# ---- the verb ----------------------------------------------------------------------------------

def experiment_names(given: list) -> list:
    """The experiments asked for: each ``--experiment`` value split like a shell would (the MLproject's list)."""
    return [name for value in given for name in shlex.split(value)]


def read_ablation(experiment: str) -> tuple:
    """(the experiment's ablation results, each counted run's validation rock-IoU curve), from the store."""
    rows = track.read_runs(experiment)
    stale = [entry["run_id"] for entry in find_stale(rows)
             if entry["markable"] and entry["kind"] == names.KIND_TRAIN]  # known dead, not merely unknown
    runs, ignored = ablation.select_runs(rows, stale)
    left_out = ", ".join(f"{count} {why}" for why, count in ignored.items() if count)
    print(f"experiment {experiment!r}: {len(runs)} training run(s) count" + (f"; left out: {left_out}" if left_out else "")
          + (f" (stale: {', '.join(stale)}: RUNNING, their process gone; python -m regolith.runs says how to resume "
             f"them)" if stale else ""))
    results = ablation.ablation_results(runs, experiment,
                                        {run["run_id"]: track.read_frame_confusions(run["run_id"]) for run in runs},
                                        {run["run_id"]: track.read_real_photos(run["run_id"]) for run in runs})
    results["ignored"] = ignored
    curves = {run["run_id"]: track.read_metric_history(run["run_id"], names.EPOCH_MARKER) for run in runs}
    return results, curves


def main(argv=None):
    args = build_parser().parse_args(argv)
    with refusals():
        track.check_reachable()
        experiments = experiment_names(args.experiment) or [track.default_experiment("")]
        attached = track.attached_experiment()
        params = {"experiment": shlex.quote(" ".join(args.experiment)), "out": shlex.quote(args.out)}
        if len(experiments) == 1:
            experiment = experiments[0]
            if attached is not None and attached != experiment:
                raise Refused(f"experiment={experiment!r}, but mlflow run put this compare run in experiment "
                              f"{attached!r}; run `mlflow run . -e compare --experiment-name {experiment}` so "
                              f"the compare run lands beside the runs it compares")
            results, curves = read_ablation(experiment)
            with track.run("ablation", experiment, params=params) as (run_id, _):
                record(results, curves, args, run_id)
            return
        results = ablation.generations_results([read_ablation(experiment)[0] for experiment in experiments])
        with track.run("generations", attached or experiments[-1], params=params) as (run_id, _):
            record_generations(results, args, run_id)


if __name__ == "__main__":
    main()
