"""The rock flood of a stored checkpoint on real photographs, recorded on its run: ``python -m regolith.photos``.

    mlflow run . --env-manager local -e photos -P run=dr_1500 -P images=/workspace/apollo [-P compare=nodr_750]
    python -m regolith.photos --run models:/regolith-segformer@dr_1500 --images DIR [--compare RUN] [--fit cover]

The study's question is what a checkpoint trained on rendered frames does on real photographs
of the Moon. Real photos have no masks, so there is no IoU; the measure is the share of each
photo's pixels predicted as rock, and the "rock flood" is its mean over the photos (synthetic
rock-IoU rose 0.815 -> 0.8521 while the share of real Apollo photos called rock rose 52% -> 83%).
Reading, fitting and the shares are ``regolith.photoset``'s; this verb fetches each checkpoint
from the store, predicts, and records on each checkpoint's run (never overwriting): metrics
``real/*`` at the checkpoint's epoch, tags, the photo set as a dataset input, and a new
``real/<UTC time>/`` folder with photos.csv, photos.json, a panel per photo and a contact sheet.
The module that writes photos.json reads it back (``read_measurement``) for compare.
"""

import argparse
import csv
import json
import tempfile
import time
from pathlib import Path

import torch

from regolith import CLASSES, Refused, figures, model as segformer, names, photoset, refusals, store, track

def build_parser() -> argparse.ArgumentParser:
    """Flags are the kebab-case twins of the MLproject ``photos`` parameters, with the same defaults."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True,
                        help="run id, run name in the experiment, or models:/regolith-segformer@<variant>")
    parser.add_argument("--images", required=True, help="folder of photographs (JPEG or PNG); nothing in it is written")
    parser.add_argument("--compare", default="", help="a second checkpoint, referred to as --run is, on the same photos")
    parser.add_argument("--fit", default="letterbox", choices=photoset.FIT_MODES,
                        help="letterbox: the long side to the training size, padded (padding never counts); "
                             "cover: centre-cropped square")
    parser.add_argument("--experiment", default="", help="experiment to look a run name up in; '' means the "
                                                          "active one (MLFLOW_EXPERIMENT_NAME, else Default)")
    parser.add_argument("--tta", default="none", choices=segformer.TTA_MODES,
                        help="hflip: average the softmax of each photo and its mirror; recorded, compare flags a mix")
    return parser


@torch.no_grad()
def predict_with_entropy(net, images, precision: str, device, tta: str, batch: int = 8) -> tuple:
    """(class ids N x S x S, softmax entropy N x S x S in nats), on the CPU, in segformer.predict's batches."""
    net.eval()
    predictions, entropy = [], []
    for start in range(0, len(images), batch):
        scores = segformer.class_scores(net, images[start:start + batch].to(device), precision, tta)
        predictions.append(scores.argmax(1).cpu())
        entropy.append(segformer.entropy(scores).cpu())
    return torch.cat(predictions), torch.cat(entropy)


def measure(args) -> dict:
    """Every checkpoint over every photo; everything recorded on each checkpoint's source run. Returns the summary."""
    runs = [store.find_run(args.run, args.experiment)]
    if args.compare:
        runs.append(store.find_run(args.compare, args.experiment))
        if runs[1]["run_id"] == runs[0]["run_id"]:
            raise Refused(f"--compare {args.compare!r} is the same run as --run {args.run!r}; give another checkpoint")
    track.label_launcher_run(names.KIND_PHOTOS, runs[0])
    payloads = []
    for run in runs:
        with store.fetched_checkpoint(run) as (_, payload):
            payloads.append(payload)
    size = photoset.training_size(runs[0])
    photo_set = photoset.prepare(args.images, size, args.fit)
    device = segformer.inference_device()
    checkpoints = []
    for run, payload in zip(runs, payloads):
        net = segformer.model_from_checkpoint(payload).to(device)
        precision = segformer.checkpoint_precision(payload, device)  # what its validation ran at
        started = time.perf_counter()
        predictions, entropy = predict_with_entropy(net, photo_set["images"], precision, device, args.tta)
        seconds = time.perf_counter() - started
        shares, flood = photoset.rock_flood(predictions, photo_set["valid"])
        valid = photo_set["valid"]
        checkpoints.append({"run": run, "label": run["run_name"], "epoch": payload.get("epoch"),
                            "precision": precision, "seconds": seconds, "predictions": predictions,
                            "shares": shares, "flood": flood, "entropy": entropy,
                            "mean_entropy": float((entropy.double() * valid).sum() / valid.sum()), "tta": args.tta})
    comparison = None
    if len(checkpoints) == 2:
        comparison = photoset.paired_difference(*([share["rock"] for share in c["shares"]] for c in checkpoints))
    summary = photo_summary(photo_set, checkpoints, comparison, device, args.tta)
    with tempfile.TemporaryDirectory(prefix="regolith-real-") as staging:
        write_photo_files(Path(staging), photo_set, checkpoints, summary)
        for checkpoint in checkpoints:
            record_photos(checkpoint, photo_set, Path(staging))
    report_photos(summary, photo_set, checkpoints)
    return summary


def photo_summary(photo_set: dict, checkpoints: list, comparison: dict | None, device, tta: str = "none") -> dict:
    """The JSON of a measurement: the set, each checkpoint's flood and per-photo shares, the paired difference."""
    return {
        "images": str(photo_set["folder"]), "photos_digest": photo_set["digest"], "fit": photo_set["fit"],
        "size": photo_set["size"], "tta": tta, "device": device.type, "skipped": photo_set["skipped"],
        "warnings": photo_set["warnings"],
        "shares_over": "each photo's own pixels; letterbox padding is never counted",
        "photos": [{"photo": name, "padding_pixels": padding}
                   for name, padding in zip(photo_set["names"], photo_set["padding"])],
        # shares[i]: photo i's {regolith, rock, sky}, over its own pixels
        "checkpoints": [{"run_id": c["run"]["run_id"], "run_name": c["run"]["run_name"], "ref": c["run"]["ref"],
                         "checkpoint": c["run"]["checkpoint_uri"], "epoch": c["epoch"], "precision": c["precision"],
                         "seconds": c["seconds"], "rock_share": c["flood"], "shares": c["shares"],
                         "mean_entropy": c["mean_entropy"]}
                        for c in checkpoints],
        "comparison": comparison and {"run": checkpoints[0]["label"], "compare": checkpoints[1]["label"],
                                      "rock_share_difference": comparison},
        "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def write_photo_files(folder: Path, photo_set: dict, checkpoints: list, summary: dict):
    """photos.csv, photos.json (``names.PHOTOS_JSON``), a panel per photo (panels/) and one contact sheet per checkpoint."""
    with (folder / "photos.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["photo", "padding_pixels", *(f"{c['label']}:{name}" for c in checkpoints for name in CLASSES)])
        for n, (name, padding) in enumerate(zip(photo_set["names"], photo_set["padding"])):
            writer.writerow([name, padding, *(f"{c['shares'][n][cls]:.6f}" for c in checkpoints for cls in CLASSES)])
    (folder / names.PHOTOS_JSON).write_text(json.dumps(summary, indent=2) + "\n")
    (folder / "panels").mkdir()
    for n, name in enumerate(photo_set["names"]):
        figures.photo_panel(name, photo_set["images"][n], photo_set["valid"][n],
                            [(c["label"], c["predictions"][n], c["shares"][n], c["entropy"][n]) for c in checkpoints],
                            folder / "panels" / f"{Path(name).stem}.png")
    for i, c in enumerate(checkpoints):
        flood = c["flood"]
        figures.contact_sheet(
            [(name, photo_set["images"][n], photo_set["valid"][n], c["predictions"][n], c["shares"][n]["rock"])
             for n, name in enumerate(photo_set["names"])],
            folder / ("contact_sheet.png" if i == 0 else f"contact_sheet_{c['label']}.png"),
            f"{c['label']} (epoch {c['epoch']}): rock on real photos, mean {flood['mean']:.1%} "
            f"(min {flood['min']:.1%}, max {flood['max']:.1%})")


def record_photos(checkpoint: dict, photo_set: dict, staging: Path):
    """On the checkpoint's source run, never overwriting: metrics at the checkpoint's epoch, tags, dataset, files."""
    run_id = checkpoint["run"]["run_id"]
    folder, _ = store.fresh_folder(run_id, names.REAL)
    flood = checkpoint["flood"]
    track.log_artifacts_to_run(run_id, staging, folder)
    track.log_dataset(photo_set["folder"], photo_set["digest"], names.CONTEXT_REAL, run_id=run_id)
    # Step: the epoch the checkpoint is from, so these sit beside a training run's own per-epoch real/ series.
    measured = dict(zip(names.REAL_SET, (flood["mean"], flood["min"], flood["max"], flood["photos"])))
    measured[names.REAL_ENTROPY] = checkpoint["mean_entropy"]
    if checkpoint["tta"] != "none":  # real/hflip/rock_share_mean: never in place of the plain measurement's keys
        measured = {names.key(names.key(names.REAL, checkpoint["tta"]), k.split("/", 1)[1]): v for k, v in measured.items()}
    track.log_to_run(run_id, measured,
                     {names.REAL_DIGEST: photo_set["digest"], names.REAL_ARTIFACTS: folder},
                     step=checkpoint["epoch"] or 0)
    checkpoint["artifacts"] = folder


def report_photos(summary: dict, photo_set: dict, checkpoints: list):
    print(f"{len(photo_set['names'])} photos from {photo_set['folder']} (digest {photo_set['digest']}), "
          f"{photo_set['fit']} to {photo_set['size']}x{photo_set['size']}; shares over each photo's own pixels")
    for warning in photo_set["warnings"]:
        print(f"warning: {warning}")
    for name, reason in photo_set["skipped"]:
        print(f"skipped {name}: {reason}")
    for checkpoint in summary["checkpoints"]:
        flood = checkpoint["rock_share"]
        interval = flood["interval"]
        print(f"{checkpoint['run_name']} ({checkpoint['run_id'][:8]}, epoch {checkpoint['epoch']}, "
              f"{checkpoint['precision']}): mean rock share {flood['mean']:.1%} (min {flood['min']:.1%}, max "
              f"{flood['max']:.1%}" + (f", 95% CI [{interval[0]:.1%}, {interval[1]:.1%}]" if interval else "")
              + f") in {checkpoint['seconds']:.2f}s on {summary['device']}")
    if summary["comparison"]:
        difference = summary["comparison"]["rock_share_difference"]
        interval = difference["interval"]
        run, other = summary["comparison"]["run"], summary["comparison"]["compare"]
        print(f"{run} - {other}: {difference['mean']:+.1%} rock share"
              + (f" (95% CI [{interval[0]:+.1%}, {interval[1]:+.1%}])" if interval else "")
              + f"; {run} calls more rock on {difference['a_more']} photos, {other} on {difference['b_more']}, "
              f"{difference['ties']} ties")
    print(f"logged {', '.join(names.REAL_SET)} and tag {names.REAL_DIGEST} to each run; artifacts (photos.csv, "
          f"{names.PHOTOS_JSON}, panels/, contact_sheet.png) in " + "; ".join(
              f"run {c['run']['run_name']}'s {c['artifacts']}/" for c in checkpoints))


def read_measurement(run_id: str) -> dict | None:
    """The run's latest measurement of its own checkpoint by this verb: {"digest", "fit", "tta", "photos", "rock"},
    or None.

    ``rock`` is each photo's rock share, in the order of ``photos`` (file names); the set's digest,
    ``fit`` and ``tta`` say whether two runs' shares can be compared (``ablation.mixed_photo_sets``).
    """
    folder = store.read_run(run_id)["tags"].get(names.REAL_ARTIFACTS)
    if not folder:
        return None
    loaded = json.loads(store.download_artifact(run_id, f"{folder}/{names.PHOTOS_JSON}").read_text())
    own = [c for c in loaded.get("checkpoints", []) if c["run_id"] == run_id and "shares" in c]
    if not own:
        return None
    return {"digest": loaded["photos_digest"], "fit": loaded.get("fit", "letterbox"), "tta": loaded.get("tta", "none"),
            "photos": [p["photo"] for p in loaded["photos"]], "rock": [share["rock"] for share in own[0]["shares"]]}


def main(argv=None):
    with refusals():
        measure(build_parser().parse_args(argv))


if __name__ == "__main__":
    main()
