"""Verify a run's best checkpoint by a fresh inference pass, and record what it finds on that run.

    mlflow run . --env-manager local -e evaluate -P run=dr_750     # a run name, a run id, or a models:/ URI
    python -m regolith.evaluate --run models:/regolith-segformer@dr_750 [--split DIR] [--experiment NAME]

``best.pt`` is downloaded from the artifact store (never a copy the run left on disk) and loaded
with the safe unpickler. The split, by default the run's validation split (tag
``regolith.val_split``), is scored frame by frame: one confusion matrix per frame, summed into
global per-class IoU with regolith.metrics, as validation does (same upsampling, batch size and
precision: the bf16 or fp32 that ``best.pt`` records), but in code that shares no state with the
training loop. The results go back to the source run: metrics ``verify/iou_*`` and
``verify/miou``, tags ``verify/split`` and ``verify/check``, and a fresh artifact folder
``verify/<UTC time>/`` per evaluation (so a re-run never replaces an earlier one) holding
``frames.csv`` (per-frame IoU, worst rock-IoU first), ``confusion_per_frame.json``,
``overlays.png`` (best, median and worst frames) and ``summary.json``. ``verify/`` holds only
the run's own validation split: any other split (``--split DIR``, a labelled real split) is
recorded the same way under ``split/<folder name>/`` (``split/test_real/iou_rock``,
``split/test_real/<UTC time>/``), so reporting on it never replaces the verification.

Exit status: 0 when the fresh rock-IoU on the run's own validation split agrees with the
training-time ``best/iou_rock`` within 1e-3 (or another split was only reported), 1 when it
does not, 2 on an error (unknown run, no best.pt, a refused checkpoint, a bad split).
"""

import argparse
import csv
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import torch

import numpy as np

from regolith import (CLASSES, IGNORE_INDEX, ROCK, Refused, curve, data, figures, metrics, model as segformer, names,
                      photos, photoset, refusals, store, track)

# The reference study's own check: 0.8520 fresh against 0.8521 at training time.
TOLERANCE = 1e-3
# What evaluate, and a training run verifying itself (train.verify_with_photos), say when the check fails.
CHECK_FAILED = (f"the fresh rock-IoU differs from the training-time best/iou_rock by more than {TOLERANCE:g}; "
                "the inference path does not reproduce validation")


def build_parser() -> argparse.ArgumentParser:
    """Flags are the kebab-case twins of the MLproject ``evaluate`` parameters, with the same defaults."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True,
                        help="run id, run name in the experiment, or models:/regolith-segformer@<variant>")
    parser.add_argument("--split", default="", help="split directory; '' means the run's validation split")
    parser.add_argument("--experiment", default="", help="experiment to look a run name up in; '' means the "
                                                          "active one (MLFLOW_EXPERIMENT_NAME, else Default)")
    parser.add_argument("--images", default="", help="real photos for the operating curve; '' means the run's "
                                                      "real_images param where that folder is here, none: no curve")
    parser.add_argument("--fit", default="letterbox", choices=photoset.FIT_MODES,
                        help="how the photos are fitted to the training size, as regolith.photos fits them")
    parser.add_argument("--tta", default="none", choices=segformer.TTA_MODES,
                        help="hflip: average the softmax of each image and its mirror (recorded under <prefix>/hflip/)")
    return parser


@torch.no_grad()
def frame_confusions(model, split: data.Split, batch: int, device, precision: str, counting: bool = False,
                     tta: str = "none") -> tuple:
    """(one confusion matrix per frame (N x (C + 1) x C: rows the true class, then label 255), as validation counts;
    with ``counting``, (the operating curve's margin counts per frame (N x 3 x bins, ``curve.frame_counts``), the
    mean softmax entropy), else None). ``tta``: ``model.class_scores``' (none: the logits themselves).

    The curve is counted from the same logits as the argmax, so its t = 0 is this pass's rock-IoU to the bit.
    """
    model.eval()
    confusions = torch.zeros(split.frames, len(CLASSES) + 1, len(CLASSES), dtype=torch.long)
    counts = torch.zeros(split.frames, len(curve.LABELS), len(curve.EDGES) + 1, dtype=torch.long) if counting else None
    entropy = torch.zeros((), dtype=torch.float64)
    for start in range(0, split.frames, batch):
        images = split.images[start:start + batch].to(device)
        logits = segformer.class_scores(model, images, precision, tta)
        if counting:  # on the device, one copy back per batch
            counts[start:start + len(images)] = curve.frame_counts(
                curve.rock_margin(logits), split.masks[start:start + batch]).cpu()
            entropy += segformer.entropy(logits).double().sum().cpu()
        predictions = logits.argmax(1).cpu()
        for offset, prediction in enumerate(predictions):
            confusions[start + offset] = metrics.confusion_matrix(prediction, split.masks[start + offset])
    # the mean softmax entropy over every validation pixel, beside the counts
    return confusions, (counts, float(entropy / split.masks.numel())) if counting else None


@torch.no_grad()
def photo_margin_counts(model, photo_set: dict, device, precision: str, batch: int = 8, tta: str = "none") -> tuple:
    """(photos x bins margin counts over each photo's own pixels, in regolith.photos' batches (the same argmax);
    the mean softmax entropy over those pixels)."""
    model.eval()
    images, valid = photo_set["images"], photo_set["valid"]
    counts, entropy = [], torch.zeros((), dtype=torch.float64)
    for start in range(0, len(images), batch):
        scores = segformer.class_scores(model, images[start:start + batch].to(device), precision, tta)
        counts.append(curve.photo_counts(curve.rock_margin(scores), valid[start:start + batch]).cpu())
        entropy += (segformer.entropy(scores).cpu().double() * valid[start:start + batch]).sum()
    return torch.cat(counts), float(entropy / valid.sum())


def photo_folder(args, run: dict) -> str | None:
    """The photos the curve counts: --images, else the folder the run watched in training where it is here."""
    if args.images.lower() == "none":
        return None
    if args.images:
        return args.images
    watched = run["params"].get("real_images", "")
    return watched if watched and Path(watched).is_dir() else None


def operating_curve(model, run: dict, folder: str | None, fit: str, counted: tuple | None, device,
                    precision: str, tta: str = "none") -> dict | None:
    """The curve of this pass, with the photos it counted ({"curve", "images", "digest", "fit", "photos", ...}).

    ``counted``: frame_confusions' (margin counts, mean entropy) of the validation frames."""
    if counted is None or folder is None:
        return None
    frame_counts, val_entropy = counted
    photo_set = photoset.prepare(folder, photoset.training_size(run), fit)
    counts, photo_entropy = photo_margin_counts(model, photo_set, device, precision, tta=tta)
    operating = curve.operating_curve(frame_counts.numpy(), counts.numpy())
    # The out-of-domain signal: how much less sure the model is on the photos than on its validation frames.
    entropy = {names.ENTROPY_VAL: val_entropy, names.ENTROPY_PHOTOS: photo_entropy,
               names.ENTROPY_RATIO: photo_entropy / val_entropy if val_entropy > 0 else None}
    return {"curve": operating, "images": str(photo_set["folder"]), "digest": photo_set["digest"],
            "fit": photo_set["fit"], "tta": tta, "photos": photo_set["names"], "photo_counts": counts,
            "frame_counts": frame_counts, "summary": {**curve_summary(operating), **entropy}}


def curve_summary(operating: dict) -> dict:
    """What the run records of its curve as metrics: rock-IoU at the fixed real shares, the real share at argmax."""
    point = operating["argmax"]
    return {names.REAL_SHARE_AT_ARGMAX: operating["real_share"][point],
            **{names.at_share(share): curve.at_share(operating, share) for share in curve.SHARES}}


def frame_table(frames: list, confusions: torch.Tensor) -> list:
    """Per-frame rows in frame order: IoU per class (NaN where a class is absent from both), mIoU over the
    classes present, and rock pixels (labelled ones)."""
    rows = []
    for name, confusion in zip(frames, confusions):
        iou = metrics.iou_per_class(confusion)
        labelled = confusion[:len(CLASSES)]
        rows.append({"frame": name, **dict(zip(names.SCORES, [*iou.tolist(), metrics.mean_iou(iou).item()])),
                     "rock_pixels": int(labelled[ROCK].sum()), "rock_pixels_predicted": int(labelled[:, ROCK].sum()),
                     "labelled_pixels": int(labelled.sum())})
    return rows


def worst_first(rows: list) -> list:
    """Rows sorted by rock-IoU ascending; frames with no rock in label or prediction (NaN) go last."""
    return sorted(rows, key=lambda row: (math.isnan(row["iou_rock"]), row["iou_rock"]))


def pick_frames(rows: list, per_group: int = 2) -> list:
    """(label, row index) for the worst, median and best frames by rock-IoU, each frame once."""
    # NaN first filtered out: it compares false with everything and would scramble the sort.
    order = sorted((i for i, row in enumerate(rows) if not math.isnan(row["iou_rock"])),
                   key=lambda i: rows[i]["iou_rock"])
    if not order:  # no frame has rock at all: show the first few rather than nothing
        return [("no rock", i) for i in range(min(len(rows), 3 * per_group))]
    middle = max(0, len(order) // 2 - per_group // 2)
    groups = [("worst", order[:per_group]), ("median", order[middle:middle + per_group]),
              ("best", order[::-1][:per_group])]
    picked, seen = [], set()
    for label, indices in groups:
        for i in indices:
            if i not in seen:
                seen.add(i)
                picked.append((label, i))
    return picked


def write_frames_csv(rows: list, path: Path):
    columns = ["frame", *names.SCORES, "rock_pixels", "rock_pixels_predicted", "labelled_pixels"]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in worst_first(rows):
            writer.writerow({k: f"{v:.6f}" if isinstance(v, float) else v for k, v in row.items()})


def write_confusions(frames: list, confusions: torch.Tensor, path: Path):
    path.write_text(json.dumps({
        "classes": list(CLASSES),
        "layout": f"confusion[frame][true class][predicted class], pixel counts, label {IGNORE_INDEX} excluded; "
                  f"ignored_predicted[frame][predicted class]: the pixels labelled {IGNORE_INDEX}",
        "frames": frames, "confusion": confusions[:, :len(CLASSES)].tolist(),
        "ignored_predicted": confusions[:, len(CLASSES)].tolist()}) + "\n")


def same_split(split: data.Split, tags: dict) -> tuple:
    """(whether ``split`` is the one the run validated on, why), by content digest where the run recorded it."""
    val_path, val_digest = tags.get(names.VAL_SPLIT), tags.get(names.VAL_DIGEST)
    same_path = val_path is not None and Path(val_path).resolve() == split.path.resolve()
    if val_digest:
        if split.digest == val_digest:
            return True, "the run's validation split"
        if same_path:
            return False, (f"the run's validation split path, but its frames changed since training (digest "
                           f"{split.digest}, the run validated on {val_digest}); not compared")
        return False, (f"not the run's validation split (digest {split.digest}, the run's is {val_digest}); "
                       f"reported only")
    if same_path:
        return True, "the run's validation split (by path; the run recorded no digest)"
    return False, "not the run's validation split; reported only"


def training_numbers(run: dict, payload: dict) -> tuple:
    """The training-time validation IoU: the run's best/* metrics, else the checkpoint's own record."""
    best = {score: run["metrics"].get(names.key(names.BEST, score)) for score in (*names.SCORES, *names.STRICT_SCORES)}
    if all(best[score] is not None for score in names.SCORES):  # the strict pair only from runs that logged it
        return {score: value for score, value in best.items() if value is not None}, "best/* metrics"
    return ({score: float(payload["metrics"][score]) for score in names.SCORES if score in payload.get("metrics", {})},
            "checkpoint metrics")


def format_comparison(training: dict, fresh: dict, compared: bool, source: str) -> str:
    head = f"{'':14s}{'training':>12s}{'fresh':>12s}" + (f"{'fresh-train':>14s}" if compared else "")
    lines = [head + f"   (training: {source})"]
    for key in fresh:
        train_value = training.get(key, float("nan"))
        line = f"{key:14s}{train_value:12.6f}{fresh[key]:12.6f}"
        if compared:
            line += f"{fresh[key] - train_value:+14.6f}"
        lines.append(line)
    return "\n".join(lines)


def split_to_score(args, run: dict) -> data.Split:
    """The split ``--split`` names, else the run's validation split, checked and decoded."""
    split_arg = args.split or run["tags"].get(names.VAL_SPLIT, "")
    if not split_arg:
        raise Refused(f"run {run['run_id']} records no validation split (tag {names.VAL_SPLIT}); pass --split")
    split_dir = Path(split_arg).resolve()
    if not split_dir.is_dir():
        raise Refused(f"split {split_dir} (from {'--split' if args.split else 'the run tag ' + names.VAL_SPLIT})"
                      f": no such directory here; pass --split with the split's location on this machine")
    return data.load_split(split_dir)


def verdict(compared: bool, relation: str, fresh: dict, training: dict) -> tuple:
    """(check, whether it was compared): pass or fail within ``TOLERANCE`` on the run's own validation split."""
    if not compared:
        return f"not compared: {relation}", False
    if "iou_rock" not in training:
        return "not compared: the run has no training-time rock-IoU", False
    return ("pass" if abs(fresh["iou_rock"] - training["iou_rock"]) <= TOLERANCE else "fail"), True


def evaluate(args) -> dict:
    """The whole check; returns the summary written to ``summary.json`` (``check`` says pass, fail or why not)."""
    run = store.find_run(args.run, args.experiment)
    track.label_launcher_run(names.KIND_EVALUATE, run)
    with store.fetched_checkpoint(run) as (_, payload):
        model = segformer.model_from_checkpoint(payload)
    split = split_to_score(args, run)
    compared, relation = same_split(split, run["tags"])
    # Only the validation split's pass is the verification; any other split reports under its own prefix, and a
    # pass with flip TTA under <prefix>/hflip/ (it is not what validation computed).
    prefix = names.VERIFY if compared else names.split_prefix(split.path.name)
    if args.tta != "none":
        prefix, compared, relation = names.key(prefix, names.TTA), False, f"{relation}; tta={args.tta}: reported only"

    device = segformer.inference_device()
    model.to(device)
    if device.type == "cuda":  # validation's layout there (engine.prepare)
        model.to(memory_format=torch.channels_last)
    precision = segformer.checkpoint_precision(payload, device)  # validation's
    # Validation's batch size, so the same kernels see the same batches; on CPU the numbers then match exactly.
    batch = int(payload.get("args", {}).get("batch", 8))
    started = time.perf_counter()
    folder = photo_folder(args, run)  # the curve is counted only where there are photos to read it against
    confusions, counts = frame_confusions(model, split, batch, device, precision, folder is not None, args.tta)
    seconds = time.perf_counter() - started
    operating = operating_curve(model, run, folder, args.fit, counts, device, precision, args.tta)
    fresh = metrics.iou_summary(confusions.sum(0))
    training, source = training_numbers(run, payload)
    check, compared = verdict(compared, relation, fresh, training)

    folder, number = store.fresh_folder(run["run_id"], prefix)
    summary = {
        "run_id": run["run_id"], "run_name": run["run_name"], "ref": run["ref"], "model_version": run["model_version"],
        "checkpoint": run["checkpoint_uri"], "checkpoint_epoch": payload.get("epoch"),
        "split": str(split.path), "split_digest": split.digest, "frames": split.frames, "split_relation": relation,
        "fresh": fresh, "training": training, "training_source": source,
        "difference": {k: fresh[k] - training[k] for k in fresh if k in training} if compared else None,
        "tolerance": TOLERANCE, "check": check, "prefix": prefix, "artifacts": folder, "evaluation": number,
        "device": device.type, "precision": precision, "batch": batch, "seconds": seconds, "tta": args.tta,
        "curve": operating and {key: operating[key] for key in ("images", "digest", "fit", "tta", "photos", "summary")},
        "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    record(run, summary, model, split, confusions, device, operating)
    report(summary, f"{run['run_name']} ({run['run_id'][:8]})", compared)
    return summary


def record(run: dict, summary: dict, model, split: data.Split, confusions: torch.Tensor, device,
           operating: dict | None = None):
    """On the source run, never overwriting: a new <prefix>/<UTC time>/ folder, then the prefix's metrics and tags
    (verify/ for the validation split, split/<name>/ for any other)."""
    fresh, check, folder = summary["fresh"], summary["check"], summary["artifacts"]
    with tempfile.TemporaryDirectory(prefix="regolith-verify-") as staging:
        staging = Path(staging)
        rows = frame_table(split.names, confusions)
        write_frames_csv(rows, staging / "frames.csv")
        write_confusions(split.names, confusions, staging / names.FRAME_CONFUSIONS)
        draw_overlays(model, split, rows, device, summary["precision"], staging / "overlays.png",
                      f"{run['run_name']} ({run['run_id'][:8]}), epoch {summary['checkpoint_epoch']}: "
                      f"{split.path.name} ({split.frames} frames)  rock-IoU {fresh['iou_rock']:.4f}  "
                      f"mIoU {fresh['miou']:.4f}  (check: {check.split(':')[0]})")
        (staging / names.SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")
        if operating:
            picture = write_curve(operating, staging, f"{run['run_name']} ({run['run_id'][:8]}), epoch "
                                  f"{summary['checkpoint_epoch']}: {split.path.name} against {operating['images']}")
        track.log_artifacts_to_run(run["run_id"], staging, folder)
    prefix = summary["prefix"]
    tags = dict(zip(names.evaluation_tags(prefix), (split.path, split.digest, check, folder)))
    scores = names.prefixed(prefix, fresh)
    if operating:
        scores.update({k: v for k, v in names.prefixed(prefix, operating["summary"]).items() if v is not None})
        tags[names.key(prefix, names.CURVE_PHOTOS_DIGEST)] = operating["digest"]
        track.log_image_to_run(run["run_id"], picture, names.key(prefix, names.IMAGE_CURVE), summary["evaluation"])
    track.log_to_run(run["run_id"], scores, tags, step=summary["evaluation"])


def write_curve(operating: dict, folder: Path, title: str):
    """curve.csv, curve.json, curve_counts.npz (what compare resamples) and curve.png; returns the picture."""
    with (folder / names.CURVE_CSV).open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(curve.COLUMNS)
        writer.writerows(["" if v is None else f"{v:.6f}" for v in row] for row in curve.rows(operating["curve"]))
    (folder / names.CURVE_JSON).write_text(json.dumps(
        {**{key: operating[key] for key in ("images", "digest", "fit", "tta", "photos", "summary")},
         "rule": "rock where rock logit - max other logit > t; t = 0 is the argmax", **operating["curve"]}) + "\n")
    np.savez_compressed(folder / names.CURVE_COUNTS, frames=operating["frame_counts"].numpy(),
                        photos=operating["photo_counts"].numpy(), edges=curve.EDGES.numpy())
    return figures.operating_curve([("this checkpoint", operating["curve"])], title, folder / names.CURVE_FIGURE)


def draw_overlays(model, split: data.Split, rows: list, device, precision: str, path: Path, title: str):
    """Predict the picked frames again and draw them; the sheet is the first thing a researcher opens."""
    picks = pick_frames(rows)
    predictions = segformer.predict(model, split.images[[i for _, i in picks]], precision, device)
    panels = []
    for (group, i), prediction in zip(picks, predictions):
        row = rows[i]
        panels.append((f"{group}\nframe {row['frame']}\nrock-IoU {row['iou_rock']:.3f}\n{row['rock_pixels']} rock px",
                       split.images[i].permute(1, 2, 0).numpy(), split.masks[i].numpy(), prediction.numpy()))
    figures.overlay_sheet(panels, title, path)


def report(summary: dict, label: str, compared: bool):
    print(f"{label}: checkpoint epoch {summary['checkpoint_epoch']} from {summary['checkpoint']}")
    print(f"split {summary['split']}: {summary['frames']} frames, digest {summary['split_digest']}, "
          f"{summary['split_relation']}; inference on {summary['device']} ({summary['precision']}, as validation) "
          f"in {summary['seconds']:.1f}s")
    print(format_comparison(summary["training"], summary["fresh"], compared, summary["training_source"]))
    if compared:
        difference = abs(summary["difference"]["iou_rock"])
        passed = summary["check"] == "pass"
        print(f"rock-IoU {'agrees' if passed else 'DISAGREES'}: |fresh - training| = {difference:.2e} "
              f"({'within' if passed else 'beyond'} {TOLERANCE:g})")
    else:
        print(summary["check"])
    if summary["curve"]:
        point = summary["curve"]["summary"]
        held = ", ".join(f"{share:.0%}: " + ("not reached" if point[names.at_share(share)] is None
                                             else f"{point[names.at_share(share)]:.4f}") for share in curve.SHARES)
        print(f"operating curve on {len(summary['curve']['photos'])} photos ({summary['curve']['images']}, "
              f"{summary['curve']['fit']}): real rock share at the argmax {point[names.REAL_SHARE_AT_ARGMAX]:.1%}; "
              f"rock-IoU with the real share held to {held}; {names.CURVE_CSV}, {names.CURVE_JSON}, "
              f"{names.CURVE_FIGURE}")
    prefix = summary["prefix"]
    print(f"logged {prefix}/iou_* and {prefix}/miou (step {summary['evaluation']}) and tags {prefix}/split, "
          f"{prefix}/check to run {summary['run_id']}"
          + ("" if prefix == names.VERIFY else f" ({names.VERIFY}/ untouched: it is the validation split's)")
          + f"; artifacts in {summary['artifacts']}/: frames.csv (worst rock-IoU first), "
          f"{names.FRAME_CONFUSIONS}, overlays.png, {names.SUMMARY}")


def read_frame_confusions(run_id: str) -> dict | None:
    """The per-frame confusion matrices of the run's latest fresh inference pass on its own validation split.

    Returns {"frames": names, "confusion": frames x 3 x 3 counts}, or None when the run has no such
    pass (this verb writes one) or it was on another split.
    """
    tags = store.read_run(run_id)["tags"]
    folder = tags.get(names.VERIFY_ARTIFACTS)
    if not folder or tags.get(names.VERIFY_SPLIT_DIGEST) != tags.get(names.VAL_DIGEST):
        return None
    loaded = json.loads(store.download_artifact(run_id, f"{folder}/{names.FRAME_CONFUSIONS}").read_text())
    return {"frames": loaded["frames"], "confusion": loaded["confusion"]}


def read_split_confusions(run_id: str) -> dict:
    """{split name: {"digest", "frames", "confusion"}}: the run's latest pass on each other labelled split
    (``split/<name>/``, plain, not TTA), for compare's per-split table."""
    tags = store.read_run(run_id)["tags"]
    found = {}
    for tag, folder in tags.items():
        parts = tag.split("/")
        if len(parts) != 3 or parts[0] != names.SPLITS or parts[2] != "artifacts":
            continue
        loaded = json.loads(store.download_artifact(run_id, f"{folder}/{names.FRAME_CONFUSIONS}").read_text())
        found[parts[1]] = {"digest": tags.get(names.key(names.key(names.SPLITS, parts[1]), "split_digest")),
                           "frames": loaded["frames"], "confusion": loaded["confusion"]}
    return found


def read_curve(run_id: str) -> dict | None:
    """The operating-curve counts of the run's latest verification, where it counted photos, else None.

    {"frames": frames x 3 x bins, "photos": photos x bins, "digest", "fit", "tta", "split_digest", "photo_names"}:
    what compare resamples for its deltas at matched flood.
    """
    tags = store.read_run(run_id)["tags"]
    folder = tags.get(names.VERIFY_ARTIFACTS)
    if not folder or tags.get(names.VERIFY_SPLIT_DIGEST) != tags.get(names.VAL_DIGEST):
        return None
    summary = json.loads(store.download_artifact(run_id, f"{folder}/{names.SUMMARY}").read_text())
    if not summary.get("curve"):
        return None
    with np.load(store.download_artifact(run_id, f"{folder}/{names.CURVE_COUNTS}")) as counts:
        if not np.array_equal(counts["edges"], curve.EDGES.numpy()):
            return None  # counted on other bins (another version): not comparable edge for edge
        frames, photo_counts = counts["frames"], counts["photos"]
    found = summary["curve"]
    return {"frames": frames, "photos": photo_counts, "digest": found["digest"], "fit": found["fit"],
            "tta": found.get("tta", "none"), "split_digest": summary["split_digest"], "photo_names": found["photos"]}


def main(argv=None):
    args = build_parser().parse_args(argv)
    with refusals():
        summary = evaluate(args)
    if summary["check"] == "fail":
        print(f"error: {CHECK_FAILED}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
