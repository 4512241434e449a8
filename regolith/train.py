"""Fine-tune SegFormer-B0 on one rendered split and track the run in MLflow.

    mlflow run . -P split=/workspace/datasets/train_dr            # the MLproject's main entry point
    python -m regolith.train --split DIR [--frames N] [--run-name NAME] [--experiment NAME]

The recipe is the reference study's (shared/reference/03-training.txt): class-weighted
cross-entropy, AdamW with cosine decay to 1e-7, validation on the unseen-domain split
``test_photoreal``, and the checkpoint with the best validation rock-IoU kept as ``best.pt``.
Per epoch: train, evaluate, log, keep the best, maybe stop.
"""

import argparse
import copy
import json
import math
import os
import platform
import re
import shlex
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from regolith import CLASSES, IGNORE_INDEX, data, metrics, model as segformer, track

MIN_LR = 1e-7


class UsageError(ValueError):
    """A parameter value that cannot work; the message names it and what was expected."""


def build_parser() -> argparse.ArgumentParser:
    """Flags are the kebab-case twins of the MLproject parameters, with the same defaults."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split", required=True, help="training split directory")
    parser.add_argument("--val-split", default="", help="validation split; '' means the sibling test_photoreal")
    parser.add_argument("--frames", type=int, default="0", help="use the first N frames (0: all)")
    parser.add_argument("--epochs", type=int, default="40", help="maximum epochs")
    parser.add_argument("--lr", type=float, default="6e-5", help="AdamW peak learning rate")
    parser.add_argument("--batch", type=int, default="8", help="batch size")
    parser.add_argument("--seed", type=int, default="0", help="seed for initialization and data order")
    parser.add_argument("--patience", type=int, default="8", help="early stopping on validation rock-IoU")
    parser.add_argument("--pretrained", default="nvidia/mit-b0",
                        help="hub id or local directory of the encoder; 'none' means random init")
    parser.add_argument("--dr", default="auto", choices=["true", "false", "auto"],
                        help="whether the split is domain-randomized (auto: from its name)")
    parser.add_argument("--register", default="true", choices=["true", "false"],
                        help="register best.pt in the Model Registry as regolith-segformer@<variant>")
    parser.add_argument("--run-name", default=None, help="MLflow run name (default: the variant, e.g. dr_750)")
    parser.add_argument("--experiment", default=None, help="MLflow experiment name when run directly")
    return parser


# The MLproject parameters: what mlflow run logs itself, and what a direct run logs the same way.
RUN_PARAMS = ("split", "val_split", "frames", "epochs", "lr", "batch", "seed", "patience", "pretrained", "dr",
              "register")


def as_given(parser: argparse.ArgumentParser, argv) -> dict:
    """The MLproject parameters exactly as ``mlflow run`` logs them: the given text, shell-quoted.

    ``mlflow run`` logs ``lr`` as the text ``6e-5`` and an empty ``val_split`` as ``''``; logging
    ``str(6e-05)`` would be a conflicting re-log, so a direct run logs what ``mlflow run`` would have.
    """
    untyped = copy.deepcopy(parser)
    for action in untyped._actions:
        action.type = None  # keep the strings as typed (argparse also leaves string defaults alone)
    given = vars(untyped.parse_args(argv))
    return {key: shlex.quote(str(given[key])) for key in RUN_PARAMS}


def check_args(args):
    for name in ("epochs", "batch", "patience"):
        if getattr(args, name) < 1:
            raise UsageError(f"{name}={getattr(args, name)}: expected a positive integer")
    if not args.lr > 0:
        raise UsageError(f"lr={args.lr}: expected a positive learning rate")


def resolve_dr(dr: str, split_dir: Path) -> bool:
    """true/false as given; auto reads the split's name: ``nodr`` means false, then ``dr`` means true."""
    if dr != "auto":
        return dr == "true"
    name = split_dir.name.lower()
    if re.search(r"(^|[^a-z])nodr($|[^a-z])", name):
        return False
    if re.search(r"(^|[^a-z])dr($|[^a-z])", name):
        return True
    raise UsageError(f"dr=auto cannot tell from the split name {split_dir.name!r} whether it is domain-randomized "
                     f"(expected 'dr' or 'nodr' in the name); pass -P dr=true or -P dr=false")


def resolve_val_split(val_split: str, split_dir: Path) -> Path:
    return Path(val_split).resolve() if val_split else split_dir.parent / "test_photoreal"


def get_lr(step: int, total_steps: int, peak_lr: float) -> float:
    """Cosine decay per step from ``peak_lr`` to 1e-7 over the whole run (epochs x steps per epoch)."""
    progress = min(step / max(total_steps, 1), 1.0)
    return MIN_LR + 0.5 * (peak_lr - MIN_LR) * (1 + math.cos(math.pi * progress))


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def train_epoch(model, split, class_weights, optimizer, step, total_steps, args, order, device, progress=None):
    """One pass over the training frames in ``order``; returns (mean batch loss, the next step)."""
    model.train()
    losses = []
    for start in range(0, len(order), args.batch):
        index = order[start:start + args.batch]
        images = split.images[index].to(device, non_blocking=True)
        masks = split.masks[index].to(device, non_blocking=True).long()
        lr = get_lr(step, total_steps, args.lr)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss = F.cross_entropy(segformer.logits_at_mask_size(model, images), masks, weight=class_weights,
                               ignore_index=IGNORE_INDEX)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"training loss is {loss.item()} at step {step + 1}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())
        step += 1
        if progress is not None:
            progress.update(len(index))
    return torch.stack(losses).mean().item(), step


@torch.no_grad()
def evaluate(model, split, class_weights, batch: int, device) -> dict:
    """Weighted loss and global per-class IoU over every pixel of ``split`` (255 ignored)."""
    model.eval()
    confusion = torch.zeros(len(CLASSES), len(CLASSES), dtype=torch.long, device=device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    weight_sum = torch.zeros((), dtype=torch.float64, device=device)
    for start in range(0, split.frames, batch):
        images = split.images[start:start + batch].to(device)
        masks = split.masks[start:start + batch].to(device).long()
        logits = segformer.logits_at_mask_size(model, images)
        # Summed, then divided by the summed weights once: the split's weighted mean, not a mean of means.
        loss_sum += F.cross_entropy(logits, masks, weight=class_weights, ignore_index=IGNORE_INDEX, reduction="sum")
        labelled = masks[masks != IGNORE_INDEX]
        weight_sum += class_weights[labelled].sum()
        confusion += metrics.confusion_matrix(logits.argmax(1), masks)
    return {"loss": (loss_sum / weight_sum).item(), **metrics.iou_summary(confusion.cpu())}


def library_versions() -> dict:
    import mlflow
    import transformers
    return {"version.python": platform.python_version(), "version.torch": torch.__version__,
            "version.transformers": transformers.__version__, "version.mlflow": mlflow.__version__}


def save_atomic(payload, path: Path):
    """Write, then rename, so a crash mid-write never leaves a truncated checkpoint behind."""
    partial = path.with_suffix(path.suffix + ".partial")
    torch.save(payload, partial)
    os.replace(partial, path)


def epoch_line(epoch, epochs, row, best):
    ious = "  ".join(f"{name} {row[f'val/iou_{name}']:.4f}" for name in CLASSES)
    return (f"epoch {epoch:3d}/{epochs}  train/loss {row['train/loss']:.4f}  val/loss {row['val/loss']:.4f}  "
            f"iou {ious}  miou {row['val/miou']:.4f}  lr {row['lr']:.2e}  {row['time/epoch_s']:.1f}s"
            + ("  *best" if best else ""))


def train(args, given: dict, run_id: str):
    """The whole run inside an MLflow run: set up, then per epoch train, evaluate, log, keep the best, maybe stop."""
    track.log_params(given)
    check_args(args)
    split_dir = Path(args.split).resolve()
    val_dir = resolve_val_split(args.val_split, split_dir)
    train_split = data.load_split(split_dir, args.frames)
    val_split = data.load_split(val_dir)
    dr = resolve_dr(args.dr, split_dir)
    variant = f"{'dr' if dr else 'nodr'}_{train_split.frames}"
    weights = data.class_weights(train_split.pixel_counts)
    shares = data.pixel_shares(train_split.pixel_counts)
    track.name_run(variant)
    track.set_tags({"regolith.kind": "train", "regolith.dr": str(dr).lower(), "regolith.variant": variant,
                    "regolith.split": split_dir.name, "regolith.dataset_digest": train_split.digest,
                    "regolith.frames": train_split.frames, "regolith.val_split": str(val_dir),
                    "regolith.val_digest": val_split.digest, "regolith.seed": args.seed})
    track.log_dataset(split_dir, train_split.digest, "training")
    track.log_dataset(val_dir, val_split.digest, "validation")

    device = pick_device()
    torch.manual_seed(args.seed)  # the fresh head's (or the whole random model's) initialization
    if args.pretrained.lower() == "none":
        print("pretrained=none: every weight starts random (no ImageNet encoder); record it as such")
        net = segformer.random_init()
    else:
        net, encoder_tensors = segformer.load_pretrained(args.pretrained)
        print(f"encoder: all {encoder_tensors} encoder tensors loaded from {args.pretrained}; fresh 3-class head")
    net.to(device)
    height, width = train_split.image_size
    track.log_params({
        "image_size": f"{height}x{width}", "val_image_size": "x".join(map(str, val_split.image_size)),
        "pretrained_id": segformer.pretrained_id(args.pretrained, net), "device": device.type,
        **library_versions(),
        **{f"class_weight.{name}": f"{w:.6f}" for name, w in zip(CLASSES, weights)},
        **{f"pixel_share.{name}": f"{s:.6f}" for name, s in zip(CLASSES, shares)},
    })
    print(f"{variant}: {train_split.frames} training frames from {split_dir} ({train_split.digest}), "
          f"{val_split.frames} validation frames from {val_dir} ({val_split.digest}), on {device.type}")
    print("class weights " + "  ".join(f"{n} {w:.3f} (share {s:.3f})" for n, w, s in zip(CLASSES, weights, shares)))

    class_weights = torch.tensor(weights, dtype=torch.float32, device=device)
    optimizer = torch.optim.AdamW(net.parameters(), lr=args.lr)
    steps_per_epoch = math.ceil(train_split.frames / args.batch)
    total_steps = args.epochs * steps_per_epoch
    order_rng = torch.Generator().manual_seed(args.seed)  # data order, independent of the model's RNG use

    # Local working copies, one folder per run id so no two runs ever share files.
    out_dir = Path(os.environ.get("REGOLITH_OUTPUT_DIR", "outputs")) / run_id
    out_dir.mkdir(parents=True, exist_ok=True)
    best_path, history_path = out_dir / "best.pt", out_dir / "metrics.jsonl"
    best, best_epoch, step, epoch = None, 0, 0, 0
    try:
        for epoch in range(1, args.epochs + 1):
            started = time.perf_counter()
            order = torch.randperm(train_split.frames, generator=order_rng)
            with tqdm(total=train_split.frames, desc=f"epoch {epoch}", unit="img", leave=False,
                      file=sys.stderr, disable=None) as progress:
                train_loss, step = train_epoch(net, train_split, class_weights, optimizer, step, total_steps,
                                               args, order, device, progress)
            val = evaluate(net, val_split, class_weights, args.batch, device)
            row = {"train/loss": train_loss, "val/loss": val["loss"],
                   **{f"val/iou_{name}": val[f"iou_{name}"] for name in CLASSES}, "val/miou": val["miou"],
                   "lr": get_lr(step - 1, total_steps, args.lr), "time/epoch_s": time.perf_counter() - started}
            track.log_metrics(row, step=epoch)
            with history_path.open("a") as history:
                history.write(json.dumps({"epoch": epoch, **row}) + "\n")
            improved = best is None or val["iou_rock"] > best["iou_rock"]  # strict: the earliest wins ties
            print(epoch_line(epoch, args.epochs, row, improved), flush=True)
            if improved:
                best, best_epoch = val, epoch
                save_atomic(segformer.checkpoint(net, epoch, val, vars(args), data.PREPROCESSING), best_path)
            elif epoch - best_epoch >= args.patience:
                print(f"early stop: no rock-IoU gain for {args.patience} epochs since epoch {best_epoch}")
                break
    finally:
        # Whatever happened, keep what was earned: the best checkpoint and the per-epoch history.
        track.log_artifacts([best_path, history_path])

    summary = {"variant": variant, "best_epoch": best_epoch, "stopped_epoch": epoch,
               "best": {k: best[k] for k in ("iou_regolith", "iou_rock", "iou_sky", "miou")},
               "class_weights": dict(zip(CLASSES, weights)), "pixel_shares": dict(zip(CLASSES, shares)),
               "frames": train_split.frames, "dataset_digest": train_split.digest,
               "val_frames": val_split.frames, "val_digest": val_split.digest}
    track.log_metrics({**{f"best/{k}": v for k, v in summary["best"].items()},
                       "best/epoch": best_epoch, "stopped_epoch": epoch})
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    track.log_artifacts([out_dir / "summary.json"])
    if args.register == "true":
        version = track.register_model(run_id, variant)
        print(f"registered {version} as models:/{track.MODEL_NAME}@{variant}")
    print(f"best rock-IoU {best['iou_rock']:.4f} at epoch {best_epoch} (miou {best['miou']:.4f}); "
          f"run {run_id}, artifacts best.pt, metrics.jsonl, summary.json")
    return summary


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    given = as_given(parser, argv)
    try:
        with track.run(args.run_name, args.experiment) as run_id:
            train(args, given, run_id)
    except (data.DataError, segformer.EncoderLoadError, track.ParamConflict, UsageError) as error:
        # The run is already marked FAILED with the error as a tag; say what is wrong, no traceback.
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
