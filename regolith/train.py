"""Fine-tune SegFormer-B0 on one rendered split and track the run in MLflow.

    mlflow run . -P split=/workspace/datasets/train_dr            # the MLproject's main entry point
    python -m regolith.train --split DIR [--frames N] [--run-name NAME] [--experiment NAME]

The recipe is the reference study's (shared/reference/03-training.txt): class-weighted
cross-entropy, AdamW with cosine decay to 1e-7, validation on the unseen-domain split
``test_photoreal``, and the checkpoint with the best validation rock-IoU kept as ``best.pt``.
``train()`` reads top to bottom: set up, then per epoch train, evaluate, log, keep the best,
maybe stop, then finish. The epoch itself is ``regolith.engine``'s (``train_epoch``,
``validate``), which DDP ranks and the benchmark call too; this module is the verb around it:
its parameters, what it records, its resumable state and its files.
"""

import argparse
import copy
import json
import math
import os
import re
import shlex
import signal
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm import tqdm

from regolith import (CLASSES, ROCK, Refused, alias, augment, data, engine, evaluate, figures, files,
                      model as segformer, names, photoset, provenance, readable, refusals, registry, results, state,
                      stopping, store, track)

PREVIEW_FRAMES = 4  # validation frames in the per-epoch image


class Parser(argparse.ArgumentParser):
    """argparse, whose refusal of a value (usage, then exit 2) also goes into the run ``mlflow run`` opened.

    ``mlflow run`` creates the run before this process starts and ends it FAILED when it exits
    non-zero; without this the reason would be on the console only, never in ``regolith.error``.
    """

    def error(self, message):
        if os.environ.get("RANK", "0") == "0":  # under torchrun, once
            track.record_error(f"{self.prog}: error: {message}")
        super().error(message)


def build_parser() -> argparse.ArgumentParser:
    """Flags are the kebab-case twins of the MLproject parameters, with the same defaults."""
    parser = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split", required=True, help="training split directory")
    parser.add_argument("--val-split", default="", help="validation split; '' means the sibling test_photoreal")
    parser.add_argument("--frames", type=int, default="0", help="use the first N frames (0: all)")
    parser.add_argument("--epochs", type=int, default="40", help="maximum epochs")
    parser.add_argument("--lr", type=float, default="6e-5", help="AdamW peak learning rate")
    parser.add_argument("--batch", type=int, default="8", help="batch size")
    parser.add_argument("--seed", type=int, default="0", help="seed for initialization and data order")
    parser.add_argument("--patience", type=int, default="8",
                        help="early stopping on validation rock-IoU after this many epochs without gain (0: never)")
    parser.add_argument("--augment", default="hflip",
                        help="training-frame augmentation, a comma-separated list of hflip (image and mask, p = 0.5), "
                             "gray (p = 0.5), photometric, noise, blur, or none (regolith.augment; ranges in README)")
    parser.add_argument("--weight-decay", type=float, default=f"{engine.WEIGHT_DECAY:g}", help="AdamW weight decay")
    parser.add_argument("--schedule", default="epoch", choices=["epoch", "step"],
                        help="cosine decay to 1e-7 stepped once per epoch (the original's) or every step")
    parser.add_argument("--pretrained", default="nvidia/mit-b0",
                        help="hub id or local directory of the encoder; 'none' means random init")
    parser.add_argument("--dr", default="auto", choices=["true", "false", "auto"],
                        help="whether the split is domain-randomized (auto: from its name)")
    parser.add_argument("--compile", default="auto", choices=["true", "false", "auto"],
                        help="torch.compile the model (auto: on for CUDA)")
    parser.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"],
                        help="autocast precision of training and validation (auto: bf16 on CUDA, fp32 on CPU)")
    parser.add_argument("--parent", default="", help="run id of a parent run (a sweep) to nest this run under")
    parser.add_argument("--register", default="true", choices=["true", "false"],
                        help="register best.pt in the Model Registry as regolith-segformer@<variant>")
    parser.add_argument("--out", default="", help="also write best.pt, metrics.jsonl and summary.json into this "
                                                   "folder (never over a finished result)")
    parser.add_argument("--real-images", default="",
                        help="a folder of real photographs (no masks) to predict after each validation pass: "
                             "real/rock_share_mean per epoch and a contact sheet in MLflow's image view")
    parser.add_argument("--epoch-images", default="true", choices=["true", "false"],
                        help="log image | truth | prediction of the 4 validation frames with the most rock each epoch")
    parser.add_argument("--run-name", default=None, help="MLflow run name (default: the variant, e.g. dr_750)")
    parser.add_argument("--experiment", default=None, help="MLflow experiment name when run directly")
    parser.add_argument("--resume", default=None, metavar="RUN_ID",
                        help="continue this run from its last finished epoch")
    return parser


def as_given(parser: argparse.ArgumentParser, argv) -> dict:
    """The MLproject parameters exactly as ``mlflow run`` logs them: the given text, shell-quoted.

    ``mlflow run`` logs ``lr`` as the text ``6e-5`` and an empty ``val_split`` as ``''``; logging
    ``str(6e-05)`` would be a conflicting re-log, so a direct run logs what ``mlflow run`` would have.
    """
    untyped = copy.deepcopy(parser)
    for action in untyped._actions:
        action.type = None  # keep the strings as typed (argparse also leaves string defaults alone)
    given = vars(untyped.parse_args(argv))
    return {key: shlex.quote(str(given[key])) for key in names.RUN_PARAMS}


def check_args(args, world: int = 1):
    for name in ("epochs", "batch"):
        if getattr(args, name) < 1:
            raise Refused(f"{name}={getattr(args, name)}: expected a positive integer")
    if args.patience < 0:
        raise Refused(f"patience={args.patience}: expected 0 (no early stopping) or a positive integer")
    if not args.weight_decay >= 0:
        raise Refused(f"weight_decay={args.weight_decay}: expected 0 or a positive number")
    if not args.lr > 0:
        raise Refused(f"lr={args.lr}: expected a positive learning rate")
    if not math.isfinite(args.lr):  # inf would pass the check above and fail later as a NaN loss
        raise Refused(f"lr={args.lr}: expected a finite learning rate")
    if args.frames < 0:
        raise Refused(f"frames={args.frames}: expected 0 (all) or a positive count")
    if not 0 <= args.seed < 2 ** 64:  # torch.manual_seed's range (it wraps negative seeds onto it)
        raise Refused(f"seed={args.seed}: expected an integer from 0 to 2**64 - 1")
    if args.pretrained.lower() != "none":
        segformer.check_pretrained(args.pretrained)
    augment.parse(args.augment)
    if world > 1 and (args.batch % world or args.batch < world):
        raise Refused(f"batch={args.batch}: under torchrun the global batch must split evenly over {world} ranks")


def resolve_dr(dr: str, split_dir: Path) -> bool:
    """true/false as given; auto reads the split's name: ``nodr`` means false, then ``dr`` means true."""
    if dr != "auto":
        return dr == "true"
    name = split_dir.name.lower()
    if re.search(r"(^|[^a-z])nodr($|[^a-z])", name):
        return False
    if re.search(r"(^|[^a-z])dr($|[^a-z])", name):
        return True
    raise Refused(f"dr=auto cannot tell from the split name {split_dir.name!r} whether it is domain-randomized "
                  f"(expected 'dr' or 'nodr' in the name); pass -P dr=true or -P dr=false")


def resolve_val_split(val_split: str, split_dir: Path) -> Path:
    return Path(val_split).resolve() if val_split else split_dir.parent / "test_photoreal"


# ---- set-up: data, model, what the store records -----------------------------------------------

def load_splits(args, run_id: str, saved: dict | None, log=track) -> tuple:
    """(training split, validation split), checked; a resumed run must find the frames it started on.

    Validation on the training frames themselves is allowed but said loudly (and tagged by ``run_record``).
    """
    split_dir = Path(args.split).resolve()
    train_split = data.load_split(split_dir, args.frames)
    val_split = data.load_split(resolve_val_split(args.val_split, split_dir))
    if saved and (saved["dataset_digest"], saved["val_digest"]) != (train_split.digest, val_split.digest):
        raise Refused(f"run {run_id}: the frames changed since it started (digest {saved['dataset_digest']} "
                      f"then, {train_split.digest} now); resume needs the same data")
    if val_is_train(train_split, val_split):
        log.warn(f"VALIDATION ON THE TRAINING SPLIT: {val_split.path} holds the training frames of {train_split.path} "
                 f"(digest {val_split.digest}); its scores say nothing about unseen frames. The run is tagged "
                 f"{names.VAL_IS_TRAIN}=true")
    return train_split, val_split


def val_is_train(train_split, val_split) -> bool:
    """Whether validation would score the frames it trains on: the same folder, or the same frames elsewhere."""
    return train_split.path.resolve() == val_split.path.resolve() or train_split.digest == val_split.digest


def build_model(args, saved: dict | None, say) -> tuple:
    """(model, what the encoder came from): the last epoch's state, a random init, or the pretrained encoder."""
    torch.manual_seed(args.seed)  # the fresh head's (or the whole random model's) initialization
    if saved:
        return segformer.model_from_checkpoint(saved), saved["pretrained_id"]
    if args.pretrained.lower() == "none":
        say("pretrained=none: every weight starts random (no ImageNet encoder); record it as such")
        net = segformer.random_init()
    else:
        net, encoder_tensors = segformer.load_pretrained(args.pretrained)
        say(f"encoder: all {encoder_tensors} encoder tensors loaded from {args.pretrained}; fresh 3-class head")
    return net, segformer.pretrained_id(args.pretrained, net)


def epoch_views(args, train_split, val_split) -> dict:
    """What the run looks at after each validation pass, besides validation: fixed frames, real photos."""
    views = {}
    if args.epoch_images == "true":
        # The frames with the most rock, ties by index: the same every epoch, chosen from the labels alone.
        rock = (val_split.masks == ROCK).flatten(1).sum(1).tolist()
        views["frames"] = sorted(range(val_split.frames), key=lambda i: (-rock[i], i))[:PREVIEW_FRAMES]
    if args.real_images:  # read and fitted once, at the training frames' size, as regolith.photos fits them
        views["real"] = photoset.prepare(args.real_images, max(train_split.image_size))
    return views


@torch.no_grad()
def look(net, val_split, views: dict, precision: str, device) -> tuple:
    """(metrics, pictures) of one epoch's views: the preview frames' predictions and the real photos' rock flood.

    Through the plain module in eval mode (not the compiled or DDP one: other shapes, rank 0 alone).
    """
    seen, pictures = {}, {}
    if "frames" in views:
        images, truths = val_split.images[views["frames"]], val_split.masks[views["frames"]]
        predictions = segformer.predict(net, images, precision, device)
        pictures[names.IMAGE_PREDICTIONS] = figures.prediction_strip(
            images.permute(0, 2, 3, 1).cpu().numpy(), truths.cpu().numpy(), predictions.numpy())
    if "real" in views:
        real = views["real"]
        predictions = segformer.predict(net, real["images"], precision, device)
        rock = [photoset.class_shares(p, valid)[CLASSES[ROCK]] for p, valid in zip(predictions, real["valid"])]
        seen[names.REAL_ROCK_SHARE] = sum(rock) / len(rock)
        pictures[names.IMAGE_REAL] = figures.flood_sheet(real["images"], real["valid"], predictions, rock)
    return seen, pictures


def watch(log, net, val_split, views: dict, precision: str, device, epoch: int) -> dict:
    """Look at the epoch's views and log their pictures at step ``epoch``; returns what it saw and what that cost."""
    if not views:
        return {}
    started = time.perf_counter()
    seen, pictures = look(net, val_split, views, precision, device)
    log.log_images(pictures, step=epoch)
    return {**seen, names.EPOCH_IMAGES_SECONDS: time.perf_counter() - started}


def run_record(args, dr: bool, train_split, val_split, net, source: str, device, compiled: bool,
               precision: str, views: dict) -> dict:
    """What the store records when the run starts (name, params, tags, dataset inputs) and the line that says it."""
    encoder, augmentation = segformer.encoder_size(net.config), augment.canonical(args.augment)
    variant = names.variant(dr, train_split.frames, augmentation, encoder)
    weights, shares = data.class_weights(train_split.pixel_counts), data.pixel_shares(train_split.pixel_counts)
    size = segformer.footprint(net, train_split.image_size)
    return {
        "name": variant,
        "line": (f"{variant}: {train_split.frames} training frames from {train_split.path} ({train_split.digest}), "
                 f"{val_split.frames} validation frames from {val_split.path} ({val_split.digest}), on "
                 f"{device.type}\nclass weights " + "  ".join(
                     f"{n} {w:.3f} (share {s:.3f})" for n, w, s in zip(CLASSES, weights, shares))),
        "params": {
            names.IMAGE_SIZE: "x".join(map(str, train_split.image_size)),
            names.VAL_IMAGE_SIZE: "x".join(map(str, val_split.image_size)),
            names.PRETRAINED_ID: source, **provenance.library_versions(), **augment.recorded(args.augment),
            names.MODEL_PARAMETERS: size["parameters"], names.ENCODER_PARAMETERS: size["encoder_parameters"],
            names.FLOPS: size["flops"],
            **{f"{names.CLASS_WEIGHT}.{name}": f"{w:.6f}" for name, w in zip(CLASSES, weights)},
            **{f"{names.PIXEL_SHARE}.{name}": f"{s:.6f}" for name, s in zip(CLASSES, shares)}},
        "tags": {
            names.KIND: names.KIND_TRAIN, names.DR: str(dr).lower(), names.VARIANT: variant,
            names.AUGMENT: augmentation, names.ENCODER: encoder,
            names.SPLIT: train_split.path.name, names.DATASET_DIGEST: train_split.digest,
            names.FRAMES: train_split.frames, names.VAL_SPLIT: str(val_split.path),
            names.VAL_DIGEST: val_split.digest, names.SEED: args.seed, names.DEVICE: engine.device_name(device),
            names.VAL_IS_TRAIN: str(val_is_train(train_split, val_split)).lower(),
            names.COMPILED: str(compiled).lower(), names.PRECISION: precision,
            names.ATTENTION: net.config._attn_implementation or "eager", names.GIT_DIRTY: provenance.git_dirty(),
            names.CPU_CAPABILITY: provenance.cpu_capability(),
            **({names.PARENT: args.parent} if args.parent else {}),
            **({names.REAL_DIGEST: views["real"]["digest"]} if "real" in views else {})},
        "datasets": [(train_split.path, train_split.digest, names.CONTEXT_TRAINING),
                     (val_split.path, val_split.digest, names.CONTEXT_VALIDATION),
                     *([(views["real"]["folder"], views["real"]["digest"], names.CONTEXT_REAL)]
                       if "real" in views else [])],
    }


# ---- the run's files: state, history, best checkpoint ------------------------------------------

def write_history(path: Path, history: list):
    """metrics.jsonl, one line per epoch, rewritten whole from the state so it never holds an epoch twice."""
    files.write_atomic(path, "".join(json.dumps(row) + "\n" for row in history).encode())


# ---- per epoch: the row, the best, the line ------------------------------------------------------

def stop_early(progress: dict, patience: int) -> bool:
    """``patience`` epochs without a rock-IoU gain; patience 0 never stops early (the original's switch)."""
    return patience > 0 and progress["epochs_without_gain"] >= patience


def advance(progress: dict, row: dict, val: dict, step: int) -> tuple:
    """(the progress after this epoch, whether it is the best so far): strictly greater, so the earliest wins ties."""
    best = progress["best"]
    improved = best is None or val[names.HEADLINE] > best[names.HEADLINE]
    return {**progress, "epoch": row["epoch"], "step": step, "history": progress["history"] + [row],
            "best": val if improved else best, "best_epoch": row["epoch"] if improved else progress["best_epoch"],
            "epochs_without_gain": 0 if improved else progress["epochs_without_gain"] + 1}, improved


PROGRESS = "REGOLITH_PROGRESS"  # bar: a bar over batches even through a pipe (a sweep on a terminal relays it)


def progress_off(rank: int, environ=os.environ) -> bool | None:
    """tqdm's ``disable``: the bar over batches on a terminal (None: tqdm asks isatty), off on other ranks.

    Off a terminal (CI logs, a file) there is no bar, only the line per epoch. ``REGOLITH_PROGRESS=bar``
    forces it on, as ``regolith.sweep`` sets for its children when it is itself on a terminal and relays
    their output; ``off`` forces it off.
    """
    if rank != 0 or environ.get(PROGRESS) == "off":
        return True
    return False if environ.get(PROGRESS) == "bar" else None


def epoch_line(epochs: int, row: dict, best: bool) -> str:
    ious = "  ".join(f"{name} {row[names.key(names.VAL, f'iou_{name}')]:.4f}" for name in CLASSES)
    return (f"epoch {row['epoch']:3d}/{epochs}  train/loss {row[names.key(names.TRAIN, names.LOSS)]:.4f}  "
            f"val/loss {row[names.key(names.VAL, names.LOSS)]:.4f}  iou {ious}  "
            f"miou {row[names.key(names.VAL, 'miou')]:.4f}  lr {row[names.LR]:.2e}  "
            f"{row[names.EPOCH_SECONDS]:.1f}s"
            + (f"  real rock {row[names.REAL_ROCK_SHARE]:.1%}" if names.REAL_ROCK_SHARE in row else "")
            + ("  *best" if best else ""))


def final_metrics(summary: dict, progress: dict) -> dict:
    """What the store records when the run finishes: the best epoch's scores (and real rock share), the best
    epoch, the last epoch."""
    best_row = progress["history"][progress["best_epoch"] - 1]
    return {**names.prefixed(names.BEST, summary["best"]), names.BEST_EPOCH: summary["best_epoch"],
            names.STOPPED_EPOCH: summary["stopped_epoch"],
            **({names.BEST_REAL_ROCK_SHARE: best_row[names.REAL_ROCK_SHARE]} if names.REAL_ROCK_SHARE in best_row
               else {})}


def run_summary(record: dict, progress: dict, args, train_split, val_split) -> dict:
    """summary.json: the best epoch's scores, where the run stopped, and the data it saw.

    It also carries the original study's keys (epochs_requested ... wall_time_s), so the study's
    own result scripts read our runs; ``wall_time_s`` is the seconds its epochs took, summed over resumes.
    """
    weights, shares = data.class_weights(train_split.pixel_counts), data.pixel_shares(train_split.pixel_counts)
    best = progress["best"]
    return {"variant": record["name"], "best_epoch": progress["best_epoch"], "stopped_epoch": progress["epoch"],
            "best": {score: best[score] for score in (*names.SCORES, *names.STRICT_SCORES)},
            "class_weights": dict(zip(CLASSES, weights)), "pixel_shares": dict(zip(CLASSES, shares)),
            "frames": train_split.frames, "dataset_digest": train_split.digest,
            "val_frames": val_split.frames, "val_digest": val_split.digest,
            # the original's keys
            "epochs_requested": args.epochs, "epochs_run": progress["epoch"],
            "best_val_rock_iou": best[names.HEADLINE], "best_val_miou": best["miou"],
            "best_val_class_iou": {name: best[f"iou_{name}"] for name in CLASSES},
            "wall_time_s": sum(row[names.EPOCH_SECONDS] for row in progress["history"]),
            "train_split": str(train_split.path), "val_split": str(val_split.path), "seed": args.seed,
            "lr": args.lr, "batch": args.batch, "patience": args.patience}


# ---- the run ------------------------------------------------------------------------------------

def save_epoch(out: Path, net, optimizer, data_rng, progress: dict, args, precision: str, improved: bool):
    """The epoch's files: best.pt on a gain, then state.pt and metrics.jsonl; a stop lands before or after, not between."""
    with stopping.shielded():
        if improved:
            files.save_atomic(segformer.checkpoint(net, progress["epoch"], progress["best"], vars(args),
                                                   segformer.PREPROCESSING, precision), out / names.CHECKPOINT)
        # State first, then the store: a crash in between is repaired by replaying the state's history.
        state.save(out / files.STATE_FILE, net, optimizer, data_rng, progress, args)
        write_history(out / names.HISTORY, progress["history"])


def train(args, run_id: str, resume: bool = False, rank: int = 0, world: int = 1) -> dict:
    """The whole run inside an MLflow run: set up, then per epoch train, evaluate, log, keep the best, maybe stop.

    Under torchrun every rank trains on its share of each global batch; only rank 0 logs,
    prints and writes files, so the run is recorded once.
    """
    log, say = (track, print) if rank == 0 else (track.silent, lambda *_, **__: None)
    check_out_apart(args)  # before the claim, which writes into the folder
    with results.claimed_out(args.out, run_id, rank):
        run = set_up(args, run_id, resume, rank, world, log, say)
        start(log, say, run["record"], run["progress"], run["out"], run_id, resume, rank)
        try:
            while run["progress"]["epoch"] < args.epochs and not stop_early(run["progress"], args.patience):
                run["progress"] = one_epoch(run, args, log, say, rank)
            if stop_early(run["progress"], args.patience):
                say(f"early stop: no rock-IoU gain for {args.patience} epochs since epoch "
                    f"{run['progress']['best_epoch']}")
        finally:
            # Whatever happened, keep what was earned: every finished epoch's metrics (a stop can land
            # between saving an epoch and sending it), the best checkpoint and the per-epoch history.
            log.keep(run["progress"]["history"], [run["out"] / names.CHECKPOINT, run["out"] / names.HISTORY])
        return finish(log, say, run["record"], run["progress"], args, run["out"], run_id, run["train_split"],
                      run["val_split"], rank)


def set_up(args, run_id: str, resume: bool, rank: int, world: int, log, say) -> dict:
    """Everything the epochs need, checked and loaded in order: nothing is read before it can all be written."""
    out = files.output_dir(run_id)
    check_before_reading(args, out, rank, world)
    saved = state.load(out / files.STATE_FILE, run_id, args) if resume else None
    train_split, val_split = load_splits(args, run_id, saved, log)
    dr = resolve_dr(args.dr, train_split.path)
    device = engine.pick_device()
    precision = segformer.resolve_precision(args.precision, device)
    compiled = engine.resolve_compile(args.compile, device)
    net, source = build_model(args, saved, say)
    views = epoch_views(args, train_split, val_split) if rank == 0 else {}
    record = run_record(args, dr, train_split, val_split, net, source, device, compiled, precision, views)
    forward = engine.prepare(net.to(device), device, compiled, world)
    for split in (train_split, val_split):
        engine.keep_on(split, device)
    class_weights = torch.tensor(data.class_weights(train_split.pixel_counts), dtype=torch.float32, device=device)
    optimizer = engine.make_optimizer(net, args.lr, args.weight_decay, device)
    data_rng = torch.Generator().manual_seed(args.seed)  # data order and flips, independent of the model's RNG use
    progress = state.restore(saved, optimizer, data_rng) if saved else state.new_progress(train_split, val_split, source)
    # Ranks need equal shares of every batch, so the ragged last batch is dropped under torchrun too.
    drop_last = compiled or world > 1
    lr_at = engine.lr_schedule(args.schedule, args.lr, args.epochs,
                               len(engine.batches(torch.arange(train_split.frames), args.batch, drop_last)))
    shared = {"batch": args.batch, "class_weights": class_weights, "precision": precision, "device": device,
              "rank": rank, "world": world}  # what the training epoch and the validation pass share
    return {"out": out, "train_split": train_split, "val_split": val_split, "device": device, "precision": precision,
            "compiled": compiled, "net": net, "forward": forward, "views": views, "record": record,
            "optimizer": optimizer, "data_rng": data_rng, "progress": progress, "drop_last": drop_last,
            "lr_at": lr_at, "shared": shared}


def one_epoch(run: dict, args, log, say, rank: int) -> dict:
    """Train, validate, look, keep the best, save, log: returns the progress after the epoch."""
    started, epoch, progress = time.perf_counter(), run["progress"]["epoch"] + 1, run["progress"]
    order = torch.randperm(run["train_split"].frames, generator=run["data_rng"])
    draws = augment.draw(args.augment, run["train_split"].frames, run["data_rng"])
    with tqdm(total=run["train_split"].frames, desc=f"epoch {epoch}", unit="img", leave=False, file=sys.stderr,
              disable=progress_off(rank)) as bar:
        train_stats, step = engine.train_epoch(
            run["forward"], run["train_split"], order, optimizer=run["optimizer"], step=progress["step"],
            epoch=epoch, lr_at=run["lr_at"], augmentation=draws, drop_last=run["drop_last"], progress=bar, **run["shared"])
    val = engine.validate(run["forward"], run["val_split"], static=run["compiled"], **run["shared"])
    seconds = time.perf_counter() - started
    seen = {**watch(log, run["net"], run["val_split"], run["views"], run["precision"], run["device"], epoch),
            **engine.peak_memory(run["device"])}
    # The rate of the epoch's last step: with the per-epoch schedule, the rate the whole epoch trained at.
    row = engine.epoch_row(epoch, train_stats, val, run["lr_at"](step - 1), seconds, seen)
    progress, improved = advance(progress, row, val, step)
    if rank == 0:
        save_epoch(run["out"], run["net"], run["optimizer"], run["data_rng"], progress, args, run["precision"],
                   improved)
    say(epoch_line(args.epochs, row, improved), flush=True)
    log.send_epochs(progress["history"])
    return progress


def check_out_apart(args):
    """``-P out=DIR`` is written into; the folders the run reads never are, so DIR may not be or lie inside one."""
    if not args.out:
        return
    out = Path(args.out).resolve()
    split = Path(args.split).resolve()
    for name, folder in (("real_images", args.real_images and Path(args.real_images).resolve()), ("split", split),
                         ("val_split", resolve_val_split(args.val_split, split))):
        if folder and (out == folder or folder in out.parents):
            raise Refused(f"out={args.out}: is {'' if out == folder else 'inside '}{name}={folder}, which the run "
                          f"reads and never writes; give a folder of its own")


def check_output_dir(out: Path):
    """Create the run's folder and probe it: an unwritable output root fails before any data is read."""
    root = os.environ.get(files.OUTPUT_DIR)
    where = f"{files.OUTPUT_DIR}={root}" if root else f"outputs/ ({files.OUTPUT_DIR} unset)"
    files.check_writable(out, where, f"point {files.OUTPUT_DIR} at a writable directory")


def check_before_reading(args, out: Path, rank: int, world: int):
    """Everything that can be refused before any data is read: the parameters and where the run will write."""
    check_args(args, world)
    if rank == 0:  # the only rank that writes files
        check_output_dir(out)
        store.check_artifact_store()


def start(log, say, record: dict, progress: dict, out: Path, run_id: str, resume: bool, rank: int):
    """Record the run's start once: params, tags, datasets, environment.txt; say what it trains on."""
    if rank == 0:
        files.write_atomic(out / names.ENVIRONMENT, provenance.environment().encode())
    # A resumed run may hold epochs the store never got (a crash between saving and sending): sent first.
    log.start(record["name"], record["params"], record["tags"], [] if resume else record["datasets"],
              [] if resume else [out / names.ENVIRONMENT], progress["history"])
    if resume:
        say(f"resuming run {run_id} after epoch {progress['epoch']} from {out / files.STATE_FILE}")
    say(record["line"])


def finish(log, say, record: dict, progress: dict, args, out: Path, run_id: str, train_split, val_split,
           rank: int) -> dict:
    """Record the run's end once: summary.json (and -P out=DIR), the final metrics, the MLflow model, the registry;
    returns the summary."""
    summary = run_summary(record, progress, args, train_split, val_split)
    if rank == 0:
        files.write_atomic(out / names.SUMMARY, (json.dumps(summary, indent=2) + "\n").encode())
    # The store first: a result in -P out=DIR, a FINISHED run and a registered version all need best.pt there.
    log.finish(progress["history"], final_metrics(summary, progress),
               [out / names.CHECKPOINT, out / names.HISTORY, out / names.SUMMARY])
    if rank == 0:
        results.copy_results(out, args.out, run_id)
        # The best epoch's checkpoint as an MLflow model, linked to that epoch's metrics; fitted photos take
        # the training frames' long side, as regolith.photos fits them.
        started = time.perf_counter()
        model_uri = registry.log_model(out / names.CHECKPOINT, max(train_split.image_size), val_split.images[0],
                                  summary["best_epoch"])
        say(f"logged {names.CHECKPOINT} as the MLflow model {model_uri} in {time.perf_counter() - started:.1f}s")
        if args.register == "true":
            register(say, record["name"], run_id, model_uri)
    say(f"best rock-IoU {summary['best']['iou_rock']:.4f} at epoch {summary['best_epoch']} "
        f"(miou {summary['best']['miou']:.4f}); run {run_id}, artifacts {names.CHECKPOINT}, {names.HISTORY}, "
        f"{names.SUMMARY}")
    if rank == 0:
        for line in next_steps(run_id, args.real_images):
            say(line)
    return summary


def verify_with_photos(run_id: str, real_images: str):
    """After a run that watched real photos, the fresh verification pass with its operating curve on them.

    What ``python -m regolith.evaluate --run RUN_ID`` would record (``verify/``, the curve's CSV, JSON,
    figure and metrics), so a run started with ``real_images`` needs no separate step. The run is
    FINISHED and registered by now: a failure here is the verification's, said as such, and leaves
    the run as it is.
    """
    print(f"verifying {names.CHECKPOINT} by a fresh pass, with the operating curve on {real_images}", flush=True)
    try:
        summary = evaluate.evaluate(evaluate.build_parser().parse_args(["--run", run_id, "--images", real_images]))
    except Refused as error:  # not into the run: it FINISHED, and its regolith.error would say otherwise
        print(f"error: run {run_id} FINISHED, but its verification pass failed: {readable(str(error))}; run "
              f"python -m regolith.evaluate --run {run_id} --images {real_images} again", file=sys.stderr)
        sys.exit(2)
    except stopping.Interrupted as stop:  # the run is FINISHED: only this pass was cut short
        print(f"{stop}: the verification pass of run {run_id} stopped (the run itself FINISHED); run python -m "
              f"regolith.evaluate --run {run_id} --images {real_images} again", file=sys.stderr)
        sys.exit(143)
    if summary["check"] == "fail":
        print(f"error: run {run_id}: {evaluate.CHECK_FAILED}", file=sys.stderr)
        sys.exit(1)


def next_steps(run_id: str, real_images: str) -> list:
    """What a user does after a run: where it is in the UI, and the verbs that act on it, by its id."""
    command = store.ui_command()
    photos = real_images or "PHOTOS_DIR"
    return [f"see it:  {store.run_url(run_id)}" + (f"   (serve the UI with: {command})" if command else ""),
            f"next:    python -m regolith.evaluate --run {run_id}          # verify best.pt by a fresh pass",
            f"         python -m regolith.photos --run {run_id} --images {photos}",
            f"         python -m regolith.pull {run_id} --out {run_id[:8]}-model/"]


def register(say, variant: str, run_id: str, model_uri: str) -> tuple:
    """The run's MLflow model as a new version of the registered model; ``@variant`` moves to it only by
    ``alias.stays``' rule.

    Returns (the version's URI, why the alias stayed or None)."""
    name = names.alias_name(variant)
    stays = alias.stays(store.alias_holder(names.MODEL_NAME, name), store.read_run(run_id), name)
    version = registry.register_model(run_id, name, move_alias=stays is None, model_uri=model_uri)
    say(f"registered {version}; {stays}" if stays else f"registered {version} as models:/{names.MODEL_NAME}@{name}")
    return version, stays


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    rank, world = engine.distributed()
    # SIGTERM (a preempted job, `docker stop`) and Ctrl-C end the run as KILLED, keeping the last epoch.
    previous = {sig: signal.signal(sig, stopping.stop_handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    stopping.reset_stop()
    try:
        with refusals():  # the run is already marked FAILED with the error as a tag; say what is wrong, no traceback
            if rank == 0:
                store.check_reachable()
                store.check_experiment_open(args.experiment)
                with track.run(args.run_name, args.experiment, resume=args.resume,
                               params=as_given(parser, argv)) as (run_id, resume):
                    engine.share((run_id, resume), world)
                    train(args, run_id, resume, rank, world)
                if args.real_images:
                    verify_with_photos(run_id, args.real_images)
            else:
                run_id, resume = engine.share(None, world)
                with track.node_system_metrics(run_id, resume):  # each other node's system/node_N/ metrics
                    train(args, run_id, resume, rank, world)
    except stopping.Interrupted as stop:
        print(f"{stop}: run ended as KILLED; resume it with --resume <run id>", file=sys.stderr)
        sys.exit(143)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
