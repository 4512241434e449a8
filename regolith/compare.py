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

This module reads the store, writes the tables and records the compare run; the arithmetic
is ``regolith.ablation``'s (its intervals ``regolith.stats``'), the figures ``regolith.figures``'.
"""

import argparse
import json
import re
import shlex
from datetime import datetime, timezone
from pathlib import Path

from regolith import (Refused, ablation, curve, evaluate, figures, flood, liveness, names, photos, reference, refusals,
                      store, track)


def build_parser() -> argparse.ArgumentParser:
    """Flags are the kebab-case twins of the MLproject parameters, with the same defaults."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", action="append", default=[],
                        help="experiment to compare ('': the one training runs go to by default: the mlflow run's, "
                             "else MLFLOW_EXPERIMENT_NAME or MLFLOW_EXPERIMENT_ID, else Default); give it once per "
                             "generation, or one space-separated list (quote a name with spaces inside it)")
    parser.add_argument("--delta", action="append", default=[],
                        help="A:B, repeatable (or one space-separated list): B - A as the built-in deltas are "
                             "reported, each side a variant name (dr_750+gray) or tag filters key=value joined by & "
                             "(regolith.augment=hflip,gray&regolith.frames=750)")
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


def delta_line(label: str, entry: dict) -> str:
    seeds = entry["seeds"]
    over = (f"paired over seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}" if seeds
            else "difference of means, no seed in common")
    return (f"{label}: {entry['variant']} - {entry['baseline']} = "
            f"{figures.signed(entry['absolute'], entry['absolute_std'])} rock-IoU "
            f"({figures.signed(entry['relative'], entry['relative_std'], percent=True)} relative; {over})"
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
    # Shares from different photo sets, fits or TTA are not one column's numbers: the header says so.
    real_header = "real rock share (NOT comparable: photo sets differ)" if results.get("real_refused") else \
        "real rock share"
    columns = ["variant", "dr", "frames", "seed ids", "rock-IoU", *(["rock (strict)"] if strict else []),
               "regolith", "sky", "mIoU", *([real_header] if real else []), "best epoch"]
    rows = [[name, "yes" if v["dr"] else "no", str(v["frames"]), ",".join(map(str, v["seeds"])), _number(v["iou_rock"]),
             *([_number(v["iou_rock_strict"])] if strict else []), _number(v["iou_regolith"]), _number(v["iou_sky"]),
             _number(v["miou"]), *([_share(v[ablation.REAL_SHARE])] if real else []),
             ",".join("?" if epoch is None else str(epoch) for epoch in v["best_epoch"])]
            for name, v in variants.items()]
    lines = [f"Size-matched ablation, experiment {results['experiment']!r}: best validation IoU per variant"
             " (mean ± std over seeds)", "", *aligned([columns, *rows]), ""]
    if results["dr_delta"] is None:
        lines.append(f"no DR or size delta here: {results['builtin_note']}")
    else:
        lines += [delta_line("DR delta  ", results["dr_delta"]), delta_line("size delta", results["size_delta"])]
    overall = results.get("per_frame_overall")
    if overall and (overall["variant"], overall["baseline"]) not in {
            (results[key]["variant"], results[key]["baseline"]) for key in ablation.DELTAS if results[key]}:
        lines.append(per_frame_line(overall))
    if results.get("real"):
        lines += ["", *real_lines(results["real"])]
    if results.get("flood") and not results["flood"].get("refused"):
        lines += ["", *flood_lines(results["flood"])]
    for split, scores in (results.get("splits") or {}).items():
        lines += ["", f"Labelled split {split!r} (evaluate --split; 95% CI over its frames, seeds pooled):"]
        lines += aligned([["variant", "frames", "rock-IoU", "precision", "recall"],
                          *([name, str(row["frames"]), *(_interval(row[key], '{:.4f}'.format).replace(
                              " includes zero", "").replace(" excludes zero", "")
                              for key in ("iou_rock", "precision", "recall"))] for name, row in scores.items())])
    if results.get("deltas"):  # after the study's own questions, which they do not change
        lines += ["", *lever_lines(results["deltas"])]
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
        lines += real_delta_lines(label, deltas[key])
    return lines


def real_delta_lines(label: str, entry: dict, indent: str = "            ") -> list:
    """One delta in real rock share, with its intervals over photos and over seeds."""
    lines = [f"{label}: {entry['variant']} - {entry['baseline']} = {_signed_share(entry['absolute'])} "
             f"real rock share"]
    photo, seeds = entry.get("photo_interval"), entry.get("seed_interval")
    if photo and photo["low"] is not None:
        lines.append(f"{indent}95% CI over {photo['photos']} photos (paired bootstrap): "
                     f"[{_signed_share(photo['low'])}, {_signed_share(photo['high'])}]"
                     + (" includes zero" if photo["includes_zero"] else " excludes zero")
                     + f"; more rock on {photo['variant_more']} photos, less on {photo['baseline_more']}")
    if seeds:
        lines.append(f"{indent}95% CI over {seeds['seeds']} seeds (t): [{_signed_share(seeds['low'])}, "
                     f"{_signed_share(seeds['high'])}]" + (" includes zero" if seeds["includes_zero"] else
                                                            " excludes zero"))
    return lines


def lever_lines(deltas: list) -> list:
    """Each ``--delta A:B``: B - A in rock-IoU with its intervals and wins, on real photos, and what else differs."""
    lines = ["Deltas asked for (--delta A:B reports B - A):"]
    for number, entry in enumerate(deltas, 1):
        lines.append(delta_line(f"delta {number}", entry))
        if entry.get("real"):
            lines += [f"            {line}" for line in real_delta_lines("real", entry["real"], indent="      ")]
        else:
            lines.append("            no real rock share: train with -P real_images or run regolith.photos on both")
        matched = entry.get("flood")
        if matched and matched.get("refused"):
            lines.append(f"            no delta at matched flood: {matched['refused']}")
        elif matched:
            lines += [f"            {line}" for line in matched_lines("at matched flood", matched)]
        lines += [f"            note: {line}" for line in entry["differences"]]
    return lines


def flood_lines(matched: dict) -> list:
    """Each delta at matched flood (the operating curves), with its paired interval over frames and photos, and
    its verdict."""
    lines = ["At matched flood (operating curves; 95% CI: paired bootstrap over validation frames and photos together):"]
    for key, label in (("dr_delta", "DR delta  "), ("size_delta", "size delta")):
        if matched.get(key):
            lines += matched_lines(label, matched[key])
    return lines


def matched_lines(label: str, entry: dict) -> list:
    """One delta at matched flood: the sides' argmax points, the rock-IoU delta at each held share, the verdict,
    and the mirror question."""
    v, b = entry["variant"], entry["baseline"]
    lines = [f"{label}: {v} - {b}; argmax real share {entry['argmax_share'][0]:.1%} vs "
             f"{entry['argmax_share'][1]:.1%}, argmax rock-IoU {entry['argmax_iou'][0]:.4f} vs "
             f"{entry['argmax_iou'][1]:.4f}"]
    held = [(f"at {entry['matched_share']:.1%} real share (the less-flooding argmax)", "iou_at_matched"),
            *((f"at {share:.0%} real share", names.at_share(share)) for share in curve.SHARES)]
    for words, field in held:
        lines.append(f"            rock-IoU delta {words}: {_interval(entry[field], '{:+.4f}'.format)}")
    lines.append(f"            verdict: {entry['verdict']}")
    lines.append(f"            real-share delta at matched rock-IoU ({min(entry['argmax_iou']):.4f}): "
                 f"{_interval(entry['share_at_matched_iou'], _signed_share)}")
    return lines


def _interval(entry: dict, form) -> str:
    if entry["delta"] is None:
        return "not reached by a side"
    ends = "" if entry["low"] is None else f" [{form(entry['low'])}, {form(entry['high'])}]" + (
        " includes zero" if entry["includes_zero"] else " excludes zero")
    return form(entry["delta"]) + ends


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
    rows += [[label, figures.gain(comparison[key]["study"]), figures.gain(comparison[key]["measured"]),
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


# ---- the results on disk and in the compare run ---------------------------------------------------

def results_folder(out: str, experiment: str) -> Path:
    """A new subfolder of the results directory, named by the UTC time; never one that exists."""
    root = Path(out) if out else Path("experiments/results") / folder_name(experiment)
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


def folder_name(experiment: str) -> str:
    """An experiment name as one folder name: no separators, and no leading dot, so '..' cannot climb out."""
    name = re.sub(r"[^A-Za-z0-9._+-]+", "_", experiment)
    return re.sub(r"^\.", "_", name) or "_"


def record(results: dict, curves: dict, args, run_id: str) -> Path:
    """Inside the compare run: write the JSON, the table and the figure, then log them and the deltas."""
    folder = results_folder(args.out, results["experiment"])
    results = stamped(results, run_id)
    source = [source_id for v in results["variants"].values() for source_id in v["run_ids"]]
    track.set_tags({names.KIND: names.KIND_COMPARE, names.EXPERIMENT: results["experiment"],
                    names.SOURCE_RUNS: ",".join(source), names.RESULTS_DIR: str(folder),
                    **{names.source_tag(name): ",".join(v["run_ids"]) for name, v in results["variants"].items()},
                    **{names.delta_tag(key): f"{results[key]['variant']} vs {results[key]['baseline']}"
                       for key in ablation.DELTAS if results[key]},
                    **{names.delta_tag(lever_key(number)): f"{entry['variant']} vs {entry['baseline']}"
                       for number, entry in enumerate(results.get("deltas", []), 1)}})
    track.log_metrics(delta_metrics(results))
    files = write_results(folder, "ablation", results, format_table(results),
                          lambda path: figures.plot_ablation(results, curves, path))
    print(f"\nresults: {files[0]}\nfigure:  {files[1]}\n"
          f"compare run {run_id} ('ablation', kind=compare) in experiment {results['experiment']!r}")
    # Nested training runs' parents (an ablation's or a sweep's run, this one under mlflow run) open in the UI.
    parents = sorted({row["tags"][names.PARENT] for row in store.read_runs(results["experiment"])
                      if row["run_id"] in source and row["tags"].get(names.PARENT)})
    url = track.share_training_view(store.experiment_id(results["experiment"]), parents)
    command = store.ui_command()
    print(f"browse:  {url}" + (f"\n         (serve the UI first: {command})" if command else ""))
    return folder


def stamped(results: dict, run_id: str) -> dict:
    return {**results, "compare_run_id": run_id, "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def delta_metrics(results: dict, prefix: str = "") -> dict:
    """The compare run's metrics: each variant's mean best scores, each delta and its interval ends."""
    logged = {names.key(names.safe_segment(name), score): v[score]["mean"] for name, v in results["variants"].items()
              for score in names.SCORES}
    entries = [(key, results[key]) for key in ablation.DELTAS if results[key]]
    entries += [(lever_key(number), entry) for number, entry in enumerate(results.get("deltas", []), 1)]
    for key, entry in entries:
        logged.update({names.key(key, field): entry[field]
                       for field in ("absolute", "absolute_std", "relative", "relative_std")})
        for kind in ("frame_interval", "seed_interval"):
            if entry.get(kind):
                logged.update({names.key(key, f"{kind}_{end}"): entry[kind][end] for end in ("low", "high")})
    logged.update(flood.metrics(results.get("flood"), {lever_key(number): entry.get("flood") for number, entry
                                                       in enumerate(results.get("deltas", []), 1)}))
    return {prefix + key: value for key, value in logged.items() if value is not None}


def lever_key(number: int) -> str:
    """The N-th ``--delta``'s key in the compare run's metrics and tags (its sides may hold = and ,: not in a key)."""
    return f"delta_{number}"


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
            gains.append(figures.gain(entry["absolute"])
                         + (f" [{interval['low']:+.3f}, {interval['high']:+.3f}]" if interval else ""))
        study = row["study"]
        rows.append([row["experiment"], *(f"{row['rock_iou'][name]:.4f} {name}" for name in row["variants"]), *gains,
                     f"{figures.gain(study['dr_750'] - study['nodr_750'])} / "
                     f"{figures.gain(study['dr_1500'] - study['dr_750'])}" if study else ""])
    first, last = results["generations"][0], results["generations"][-1]
    return "\n".join([
        f"Generations side by side ({', '.join(results['experiments'])}): best validation rock-IoU; gains with "
        "95% CI over frames (else seeds) where the store has it", "", *aligned(rows), "",
        f"no-DR baseline {first['experiment']} -> {last['experiment']}: "
        f"{first['rock_iou'][first['variants'][0]]:.4f} -> {last['rock_iou'][last['variants'][0]]:.4f} "
        f"({results['baseline_change']:+.4f}); DR gain {figures.gain(first['dr_delta']['absolute'])} -> "
        f"{figures.gain(last['dr_delta']['absolute'])} ({results['dr_gain_change']:+.4f})"])


def record_generations(results: dict, args, run_id: str) -> Path:
    folder = results_folder(args.out, "+".join(results["experiments"]))
    results = stamped(results, run_id)
    track.set_tags({names.KIND: names.KIND_COMPARE, names.EXPERIMENT: ",".join(results["experiments"]),
                    names.RESULTS_DIR: str(folder),
                    names.SOURCE_RUNS: ",".join(run_id for r in results["per_experiment"]
                                                for v in r["variants"].values() for run_id in v["run_ids"])})
    track.log_metrics({key: value for r in results["per_experiment"]
                       for key, value in delta_metrics(r, prefix=names.safe_segment(r["experiment"]) + "/").items()})
    files = write_results(folder, "generations", results, format_generations(results),
                          lambda path: figures.plot_generations(results, path))
    print(f"\nresults: {files[0]}\nfigure:  {files[1]}\ncompare run {run_id} ('generations', kind=compare)")
    return folder


# ---- the verb ----------------------------------------------------------------------------------

def experiment_names(given: list) -> list:
    """The experiments asked for: each ``--experiment`` value split like a shell would (the MLproject's list).

    A value with an unbalanced quote (``bob's``) cannot be a list: it is one name, as given.
    """
    names_ = []
    for value in given:
        try:
            names_ += shlex.split(value)
        except ValueError:
            names_.append(value.strip())
    return names_


def read_ablation(experiment: str, asked: tuple = ()) -> tuple:
    """(the experiment's ablation results, each counted run's validation rock-IoU curve), from the store."""
    rows = store.read_runs(experiment)
    stale = [entry["run_id"] for entry in liveness.known_dead(rows)]
    runs, ignored = ablation.select_runs(rows, stale)
    left_out = ", ".join(f"{count} {why}" for why, count in ignored.items() if count)
    print(f"experiment {experiment!r}: {len(runs)} training run(s) count" + (f"; left out: {left_out}" if left_out else "")
          + (f" (stale: {', '.join(stale)}: RUNNING, their process gone; python -m regolith.runs says how to resume "
             f"them)" if stale else ""))
    results = ablation.ablation_results(runs, experiment,
                                        {run["run_id"]: evaluate.read_frame_confusions(run["run_id"]) for run in runs},
                                        {run["run_id"]: photos.read_measurement(run["run_id"]) for run in runs},
                                        {run["run_id"]: evaluate.read_curve(run["run_id"]) for run in runs},
                                        {run["run_id"]: evaluate.read_split_confusions(run["run_id"]) for run in runs},
                                        asked=asked)
    results["ignored"] = ignored
    curves = {run["run_id"]: store.read_metric_history(run["run_id"], names.EPOCH_MARKER) for run in runs}
    return results, curves


def main(argv=None):
    args = build_parser().parse_args(argv)
    with refusals():
        store.check_reachable()
        experiments = experiment_names(args.experiment) or [store.reading_experiment("")]
        attached = store.attached_experiment()
        params = {"experiment": shlex.quote(" ".join(args.experiment)), "out": shlex.quote(args.out),
                  "delta": shlex.quote(" ".join(args.delta))}
        asked = tuple(experiment_names(args.delta))  # split like the experiments: the MLproject's one string
        if asked and len(experiments) > 1:
            raise Refused(f"delta={' '.join(asked)!r}: --delta compares two sides within one experiment, "
                          f"not across {len(experiments)} experiments")
        for spec in asked:
            ablation.parse_delta(spec)  # a malformed spec is refused before the store is read
        if len(experiments) == 1:
            experiment = experiments[0]
            if attached is not None and attached != experiment:
                raise Refused(f"experiment={experiment!r}, but mlflow run put this compare run in experiment "
                              f"{attached!r}; run `mlflow run . -e compare --experiment-name {experiment}` so "
                              f"the compare run lands beside the runs it compares")
            results, curves = read_ablation(experiment, asked)
            with track.run("ablation", experiment, params=params) as (run_id, _):
                record(results, curves, args, run_id)
            return
        results = ablation.generations_results([read_ablation(experiment)[0] for experiment in experiments])
        with track.run("generations", attached or experiments[-1], params=params) as (run_id, _):
            record_generations(results, args, run_id)


if __name__ == "__main__":
    main()
