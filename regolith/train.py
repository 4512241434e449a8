"""Fine-tune SegFormer-B0 on one rendered split and track the run in MLflow.

    mlflow run . -P split=/workspace/datasets/train_dr            # the MLproject's main entry point
    python -m regolith.train --split DIR [--frames N] [--run-name NAME] [--experiment NAME]

The recipe is the reference study's (shared/reference/03-training.txt): class-weighted
cross-entropy, AdamW with cosine decay to 1e-7, validation on the unseen-domain split
``test_photoreal``, and the checkpoint with the best validation rock-IoU kept as ``best.pt``.
``train()`` reads top to bottom: set up, then per epoch train, evaluate, log, keep the best,
maybe stop, then finish. ``train_epoch`` and ``validate`` are the one engine: training, DDP
ranks and the benchmark (benchmarks/bench.py) all call them.
"""

import argparse
import copy
import errno
import io
import json
import math
import os
import platform
import re
import shlex
import signal
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from regolith import (CLASSES, IGNORE_INDEX, ROCK, Refused, data, figures, metrics, model as segformer, names, photos,
                      refusals, track)

MIN_LR = 1e-7
STATE_FILE = "state.pt"
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
    parser.add_argument("--augment", default="hflip", choices=["hflip", "none"],
                        help="training-frame augmentation: hflip flips image and mask together with p = 0.5")
    parser.add_argument("--weight-decay", type=float, default="1e-4", help="AdamW weight decay")
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


# The MLproject parameters: what mlflow run logs itself, and what a direct run logs the same way.
RUN_PARAMS = ("split", "val_split", "frames", "epochs", "lr", "batch", "seed", "patience", "augment",
              "weight_decay", "schedule", "pretrained", "dr", "compile", "precision", "parent", "register", "out",
              "real_images", "epoch_images")
# What a run only looks at or writes elsewhere, not what it computes: the resumable state leaves
# them out (the store still refuses a resume that gives one another value than its params record).
OBSERVING = ("register", "parent", "out", "real_images", "epoch_images")
# What a state.pt written before a parameter existed ran with: the code of that time's behaviour.
EARLIER_DEFAULTS = {"precision": "auto", "augment": "none", "weight_decay": 0.01, "schedule": "step"}


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


def get_lr(step: int, total_steps: int, peak_lr: float) -> float:
    """Cosine decay per step from ``peak_lr`` to 1e-7 over the whole run (epochs x steps per epoch)."""
    progress = min(step / max(total_steps, 1), 1.0)
    return MIN_LR + 0.5 * (peak_lr - MIN_LR) * (1 + math.cos(math.pi * progress))


def epoch_lr(epoch: int, epochs: int, peak_lr: float) -> float:
    """The original's per-epoch cosine (``CosineAnnealingLR(T_max=epochs, eta_min=1e-7)`` stepped once an epoch):
    epoch k, counted from 1, trains at the cosine value of (k - 1) / epochs."""
    return get_lr(epoch - 1, epochs, peak_lr)


def lr_schedule(schedule: str, peak_lr: float, epochs: int, steps_per_epoch: int):
    """The learning rate as a pure function of the step, so the step is the whole schedule state on resume."""
    if schedule == "epoch":
        return lambda step: epoch_lr(step // steps_per_epoch + 1, epochs, peak_lr)
    return lambda step: get_lr(step, epochs * steps_per_epoch, peak_lr)


# ---- the device and the module the loop calls -------------------------------------------------

def pick_device() -> torch.device:
    if not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))  # one GPU per torchrun rank


def device_name(device: torch.device) -> str:
    return f"cuda:{torch.cuda.get_device_name(device)}" if device.type == "cuda" else "cpu"


def resolve_compile(compile_model: str, device: torch.device) -> bool:
    """true/false as given; auto compiles on CUDA only (on the CPU the compile costs more than it saves)."""
    return compile_model == "true" or (compile_model == "auto" and device.type == "cuda")


def prepare(net, device: torch.device, compile_model: bool, world: int = 1):
    """The module the loop calls: channels_last on CUDA, DDP under torchrun, torch.compile'd when asked.

    ``net`` itself stays unwrapped, so checkpoints keep the plain state-dict names.
    """
    module = net
    if device.type == "cuda":
        net.to(memory_format=torch.channels_last)
    if world > 1:
        if device.type == "cuda":  # one set of batch statistics over the global batch, as in one process
            net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(net)
        module = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    if not compile_model:
        return module
    first_forward(net, device)
    return torch.compile(module)


def first_forward(net, device: torch.device):
    """One eager forward on a blank frame, so that torch.compile sees the whole model as one graph.

    transformers installs SegFormer's output-capturing hooks on the model's first forward, under a
    threading lock that dynamo cannot trace. Compiled cold, the model splits there: 7 graph breaks
    and 19 compiled frames on a tiny SegFormer, against one graph per mode (train, eval) once the hooks
    exist. Eval mode under no_grad draws no dropout and updates no BatchNorm statistics, so
    training is unchanged by it.
    """
    mode = net.training
    net.eval()
    with torch.no_grad():
        net(pixel_values=torch.zeros(1, 3, 64, 64, device=device))
    net.train(mode)


def keep_on(split, device: torch.device, budget: float = 0.5):
    """Move a decoded split to the GPU when it fits in ``budget`` of free memory: no copy per step then."""
    if device.type != "cuda":
        return
    size = split.images.nbytes + split.masks.nbytes
    if size < budget * torch.cuda.mem_get_info(device)[0]:
        split.images, split.masks = split.images.to(device), split.masks.to(device)
    else:
        split.images, split.masks = split.images.pin_memory(), split.masks.pin_memory()


def make_optimizer(net, lr: float, weight_decay: float, device: torch.device):
    """AdamW; fused on CUDA: one kernel for all parameters instead of several per tensor."""
    return torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay, fused=device.type == "cuda")


# ---- the engine: one training epoch, one validation pass ---------------------------------------

def batches(order: torch.Tensor, batch: int, drop_last: bool) -> list:
    """Index tensors of each step; ``drop_last`` keeps shapes static for torch.compile."""
    stop = len(order) - len(order) % batch if drop_last and len(order) >= batch else len(order)
    return [order[start:start + batch] for start in range(0, stop, batch)]


def weight_per_label(class_weights: torch.Tensor) -> torch.Tensor:
    """Class weight per label value, 0 for the ignore label: summed weights without boolean indexing."""
    label_weight = torch.zeros(256, dtype=torch.float64, device=class_weights.device)
    label_weight[:len(CLASSES)] = class_weights.double()
    return label_weight


def draw_flips(augment: str, frames: int, generator: torch.Generator) -> torch.Tensor | None:
    """Which positions of an epoch's frame order flip horizontally (p = 0.5), or None without augmentation.

    Drawn from the run's data generator, which state.pt saves, so a resumed run flips as an unbroken one.
    """
    return torch.rand(frames, generator=generator) < 0.5 if augment == "hflip" else None


def hflip(images: torch.Tensor, masks: torch.Tensor, flip: torch.Tensor) -> tuple:
    """Flip image and mask together where ``flip`` (one bool per frame) says so; on the device, no host sync."""
    return (torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images),
            torch.where(flip.view(-1, 1, 1), masks.flip(-1), masks))


def train_epoch(model, split, order: torch.Tensor, *, batch: int, class_weights: torch.Tensor, optimizer,
                lr_at, step: int, precision: str, device: torch.device, flips: torch.Tensor | None = None,
                epoch: int = 1, drop_last: bool = False, rank: int = 0, world: int = 1, progress=None) -> tuple:
    """One pass over the training frames in ``order``: returns (statistics, the next step).

    The statistics are keyed as logged under ``train/``: the mean batch loss, and rock-IoU and
    mIoU of the training batches' own predictions (a device confusion matrix, no extra pass).
    ``lr_at`` maps a step to its learning rate: the schedule is a pure function of the step.
    ``flips`` (one bool per position of ``order``) flips those frames with their masks. Losses
    stay on the device until the epoch ends (no host sync per step); a NaN or inf loss is then
    refused with its epoch and step, before anything of that epoch is kept. Under torchrun each
    rank takes its share of every global batch, and the loss is normalized by the whole batch's
    summed class weights, so DDP's gradient average equals the gradient of the single-process loss.
    """
    model.train()
    losses = []
    confusion = torch.zeros(len(CLASSES) + 1, len(CLASSES), dtype=torch.long, device=device)
    label_weight = weight_per_label(class_weights)
    # The order and the flips go where the frames are, once an epoch: no index crosses to the GPU per step.
    order = order.to(split.images.device)
    flips = flips.to(split.images.device) if flips is not None else None
    for positions in batches(torch.arange(len(order), device=order.device), batch, drop_last):
        positions = positions.chunk(world)[rank] if world > 1 else positions
        index = order[positions]
        images = split.images[index].to(device, non_blocking=True)
        masks = split.masks[index].to(device, non_blocking=True).long()
        if flips is not None:
            images, masks = hflip(images, masks, flips[positions].to(device, non_blocking=True))
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        logits = segformer.logits_at_mask_size(model, images, precision)
        if world == 1:
            loss = F.cross_entropy(logits, masks, weight=class_weights, ignore_index=IGNORE_INDEX)
            batch_loss = loss.detach()
        else:
            weight_sum = label_weight[masks].sum().float()
            dist.all_reduce(weight_sum)
            loss = F.cross_entropy(logits, masks, weight=class_weights, ignore_index=IGNORE_INDEX,
                                   reduction="sum") * world / weight_sum
            batch_loss = loss.detach() / world
            dist.all_reduce(batch_loss)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(batch_loss)
        confusion += metrics.confusion_matrix(logits.detach().argmax(1), masks)
        step += 1
        if progress is not None:
            progress.update(len(index) * world)
    losses = torch.stack(losses)
    finite = torch.isfinite(losses)
    if not finite.all():
        first = int((~finite).nonzero()[0])
        raise Refused(f"training loss is {losses[first].item()} in epoch {epoch} at step "
                      f"{step - len(losses) + first + 1} (batch {first + 1} of the epoch); "
                      f"lower lr or check the encoder and the data")
    if world > 1:
        dist.all_reduce(confusion)
    scores = metrics.iou_summary(confusion.cpu())
    return {names.LOSS: losses.mean().item(), **{score: scores[score] for score in names.TRAIN_SCORES}}, step


@torch.no_grad()
def validate(model, split, *, batch: int, class_weights: torch.Tensor, precision: str, device: torch.device,
             static: bool = False, rank: int = 0, world: int = 1) -> dict:
    """Weighted loss and global per-class IoU over every pixel of ``split``, keyed as logged under ``val/``.

    IoU by the standard rule (255 ignored) and by the original study's (``names.STRICT_SCORES``).

    Everything accumulates on the device; the only host sync is the final ``.item()``. With
    ``static``, the last batch is padded with ignored pixels so every batch has one shape.
    Under torchrun each rank evaluates a contiguous share and the sums are all-reduced.
    """
    model.eval()
    confusion = torch.zeros(len(CLASSES) + 1, len(CLASSES), dtype=torch.long, device=device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    weight_sum = torch.zeros((), dtype=torch.float64, device=device)
    label_weight = weight_per_label(class_weights)
    per_rank = -(-split.frames // world)  # contiguous shares, so batches are slices
    first, last = min(rank * per_rank, split.frames), min((rank + 1) * per_rank, split.frames)
    for start in range(first, last, batch):
        images = split.images[start:min(start + batch, last)].to(device, non_blocking=True)
        masks = split.masks[start:min(start + batch, last)].to(device, non_blocking=True).long()
        real = len(images)  # the padding below is not the split's: it stays out of the confusion matrix
        if static and real < batch:
            pad = batch - len(images)
            images = torch.cat([images, images.new_zeros((pad, *images.shape[1:]))])
            masks = torch.cat([masks, masks.new_full((pad, *masks.shape[1:]), IGNORE_INDEX)])
        logits = segformer.logits_at_mask_size(model, images, precision)
        # Summed, then divided by the summed weights once: the split's weighted mean, not a mean of means.
        loss_sum += F.cross_entropy(logits, masks, weight=class_weights, ignore_index=IGNORE_INDEX, reduction="sum")
        weight_sum += label_weight[masks].sum()
        confusion += metrics.confusion_matrix(logits[:real].argmax(1), masks[:real])
    if world > 1:
        for total in (confusion, loss_sum, weight_sum):
            dist.all_reduce(total)
    return {names.LOSS: (loss_sum / weight_sum).item(), **metrics.iou_summary(confusion.cpu())}


# ---- set-up: data, model, what the store records -----------------------------------------------

def load_splits(args, run_id: str, state: dict | None, log=track) -> tuple:
    """(training split, validation split), checked; a resumed run must find the frames it started on.

    Validation on the training frames themselves is allowed but said loudly (and tagged by ``run_record``).
    """
    split_dir = Path(args.split).resolve()
    train_split = data.load_split(split_dir, args.frames)
    val_split = data.load_split(resolve_val_split(args.val_split, split_dir))
    if state and (state["dataset_digest"], state["val_digest"]) != (train_split.digest, val_split.digest):
        raise Refused(f"run {run_id}: the frames changed since it started (digest {state['dataset_digest']} "
                      f"then, {train_split.digest} now); resume needs the same data")
    if val_is_train(train_split, val_split):
        log.warn(f"VALIDATION ON THE TRAINING SPLIT: {val_split.path} holds the training frames of {train_split.path} "
                 f"(digest {val_split.digest}); its scores say nothing about unseen frames. The run is tagged "
                 f"{names.VAL_IS_TRAIN}=true")
    return train_split, val_split


def val_is_train(train_split, val_split) -> bool:
    """Whether validation would score the frames it trains on: the same folder, or the same frames elsewhere."""
    return train_split.path.resolve() == val_split.path.resolve() or train_split.digest == val_split.digest


def build_model(args, state: dict | None, say) -> tuple:
    """(model, what the encoder came from): the last epoch's state, a random init, or the pretrained encoder."""
    torch.manual_seed(args.seed)  # the fresh head's (or the whole random model's) initialization
    if state:
        return segformer.model_from_checkpoint(state), state["pretrained_id"]
    if args.pretrained.lower() == "none":
        say("pretrained=none: every weight starts random (no ImageNet encoder); record it as such")
        net = segformer.random_init()
    else:
        net, encoder_tensors = segformer.load_pretrained(args.pretrained)
        say(f"encoder: all {encoder_tensors} encoder tensors loaded from {args.pretrained}; fresh 3-class head")
    return net, segformer.pretrained_id(args.pretrained, net)


def library_versions() -> dict:
    return {"version.python": platform.python_version(), "version.torch": torch.__version__,
            **{f"version.{name}": metadata.version(name) for name in ("transformers", "mlflow")}}


def epoch_views(args, train_split, val_split) -> dict:
    """What the run looks at after each validation pass, besides validation: fixed frames, real photos."""
    views = {}
    if args.epoch_images == "true":
        # The frames with the most rock, ties by index: the same every epoch, chosen from the labels alone.
        rock = (val_split.masks == ROCK).flatten(1).sum(1).tolist()
        views["frames"] = sorted(range(val_split.frames), key=lambda i: (-rock[i], i))[:PREVIEW_FRAMES]
    if args.real_images:  # read and fitted once, at the training frames' size, as regolith.photos fits them
        views["real"] = photos.prepare(args.real_images, max(train_split.image_size))
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
        rock = [photos.class_shares(p, valid)[CLASSES[ROCK]] for p, valid in zip(predictions, real["valid"])]
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


def peak_memory(device) -> dict:
    """torch's peak allocation since the last call, in MiB, on CUDA (a GB10's NVML reports none); nothing on a CPU."""
    if device.type != "cuda":
        return {}
    peak = torch.cuda.max_memory_allocated(device) / 2**20
    torch.cuda.reset_peak_memory_stats(device)
    return {names.PEAK_MEMORY: peak}


def environment() -> str:
    """environment.txt: the Python, the platform and every installed distribution with its version, sorted."""
    installed = sorted({f"{dist.metadata['Name']}=={dist.version}" for dist in metadata.distributions()
                        if dist.metadata["Name"]}, key=str.lower)
    return f"# python {platform.python_version()} on {platform.platform()}\n" + "\n".join(installed) + "\n"


def git_commit() -> str:
    """The commit of the code this run runs, with "+dirty" when it has uncommitted changes; "unknown" outside git."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def run_record(args, dr: bool, train_split, val_split, net, source: str, device, compiled: bool,
               precision: str, views: dict) -> dict:
    """What the store records when the run starts (name, params, tags, dataset inputs) and the line that says it."""
    variant = names.variant(dr, train_split.frames)
    weights, shares = data.class_weights(train_split.pixel_counts), data.pixel_shares(train_split.pixel_counts)
    return {
        "name": variant,
        "line": (f"{variant}: {train_split.frames} training frames from {train_split.path} ({train_split.digest}), "
                 f"{val_split.frames} validation frames from {val_split.path} ({val_split.digest}), on "
                 f"{device.type}\nclass weights " + "  ".join(
                     f"{n} {w:.3f} (share {s:.3f})" for n, w, s in zip(CLASSES, weights, shares))),
        "params": {
            "image_size": "x".join(map(str, train_split.image_size)),
            "val_image_size": "x".join(map(str, val_split.image_size)),
            "pretrained_id": source, **library_versions(),
            **{f"{names.CLASS_WEIGHT}.{name}": f"{w:.6f}" for name, w in zip(CLASSES, weights)},
            **{f"{names.PIXEL_SHARE}.{name}": f"{s:.6f}" for name, s in zip(CLASSES, shares)}},
        "tags": {
            names.KIND: names.KIND_TRAIN, names.DR: str(dr).lower(), names.VARIANT: variant,
            names.SPLIT: train_split.path.name, names.DATASET_DIGEST: train_split.digest,
            names.FRAMES: train_split.frames, names.VAL_SPLIT: str(val_split.path),
            names.VAL_DIGEST: val_split.digest, names.SEED: args.seed, names.DEVICE: device_name(device),
            names.VAL_IS_TRAIN: str(val_is_train(train_split, val_split)).lower(),
            names.COMPILED: str(compiled).lower(), names.PRECISION: precision,
            names.ATTENTION: net.config._attn_implementation or "eager", names.GIT_COMMIT: git_commit(),
            **({names.PARENT: args.parent} if args.parent else {}),
            **({names.REAL_DIGEST: views["real"]["digest"]} if "real" in views else {})},
        "datasets": [(train_split.path, train_split.digest, "training"),
                     (val_split.path, val_split.digest, "validation"),
                     *([(views["real"]["folder"], views["real"]["digest"], "real")] if "real" in views else [])],
    }


# ---- the run's files: state, history, best checkpoint ------------------------------------------

def output_dir(run_id: str) -> Path:
    """Local working files of one run: best.pt, state.pt, metrics.jsonl, summary.json.

    One folder per run id, so no two runs ever share files; ``REGOLITH_OUTPUT_DIR`` moves the root.
    """
    return Path(os.environ.get("REGOLITH_OUTPUT_DIR", "outputs")) / run_id


def check_output_dir(out: Path):
    """Create the run's folder and write a probe file in it: an unwritable output root fails before any data is read."""
    root = os.environ.get("REGOLITH_OUTPUT_DIR")
    where = f"REGOLITH_OUTPUT_DIR={root}" if root else "outputs/ (REGOLITH_OUTPUT_DIR unset)"
    check_writable(out, where, "point REGOLITH_OUTPUT_DIR at a writable directory")


def check_writable(folder: Path, where: str, remedy: str):
    """Create ``folder`` and write and remove a probe file in it, or refuse naming ``where`` and the reason."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise Refused(f"{where}: cannot write the run's files in {folder} ({error.strerror}); {remedy}") from error


def write_atomic(path: Path, content: bytes):
    """Write, then rename, so a crash mid-write never leaves a truncated file behind.

    A failed write removes its ``.partial`` (on a full disk it would keep the disk full) and is
    refused naming the file; the run then ends FAILED with the files of its last good epoch.
    """
    partial = path.with_suffix(path.suffix + ".partial")
    try:
        with open(partial, "wb") as file:
            file.write(content)
        os.replace(partial, path)
    except OSError as error:
        try:
            partial.unlink(missing_ok=True)
        except OSError:
            pass
        full = error.errno in (errno.ENOSPC, errno.EDQUOT)
        raise Refused(f"{path}: could not write it ({error.strerror})"
                      + (f": the disk is full; free space on {path.parent}, then --resume the run (or start a "
                         f"new one)" if full else "")) from error


def save_atomic(payload, path: Path):
    """``torch.save`` through ``write_atomic``: serialized in memory first, so a full disk is a plain ENOSPC.

    (torch's own file writer reports it as ``inline_container.cc ... unexpected pos``.)
    """
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    write_atomic(path, buffer.getbuffer())


def write_history(path: Path, history: list):
    """metrics.jsonl, one line per epoch, rewritten whole from the state so it never holds an epoch twice."""
    write_atomic(path, "".join(json.dumps(row) + "\n" for row in history).encode())


def resume_key(args) -> dict:
    """The arguments a resumed run must share with its start: everything that changes the computation."""
    return {key: getattr(args, key) for key in RUN_PARAMS if key not in OBSERVING}


def new_progress(train_split, val_split, source: str) -> dict:
    """Where a run stands after its last finished epoch; saved whole in state.pt after every epoch."""
    return {"epoch": 0, "step": 0, "best": None, "best_epoch": 0, "epochs_without_gain": 0, "history": [],
            "dataset_digest": train_split.digest, "val_digest": val_split.digest, "pretrained_id": source}


def save_state(path: Path, net, optimizer, data_rng, progress: dict, args):
    """Everything needed to continue after the last finished epoch, written atomically.

    The learning rate is a pure function of the step, so the step is the whole schedule state;
    the RNG states make the resumed run draw the same data order and dropout as an unbroken one.
    """
    rng = {"torch": torch.get_rng_state(), "order": data_rng.get_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    save_atomic({"model": net.state_dict(), "config": json.loads(net.config.to_json_string()),
                 "optimizer": optimizer.state_dict(), "rng": rng, "args": resume_key(args), **progress}, path)


def load_state(path: Path, run_id: str, args) -> dict:
    """The resumable state of ``run_id``; refuses, never silently restarting, when it is missing or wrong."""
    if not path.exists():
        raise Refused(f"run {run_id}: no resumable state at {path} (it is written after every finished epoch); "
                      f"refusing to start from scratch inside the old run. Start a new run instead")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        epoch, history = int(state["epoch"]), list(state["history"])
    except Exception as error:
        raise Refused(f"run {run_id}: resumable state {path} is corrupt ({error}); refusing to resume. "
                      f"Start a new run instead") from error
    saved = {**EARLIER_DEFAULTS, **state["args"]}
    if saved != resume_key(args):
        changed = {k: (saved.get(k), v) for k, v in resume_key(args).items() if saved.get(k) != v}
        raise Refused(f"run {run_id}: resume with other parameters than it started with "
                      f"(saved, now): {changed}; resume with the same ones")
    if len(history) != epoch:
        raise Refused(f"run {run_id}: resumable state {path} is corrupt (epoch {epoch}, {len(history)} history rows)")
    return state


def restore(state: dict, optimizer, data_rng) -> dict:
    """Put the optimizer and the RNGs back where the state left them; returns its progress."""
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["rng"]["torch"])
    data_rng.set_state(state["rng"]["order"])
    if "cuda" in state["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    return {key: state[key] for key in ("epoch", "step", "best", "best_epoch", "epochs_without_gain", "history",
                                        "dataset_digest", "val_digest", "pretrained_id")}


# ---- per epoch: the row, the best, the line ------------------------------------------------------

def epoch_row(epoch: int, train_stats: dict, val: dict, lr: float, seconds: float, seen: dict | None = None) -> dict:
    """One epoch's metrics, keyed as logged (step = ``epoch``); ``seen``: what ``look`` measured, already keyed."""
    return {"epoch": epoch, **names.prefixed(names.TRAIN, train_stats), **names.prefixed(names.VAL, val),
            names.LR: lr, names.EPOCH_SECONDS: seconds, **(seen or {})}


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


def check_results_dir(results_dir: str):
    """``-P out=DIR`` must be writable and not hold a finished result: refused before anything is decoded or trained."""
    if not results_dir:
        return
    if (Path(results_dir) / names.SUMMARY).exists():
        raise Refused(f"out={results_dir}: already holds a finished result ({names.SUMMARY}); it is never "
                      f"overwritten. Give another folder")
    check_writable(Path(results_dir), f"out={results_dir}", "give a writable folder")


def copy_results(out: Path, results_dir: str):
    """The run's best.pt, metrics.jsonl and summary.json into ``-P out=DIR`` too, as the original's --out wrote them.

    Each file is copied whole, then renamed, summary.json last: a folder with summary.json holds a finished result.
    """
    if not results_dir:
        return
    for name in (names.CHECKPOINT, names.HISTORY, names.SUMMARY):
        write_atomic(Path(results_dir) / name, (out / name).read_bytes())


# ---- the run ------------------------------------------------------------------------------------

def save_epoch(out: Path, net, optimizer, data_rng, progress: dict, args, precision: str, improved: bool):
    """The epoch's files: best.pt on a gain, then state.pt and metrics.jsonl; a stop lands before or after, not between."""
    with track.shielded():
        if improved:
            save_atomic(segformer.checkpoint(net, progress["epoch"], progress["best"], vars(args), data.PREPROCESSING,
                                             precision), out / names.CHECKPOINT)
        # State first, then the store: a crash in between is repaired by replaying the state's history.
        save_state(out / STATE_FILE, net, optimizer, data_rng, progress, args)
        write_history(out / names.HISTORY, progress["history"])


def train(args, run_id: str, resume: bool = False, rank: int = 0, world: int = 1) -> dict:
    """The whole run inside an MLflow run: set up, then per epoch train, evaluate, log, keep the best, maybe stop.

    Under torchrun every rank trains on its share of each global batch; only rank 0 logs,
    prints and writes files, so the run is recorded once.
    """
    log, say = (track, print) if rank == 0 else (track.silent, lambda *_, **__: None)
    out = output_dir(run_id)
    check_before_reading(args, out, rank, world)
    state = load_state(out / STATE_FILE, run_id, args) if resume else None
    train_split, val_split = load_splits(args, run_id, state, log)
    dr = resolve_dr(args.dr, train_split.path)
    device = pick_device()
    precision, compiled = segformer.resolve_precision(args.precision, device), resolve_compile(args.compile, device)
    net, source = build_model(args, state, say)
    views = epoch_views(args, train_split, val_split) if rank == 0 else {}
    record = run_record(args, dr, train_split, val_split, net, source, device, compiled, precision, views)
    forward = prepare(net.to(device), device, compiled, world)
    for split in (train_split, val_split):
        keep_on(split, device)
    class_weights = torch.tensor(data.class_weights(train_split.pixel_counts), dtype=torch.float32, device=device)
    optimizer = make_optimizer(net, args.lr, args.weight_decay, device)
    data_rng = torch.Generator().manual_seed(args.seed)  # data order and flips, independent of the model's RNG use
    progress = restore(state, optimizer, data_rng) if state else new_progress(train_split, val_split, source)
    # Ranks need equal shares of every batch, so the ragged last batch is dropped under torchrun too.
    drop_last = compiled or world > 1
    lr_at = lr_schedule(args.schedule, args.lr, args.epochs,
                        len(batches(torch.arange(train_split.frames), args.batch, drop_last)))
    engine = {"batch": args.batch, "class_weights": class_weights, "precision": precision, "device": device,
              "rank": rank, "world": world}  # what the training epoch and the validation pass share
    start(log, say, record, progress, out, run_id, resume, rank)

    try:
        while progress["epoch"] < args.epochs and not stop_early(progress, args.patience):
            started, epoch = time.perf_counter(), progress["epoch"] + 1
            order = torch.randperm(train_split.frames, generator=data_rng)
            flips = draw_flips(args.augment, train_split.frames, data_rng)
            with tqdm(total=train_split.frames, desc=f"epoch {epoch}", unit="img", leave=False, file=sys.stderr,
                      disable=None if rank == 0 else True) as bar:
                train_stats, step = train_epoch(
                    forward, train_split, order, optimizer=optimizer, step=progress["step"], epoch=epoch,
                    lr_at=lr_at, flips=flips, drop_last=drop_last, progress=bar, **engine)
            val = validate(forward, val_split, static=compiled, **engine)
            seconds = time.perf_counter() - started
            seen = {**watch(log, net, val_split, views, precision, device, epoch), **peak_memory(device)}
            # The rate of the epoch's last step: with the per-epoch schedule, the rate the whole epoch trained at.
            row = epoch_row(epoch, train_stats, val, lr_at(step - 1), seconds, seen)
            progress, improved = advance(progress, row, val, step)
            if rank == 0:
                save_epoch(out, net, optimizer, data_rng, progress, args, precision, improved)
            say(epoch_line(args.epochs, row, improved), flush=True)
            log.send_epochs(progress["history"])
        if stop_early(progress, args.patience):
            say(f"early stop: no rock-IoU gain for {args.patience} epochs since epoch {progress['best_epoch']}")
    finally:
        # Whatever happened, keep what was earned: every finished epoch's metrics (a stop can land
        # between saving an epoch and sending it), the best checkpoint and the per-epoch history.
        log.keep(progress["history"], [out / names.CHECKPOINT, out / names.HISTORY])

    return finish(log, say, record, progress, args, out, run_id, train_split, val_split, rank)


def check_before_reading(args, out: Path, rank: int, world: int):
    """Everything that can be refused before any data is read: the parameters and where the run will write."""
    check_args(args, world)
    check_results_dir(args.out)
    if rank == 0:  # the only rank that writes files
        check_output_dir(out)
        track.check_artifact_store()


def start(log, say, record: dict, progress: dict, out: Path, run_id: str, resume: bool, rank: int):
    """Record the run's start once: params, tags, datasets, environment.txt; say what it trains on."""
    if rank == 0:
        write_atomic(out / names.ENVIRONMENT, environment().encode())
    # A resumed run may hold epochs the store never got (a crash between saving and sending): sent first.
    log.start(record["name"], record["params"], record["tags"], [] if resume else record["datasets"],
              [] if resume else [out / names.ENVIRONMENT], progress["history"])
    if resume:
        say(f"resuming run {run_id} after epoch {progress['epoch']} from {out / STATE_FILE}")
    say(record["line"])


def finish(log, say, record: dict, progress: dict, args, out: Path, run_id: str, train_split, val_split,
           rank: int) -> dict:
    """Record the run's end once: summary.json (and -P out=DIR), the final metrics, the registry; returns the summary."""
    summary = run_summary(record, progress, args, train_split, val_split)
    if rank == 0:
        write_atomic(out / names.SUMMARY, (json.dumps(summary, indent=2) + "\n").encode())
        copy_results(out, args.out)
    registered = log.finish(progress["history"], final_metrics(summary, progress), [out / names.SUMMARY],
                            register=record["name"] if args.register == "true" else None)
    if registered:
        version, stays = registered
        say(f"registered {version}; {stays}" if stays else
            f"registered {version} as models:/{names.MODEL_NAME}@{record['name']}")
    say(f"best rock-IoU {summary['best']['iou_rock']:.4f} at epoch {summary['best_epoch']} "
        f"(miou {summary['best']['miou']:.4f}); run {run_id}, artifacts {names.CHECKPOINT}, {names.HISTORY}, "
        f"{names.SUMMARY}")
    return summary


def distributed() -> tuple:
    """(rank, world size): under torchrun, join the process group (NCCL on GPUs, gloo on CPUs)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return int(os.environ.get("RANK", "0")), world


def share(value, world: int):
    """Rank 0's ``value`` on every rank."""
    if world == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    rank, world = distributed()
    # SIGTERM (a preempted job, `docker stop`) and Ctrl-C end the run as KILLED, keeping the last epoch.
    previous = {sig: signal.signal(sig, track.stop_handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        with refusals():  # the run is already marked FAILED with the error as a tag; say what is wrong, no traceback
            if rank == 0:
                track.check_reachable()
                with track.run(args.run_name, args.experiment, resume=args.resume,
                               params=as_given(parser, argv)) as (run_id, resume):
                    share((run_id, resume), world)
                    train(args, run_id, resume, rank, world)
            else:
                run_id, resume = share(None, world)
                with track.node_system_metrics(run_id, resume):  # each other node's system/node_N/ metrics
                    train(args, run_id, resume, rank, world)
    except track.Interrupted as stop:
        print(f"{stop}: run ended as KILLED; resume it with --resume <run id>", file=sys.stderr)
        sys.exit(143)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
