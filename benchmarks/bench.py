"""Benchmark this project's training path against a plain baseline, in one process, on the same data.

    python -m benchmarks.bench [--size 512] [--batch 8] [--frames 64] [--val-frames 32] [--steps N]
                               [--compile auto|true|false] [--repeats R] [--out bench.json]
    python -m benchmarks.bench --split DIR --val-split DIR ...   # rendered frames instead of generated ones
    mlflow run . --env-manager local -e bench -P size=512 -P batch=32

A benchmark, not a timed test: it prints figures and asserts nothing about speed. It sits beside the
package and reaches it only through public functions. From the same initial weights and on the same
frames, each of two paths trains N steps (default: one epoch of ``--frames``) and evaluates the
validation split:

(a) this project's path: splits decoded once into uint8 tensors (``data.load_split``), normalized
    on the device, and the training loop's own engine, ``engine.train_epoch`` and ``engine.validate``,
    with bf16 autocast, channels_last, fused AdamW and torch.compile where the device has them;
(b) a baseline written the way the HuggingFace semantic-segmentation example does it: a Dataset that
    PIL-decodes each PNG pair per item and normalizes on the host, a shuffling DataLoader with worker
    processes, fp32, plain AdamW, and a host-side metric per batch (argmax, ``.cpu().numpy()``, then
    the per-image numpy histograms of ``evaluate.load("mean_iou")``).

Both draw the same frame order and dropout draws and, on the CPU in fp32, compute the same thing, so
their metrics agree within ``AGREEMENT`` (measured: exactly); the difference is only how fast. It
prints and writes to ``--out`` the figures a user decides on: training and inference images/s and the
ratio (a)/(b), epoch seconds (and scaled to the study's 1,500 + 300 frames), peak memory, data
loading's share of the time, MLflow's share of an epoch (``track.send_epochs`` into a temporary SQLite
store), and IoU over ``--iou-frames`` frames of ``--iou-size`` pixels, ours against the numpy
histograms. With ``--repeats`` the paths alternate R times; the figures are medians, and each path's
fastest repeat is kept too (other load on the machine only ever adds time).

On CUDA every timing is bracketed by ``torch.cuda.synchronize``, and warm-up steps run first (then the
weights and optimizer are reset); compile time is the excess of the first warm-up step and is reported
on its own. Decoded splits are cached in a temporary directory, so nothing is left in ~/.cache.
"""

import argparse
import dataclasses
import json
import os
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset, RandomSampler

from regolith import CLASSES, IGNORE_INDEX, data, engine, metrics, model as segformer, names, provenance, synth, track

# On the CPU in fp32 both paths run the same kernels on bit-identical inputs in the same order, so
# they agree exactly; the tolerance only leaves room for float rounding in reductions (the summed
# class weights are added in another order) and says what "the same metrics" means: a float32
# loss to a relative 1e-5, and no pixel of the validation split changing its predicted class.
AGREEMENT = {"loss_rel": 1e-5, "iou_abs": 1e-9}

# The keys bench.json always has; tests/test_bench.py checks them.
PATH_FIELDS = ("train_images_per_s", "inference_images_per_s", "train_s", "eval_s", "epoch_s", "study_epoch_s",
               "peak_memory_mb", "data_s", "data_share", "metrics")
# The recipe's AdamW weight decay (train's default), on both paths so that they compute the same thing.
WEIGHT_DECAY = engine.WEIGHT_DECAY
STUDY_FRAMES = (1500, 300)  # the reference study's largest training split and its validation split


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512, help="frame width and height of the generated splits")
    parser.add_argument("--batch", type=int, default=8, help="batch size of both paths")
    parser.add_argument("--frames", type=int, default=64, help="training frames (one epoch)")
    parser.add_argument("--val-frames", type=int, default=32, help="validation frames, evaluated once")
    parser.add_argument("--steps", type=int, default=0, help="training steps to time (0: one epoch of --frames)")
    parser.add_argument("--compile", default="auto", choices=["true", "false", "auto"],
                        help="torch.compile path (a) (auto: on for CUDA)")
    parser.add_argument("--warmup", type=int, default=-1,
                        help="untimed warm-up steps before each path (-1: 3 on CUDA, 1 on CPU)")
    parser.add_argument("--workers", type=int, default=-1,
                        help="DataLoader worker processes of the baseline (-1: the CPU count, at most 8)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="runs of (a) then (b), alternating; figures are medians (peaks: maxima) over them")
    parser.add_argument("--lr", type=float, default=6e-5, help="AdamW peak learning rate (cosine over --steps)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial weights, data and frame order")
    parser.add_argument("--split", default="", help="training split to use instead of generated frames")
    parser.add_argument("--val-split", default="", help="validation split to use with --split")
    parser.add_argument("--iou-frames", type=int, default=300, help="frames of the IoU timing")
    parser.add_argument("--iou-size", type=int, default=512, help="frame size of the IoU timing")
    parser.add_argument("--out", default="bench.json", help="where the results are written as JSON")
    return parser


# --- Timing and memory ---

def clock(device: torch.device) -> float:
    """A timestamp after everything queued on the device has finished."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def reset_peak_memory(device: torch.device):
    """Start a new peak: CUDA's allocator statistics, or the process's peak RSS (Linux ``clear_refs``)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        Path("/proc/self/clear_refs").write_text("5")  # 5 resets VmHWM to the current RSS
    except OSError:
        pass  # then the peak below is the process's peak since it started


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return engine.peak_memory(device)[names.PEAK_MEMORY]
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_memory_kind(device: torch.device) -> str:
    return "torch.cuda.max_memory_allocated" if device.type == "cuda" else "process peak RSS (VmHWM, reset per path)"


# --- What both paths share: weights, frame order, schedule ---

def order_seed(seed: int, epoch: int) -> int:
    return seed * 100_003 + epoch


def epoch_orders(frames: int, batch: int, steps: int, seed: int, drop_last: bool):
    """(epoch, frame order) for each epoch of a ``steps``-batch run, the last one cut short.

    Epoch e's order is ``randperm`` under seed ``order_seed(seed, e)``; the baseline's RandomSampler
    is reseeded the same way, so both paths see the same frames in the same batches.
    """
    per_epoch = steps_per_epoch(frames, batch, drop_last)
    epoch = 0
    while steps > 0:
        order = torch.randperm(frames, generator=torch.Generator().manual_seed(order_seed(seed, epoch)))
        take = min(steps, per_epoch)
        yield epoch, order[:take * batch]
        steps -= take
        epoch += 1


def steps_per_epoch(frames: int, batch: int, drop_last: bool) -> int:
    return len(engine.batches(torch.arange(frames), batch, drop_last))


def head_of(split: data.Split, frames: int) -> data.Split:
    """The first ``frames`` frames of a decoded split (for warm-up)."""
    return dataclasses.replace(split, names=split.names[:frames], images=split.images[:frames],
                               masks=split.masks[:frames])


# --- (a) this project's path ---

def load_splits(train_dir: Path, val_dir: Path, args) -> tuple:
    """Both splits through ``data.load_split``, with a fresh temporary disk cache: (train, val, seconds)."""
    with tempfile.TemporaryDirectory(prefix="regolith-bench-cache-") as cache, \
            mock.patch.dict(os.environ, {"REGOLITH_CACHE_DIR": cache}):
        started = time.perf_counter()
        splits = data.load_split(train_dir, args.frames), data.load_split(val_dir, args.val_frames)
        return (*splits, time.perf_counter() - started)


def copy_seconds(train_split, val_split, args, device: torch.device, static: bool) -> float:
    """Seconds of the batch indexing and copies an epoch does (``engine.batches`` as the loop takes them), without the model.

    On the CPU this is the part of a step that is data handling rather than compute; on CUDA with
    the splits on the GPU it is a gather kernel per batch.
    """
    started = clock(device)
    for _, order in epoch_orders(train_split.frames, args.batch, args.steps, args.seed, static):
        for index in engine.batches(order.to(train_split.images.device), args.batch, drop_last=static):
            engine.gather(train_split, "images", index, device)
            engine.gather(train_split, "masks", index, device).long()
    for start in range(0, val_split.frames, args.batch):
        rows = slice(start, min(start + args.batch, val_split.frames))
        engine.gather(val_split, "images", rows, device)
        engine.gather(val_split, "masks", rows, device).long()
    return clock(device) - started


def run_project(train_dir: Path, val_dir: Path, args, device: torch.device, init_state: dict,
                compile_model: bool) -> dict:
    """Path (a): decode once, then the training loop's engine, ``engine.train_epoch`` and ``engine.validate``."""
    reset_peak_memory(device)
    train_split, val_split, load_s = load_splits(train_dir, val_dir, args)
    for split in (train_split, val_split):
        engine.keep_on(split, device)
    net = segformer.random_init()
    net.load_state_dict(init_state)
    forward = engine.prepare(net.to(device), device, compile_model)
    static = compile_model
    class_weights = torch.tensor(data.class_weights(train_split.pixel_counts), dtype=torch.float32, device=device)
    shared = {"batch": args.batch, "class_weights": class_weights, "device": device,
              "precision": segformer.resolve_precision("auto", device)}

    def lr_at(step):
        return engine.get_lr(step, args.steps, args.lr)

    # Warm-up, one batch per call so that the first step's excess (compilation) can be told apart.
    optimizer = engine.make_optimizer(net, args.lr, WEIGHT_DECAY, device)
    warmup_steps = []
    for step in range(args.warmup):
        order = torch.arange(step * args.batch, (step + 1) * args.batch) % train_split.frames
        started = clock(device)
        engine.train_epoch(forward, train_split, order, optimizer=optimizer, lr_at=lr_at, step=step,
                          drop_last=static, **shared)
        warmup_steps.append(clock(device) - started)
    warmup_eval = []
    for _ in range(2 if args.warmup else 0):
        started = clock(device)
        engine.validate(forward, head_of(val_split, args.batch), static=static, **shared)
        warmup_eval.append(clock(device) - started)
    net.load_state_dict(init_state)  # in place, so a compiled module keeps its graphs
    optimizer = engine.make_optimizer(net, args.lr, WEIGHT_DECAY, device)

    torch.manual_seed(args.seed)  # the same dropout and drop-path draws as the baseline
    losses = []
    step = 0
    started = clock(device)
    for epoch, order in epoch_orders(train_split.frames, args.batch, args.steps, args.seed, static):
        stats, next_step = engine.train_epoch(forward, train_split, order, optimizer=optimizer, lr_at=lr_at,
                                             step=step, epoch=epoch + 1, drop_last=static, **shared)
        losses.append((stats[names.LOSS], next_step - step))
        step = next_step
    train_s = clock(device) - started
    started = clock(device)
    val = engine.validate(forward, val_split, static=static, **shared)
    eval_s = clock(device) - started
    peak = peak_memory_mb(device)
    result = summarize(args, train_split.frames, val_split.frames, train_s, eval_s, static,
                       data_s=copy_seconds(train_split, val_split, args, device, static), peak=peak,
                       train_loss=sum(loss * n for loss, n in losses) / sum(n for _, n in losses), val=val)
    compile_s = None
    if compile_model and warmup_steps:
        steady = statistics.median(warmup_steps[1:]) if len(warmup_steps) > 1 else 0.0
        compile_s = warmup_steps[0] - steady + (warmup_eval[0] - warmup_eval[-1] if warmup_eval else 0.0)
    result.update({"load_s": load_s, "warmup_s": sum(warmup_steps) + sum(warmup_eval), "compile_s": compile_s,
                   "compiled": compile_model, "precision": shared["precision"],
                   "digests": {"train": train_split.digest, "val": val_split.digest},
                   "class_weights": class_weights.tolist(),
                   # what an epoch of the training loop logs, for the MLflow timing: the same keys, these values
                   "epoch_stats": {"train": stats, "val": val}})
    return result


def summarize(args, frames, val_frames, train_s, eval_s, drop_last, data_s, peak, train_loss, val) -> dict:
    """The figures both paths report, from their measured seconds."""
    trained = sum(len(order) for _, order in epoch_orders(frames, args.batch, args.steps, args.seed, drop_last))
    per_epoch = steps_per_epoch(frames, args.batch, drop_last)
    # A full epoch is measured when --steps is one epoch; otherwise it is scaled from the timed steps.
    epoch_s = train_s * per_epoch / args.steps + eval_s
    return {
        "train_images_per_s": trained / train_s, "inference_images_per_s": val_frames / eval_s,
        "train_s": train_s, "eval_s": eval_s, "trained_images": trained,
        "epoch_s": epoch_s, "epoch_basis": "measured" if args.steps == per_epoch else f"scaled from {args.steps} steps",
        # The study's epoch (1,500 training + 300 validation frames), scaled from the per-image times measured.
        "study_epoch_s": train_s / trained * STUDY_FRAMES[0] + eval_s / val_frames * STUDY_FRAMES[1],
        "peak_memory_mb": peak, "data_s": data_s, "data_share": data_s / (train_s + eval_s),
        "metrics": {"train_loss": train_loss, "val_loss": val[names.LOSS],
                    **{score: val[score] for score in names.SCORES}},
    }


# --- (b) the baseline, as the HuggingFace semantic-segmentation example writes it ---

class PngFrames(Dataset):
    """(normalized float32 3 x H x W pixels, int64 H x W labels) per frame, PIL-decoded on every access."""

    def __init__(self, split_dir: Path, frames: int):
        self.pairs = data.pair_frames(split_dir)[:frames or None]
        self.mean = np.array(segformer.PREPROCESSING["mean"], dtype=np.float32)
        self.std = np.array(segformer.PREPROCESSING["std"], dtype=np.float32)

    def __len__(self):
        return len(self.pairs)

    def __getitem__(self, index):
        _, rgb_path, mask_path = self.pairs[index]
        with Image.open(rgb_path) as image:
            rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
        with Image.open(mask_path) as mask:
            labels = np.asarray(mask, dtype=np.int64)
        # The image processor's rescale then normalize, in float32 and in the same order of
        # operations as model.normalize, so both paths feed the model bit-identical pixels.
        pixels = (rgb * segformer.PREPROCESSING["rescale"] - self.mean) / self.std
        return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1))), torch.from_numpy(labels)


def intersect_and_union(pred_label: np.ndarray, label: np.ndarray, num_labels: int, ignore_index: int):
    """One image's per-class intersection and union areas, as ``evaluate``'s mean_iou computes them."""
    keep = np.not_equal(label, ignore_index)
    pred_label, label = pred_label[keep], label[keep]
    intersect = pred_label[pred_label == label]
    bins = dict(bins=num_labels, range=(0, num_labels - 1))
    area_intersect = np.histogram(intersect, **bins)[0]
    area_pred_label = np.histogram(pred_label, **bins)[0]
    area_label = np.histogram(label, **bins)[0]
    return area_intersect, area_pred_label + area_label - area_intersect


class HistogramIoU:
    """Totals of per-image histograms, added per batch on the host; IoU is total intersection / total union."""

    def __init__(self, num_labels: int = len(CLASSES), ignore_index: int = IGNORE_INDEX):
        self.num_labels, self.ignore_index = num_labels, ignore_index
        self.intersect = np.zeros(num_labels, dtype=np.float64)
        self.union = np.zeros(num_labels, dtype=np.float64)

    def add_batch(self, predictions: np.ndarray, references: np.ndarray):
        for pred_label, label in zip(predictions, references):
            area_intersect, area_union = intersect_and_union(pred_label, label, self.num_labels, self.ignore_index)
            self.intersect += area_intersect
            self.union += area_union

    def iou(self) -> np.ndarray:
        return self.intersect / self.union


def baseline_loader(dataset, args, shuffle: bool, drop_last: bool):
    sampler = RandomSampler(dataset, generator=torch.Generator()) if shuffle else None
    # The loader's own generator seeds the workers; without it, the global RNG would be drawn from
    # and the dropout draws would no longer match path (a).
    return DataLoader(dataset, batch_size=args.batch, sampler=sampler, num_workers=args.workers,
                      drop_last=drop_last, generator=torch.Generator().manual_seed(args.seed))


def baseline_step(net, pixels, labels, weights, optimizer, step, args):
    """One fp32 training step as the example writes it, with this project's loss and learning-rate schedule."""
    for group in optimizer.param_groups:
        group["lr"] = engine.get_lr(step, args.steps, args.lr)
    logits = net(pixel_values=pixels).logits
    upsampled = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
    loss = F.cross_entropy(upsampled, labels, weight=weights, ignore_index=IGNORE_INDEX)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    return loss.detach()


def timed_batches(loader, device: torch.device, waits: list):
    """The loader's (pixels, labels) on ``device``, adding the seconds spent waiting for each to ``waits``."""
    batches = iter(loader)
    while True:
        waiting = time.perf_counter()
        batch = next(batches, None)
        if batch is None:
            return  # ends the loader's workers, as leaving a for loop over a DataLoader does
        pixels, labels = batch[0].to(device), batch[1].to(device)
        waits.append(time.perf_counter() - waiting)
        yield pixels, labels


def baseline_train(net, loader, weights, optimizer, args, device: torch.device) -> tuple:
    """``args.steps`` steps over epochs of the shuffling loader: (mean loss, seconds, seconds waiting on the loader)."""
    net.train()
    losses, step, epoch, waits = [], 0, 0, []
    started = clock(device)
    while step < args.steps:
        loader.sampler.generator.manual_seed(order_seed(args.seed, epoch))
        for pixels, labels in timed_batches(loader, device, waits):
            losses.append(baseline_step(net, pixels, labels, weights, optimizer, step, args))
            step += 1
            if step == args.steps:
                break
        epoch += 1
    mean_loss = torch.stack(losses).mean().item()
    return mean_loss, clock(device) - started, sum(waits)


@torch.no_grad()
def baseline_evaluate(net, loader, weights, device: torch.device) -> tuple:
    """Weighted loss and IoU with the metric on the host per batch: (metrics, seconds, loader wait, metric seconds)."""
    net.eval()
    iou_metric = HistogramIoU()
    host_weights = weights.double().cpu().numpy()
    loss_sum = weight_sum = metric_s = 0.0
    waits = []
    started = clock(device)
    for pixels, labels in timed_batches(loader, device, waits):
        logits = net(pixel_values=pixels).logits
        upsampled = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
        loss_sum += F.cross_entropy(upsampled, labels, weight=weights, ignore_index=IGNORE_INDEX,
                                    reduction="sum").item()
        measuring = time.perf_counter()
        predictions = upsampled.argmax(dim=1).cpu().numpy()
        references = labels.cpu().numpy()
        iou_metric.add_batch(predictions, references)
        labelled = references[references != IGNORE_INDEX]
        weight_sum += float(np.bincount(labelled, minlength=len(CLASSES)) @ host_weights)
        metric_s += time.perf_counter() - measuring
    seconds = clock(device) - started
    iou = iou_metric.iou()
    val = {names.LOSS: loss_sum / weight_sum, **dict(zip(names.SCORES, [*map(float, iou), float(np.nanmean(iou))]))}
    return val, seconds, sum(waits), metric_s


def run_baseline(train_dir: Path, val_dir: Path, args, device: torch.device, init_state: dict,
                 class_weights: list, drop_last: bool) -> dict:
    """Path (b): PNGs decoded per item in DataLoader workers, fp32, plain AdamW, the metric on the host."""
    reset_peak_memory(device)
    train_set, val_set = PngFrames(train_dir, args.frames), PngFrames(val_dir, args.val_frames)
    train_loader = baseline_loader(train_set, args, shuffle=True, drop_last=drop_last)
    val_loader = baseline_loader(val_set, args, shuffle=False, drop_last=False)
    net = segformer.random_init()
    net.load_state_dict(init_state)
    net.to(device)
    weights = torch.tensor(class_weights, dtype=torch.float32, device=device)

    net.train()
    optimizer = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=WEIGHT_DECAY)
    for step, (pixels, labels) in zip(range(args.warmup), train_loader):
        baseline_step(net, pixels.to(device), labels.to(device), weights, optimizer, step, args)
    if args.warmup:
        net.eval()
        with torch.no_grad():
            net(pixel_values=next(iter(val_loader))[0].to(device))
    net.load_state_dict(init_state)
    optimizer = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=WEIGHT_DECAY)

    torch.manual_seed(args.seed)  # the same dropout and drop-path draws as path (a)
    train_loss, train_s, wait_s = baseline_train(net, train_loader, weights, optimizer, args, device)
    val, eval_s, eval_wait_s, metric_s = baseline_evaluate(net, val_loader, weights, device)
    peak = peak_memory_mb(device)
    result = summarize(args, len(train_set), len(val_set), train_s, eval_s, drop_last,
                       data_s=wait_s + eval_wait_s, peak=peak, train_loss=train_loss, val=val)
    result.update({
        "data_detail": {"train_wait_s": wait_s, "eval_wait_s": eval_wait_s},
        "metric_s": metric_s, "metric_share_of_eval": metric_s / eval_s, "workers": args.workers,
        # Worker processes have their own memory; Linux reports the largest child's peak.
        "worker_peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    })
    return result


def median_over(runs: list) -> dict:
    """One result from repeated runs of a path: medians of the timings, maxima of the peaks.

    The metrics are the same in every run (same weights, data and order), so the first run's are kept,
    as are the one-off warm-up and compile seconds.
    """
    combined = {}
    for key, value in runs[0].items():
        values = [run[key] for run in runs]
        if key in ("metrics", "epoch_stats", "warmup_s", "compile_s"):
            combined[key] = value
        elif isinstance(value, dict):
            combined[key] = median_over(values)
        elif isinstance(value, float):
            combined[key] = max(values) if "peak" in key else statistics.median(values)
        else:
            combined[key] = value
    return combined


def ratios(projects: list, baselines: list) -> dict:
    """(a) over (b) per repeat, paired: each pair ran back to back, under the same load from elsewhere."""
    return {"train": [a["train_images_per_s"] / b["train_images_per_s"] for a, b in zip(projects, baselines)],
            "inference": [a["inference_images_per_s"] / b["inference_images_per_s"]
                          for a, b in zip(projects, baselines)],
            "epoch": [b["epoch_s"] / a["epoch_s"] for a, b in zip(projects, baselines)]}


def agreement(project: dict, baseline: dict, device: torch.device) -> dict:
    """How far (a)'s metrics are from (b)'s; held to ``AGREEMENT`` on the CPU, where both are fp32."""
    diffs = {key: abs(project["metrics"][key] - baseline["metrics"][key]) for key in project["metrics"]}
    checked = device.type == "cpu" and not project["compiled"]
    within = None
    if checked:
        within = all(diffs[key] <= AGREEMENT["loss_rel"] * abs(baseline["metrics"][key])
                     for key in ("train_loss", "val_loss")) and all(
            diffs[f"iou_{name}"] <= AGREEMENT["iou_abs"] for name in CLASSES)
    return {"tolerance": AGREEMENT, "abs_diff": diffs, "checked": checked, "within": within,
            "note": "held on the CPU in fp32 without compile; on CUDA (a) runs bf16 and is only reported"}


# --- IoU three ways, MLflow's share ---

def time_iou(args, device: torch.device) -> dict:
    """IoU over ``--iou-frames`` label maps: our device confusion matrix against the numpy histograms.

    The label maps are uint8, as the project keeps them: random classes with 2% ignored pixels, and
    predictions that agree with them on about 80% of the pixels.
    """
    generator = torch.Generator().manual_seed(args.seed)
    shape = (args.iou_frames, args.iou_size, args.iou_size)
    target = torch.randint(0, len(CLASSES), shape, generator=generator, dtype=torch.uint8)
    target[torch.rand(shape, generator=generator) < 0.02] = IGNORE_INDEX
    flip = torch.rand(shape, generator=generator) < 0.2
    pred = torch.where(flip, torch.randint(0, len(CLASSES), shape, generator=generator, dtype=torch.uint8),
                       target.clamp(max=len(CLASSES) - 1))
    target, pred = target.to(device), pred.to(device)
    chunks = [slice(start, start + args.batch) for start in range(0, args.iou_frames, args.batch)]

    def ours(chunks):
        confusion = torch.zeros(len(CLASSES) + 1, len(CLASSES), dtype=torch.long, device=device)
        for chunk in chunks:
            confusion += metrics.confusion_matrix(pred[chunk], target[chunk])
        return metrics.iou_per_class(confusion)

    def histograms(chunks):
        totals = HistogramIoU()
        for chunk in chunks:  # the baseline's copy to the host is part of its cost
            totals.add_batch(pred[chunk].cpu().numpy(), target[chunk].cpu().numpy())
        return totals.iou()

    ways = {"ours": ours, "numpy": histograms}
    rounds, answers = {name: [] for name in ways}, {}
    for compute in ways.values():
        compute(chunks[:1])  # warm-up: kernels, the allocator
    for _ in range(args.repeats):  # interleaved, so a burst of load elsewhere falls on every way alike
        for name, compute in ways.items():
            started = clock(device)
            answer = compute(chunks)
            rounds[name].append(clock(device) - started)
            answers[name] = [float(v) for v in answer.tolist()]
    seconds = {name: statistics.median(times) for name, times in rounds.items()}
    return {"frames": args.iou_frames, "size": args.iou_size, "chunk": args.batch, "seconds": seconds,
            "seconds_per_repeat": rounds, "speedup_vs_numpy": seconds["numpy"] / seconds["ours"], "iou": answers,
            "max_abs_diff": max(abs(a - b) for a, b in zip(answers["ours"], answers["numpy"]))}


def time_mlflow(project: dict, epochs: int = 6) -> dict:
    """One per-epoch ``track.send_epochs`` into a temporary SQLite store; the median over a few epochs.

    The rows are the training loop's own (``engine.epoch_row``). Its share is of (a)'s least disturbed
    epoch (the fastest repeat), the one a busy machine inflates least.
    """
    with tempfile.TemporaryDirectory(prefix="regolith-bench-mlflow-") as folder, \
            mock.patch.dict(os.environ, {"MLFLOW_TRACKING_URI": f"sqlite:///{folder}/mlflow.db"}):
        for name in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
            os.environ.pop(name, None)  # a store of its own; patch.dict puts them back afterwards
        history, seconds = send_rows(project, epochs)
    per_epoch = statistics.median(seconds[1:])  # the first call also warms up the store's connection
    epoch_s = project["best"]["epoch_s"]
    return {"send_epochs_s": per_epoch, "first_call_s": seconds[0], "epoch_s": epoch_s,
            "share_of_epoch": per_epoch / epoch_s,
            "metrics_per_epoch": len(history[-1]) - 1, "store": "sqlite (temporary)"}


def send_rows(project: dict, epochs: int) -> tuple:
    """(the rows, the seconds each ``track.send_epochs`` took) of ``epochs`` epochs inside one run."""
    history, seconds = [], []
    with track.run("bench", "regolith-bench"):
        for epoch in range(1, epochs + 1):
            history.append(engine.epoch_row(epoch, project["epoch_stats"]["train"], project["epoch_stats"]["val"], 1e-5,
                                           project["epoch_s"]))
            started = time.perf_counter()
            track.send_epochs(history)
            seconds.append(time.perf_counter() - started)
    return history, seconds


# --- Putting it together ---

def machine(device: torch.device) -> dict:
    model_name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model_name = line.split(":", 1)[1].strip()
                break
        memory_gib = int(Path("/proc/meminfo").read_text().split()[1]) / 2**20
    except (OSError, IndexError, ValueError):
        memory_gib = None
    described = {"cpu": model_name, "cpu_count": os.cpu_count(), "memory_gib": memory_gib,
                 "torch_threads": torch.get_num_threads(), "device": engine.device_name(device),
                 "cpu_capability": provenance.cpu_capability()}
    return described


def versions() -> dict:
    return {**{key.removeprefix("version."): value for key, value in provenance.library_versions().items()},
            "numpy": np.__version__}


def generate_splits(folder: Path, args) -> tuple:
    started = time.perf_counter()
    synth.write_split(folder, "train_dr", args.frames, args.size, args.seed)
    synth.write_split(folder, "test_photoreal", args.val_frames, args.size, args.seed)
    return folder / "train_dr", folder / "test_photoreal", time.perf_counter() - started


def check_args(args, parser):
    for name in ("batch", "frames", "val_frames", "iou_frames", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')}={getattr(args, name)}: expected a positive integer")
    if args.size < 16:
        parser.error(f"--size={args.size}: expected at least 16 pixels (synth's smallest frame)")
    if args.iou_size < 1:
        parser.error(f"--iou-size={args.iou_size}: expected a positive frame size")
    if args.workers < -1 or args.steps < 0:
        parser.error("--workers: expected -1 (auto) or 0 or more; --steps: expected 0 or more")
    if args.workers == -1:
        args.workers = min(os.cpu_count() or 1, 8)
    if bool(args.split) != bool(args.val_split):
        parser.error("--split and --val-split go together: give both, or neither to generate frames")


def report(result: dict) -> str:
    """The printed summary: one row per figure, (a) beside (b)."""
    config, a, b, ratio = result["config"], result["project"], result["baseline"], result["ratio"]
    lines = [f"{config['size']}x{config['size']}, batch {config['batch']}, {config['frames']}+{config['val_frames']} "
             f"frames, {config['steps']} steps, on {result['machine']['device']}",
             f"{'':22s}{'(a) project':>14s}{'(b) baseline':>14s}{'(a)/(b)':>10s}"]
    rows = [("training images/s", a["train_images_per_s"], b["train_images_per_s"], "{:.2f}", ratio["train"]),
            ("inference images/s", a["inference_images_per_s"], b["inference_images_per_s"], "{:.2f}",
             ratio["inference"]),
            ("epoch seconds", a["epoch_s"], b["epoch_s"], "{:.2f}", ratio["epoch"]),
            (f"epoch s, {STUDY_FRAMES[0]}+{STUDY_FRAMES[1]}", a["study_epoch_s"], b["study_epoch_s"], "{:.1f}", None),
            ("peak memory MiB", a["peak_memory_mb"], b["peak_memory_mb"], "{:.0f}", None),
            ("data share", a["data_share"], b["data_share"], "{:.1%}", None),
            ("val loss", a["metrics"]["val_loss"], b["metrics"]["val_loss"], "{:.6f}", None),
            ("val rock-IoU", a["metrics"]["iou_rock"], b["metrics"]["iou_rock"], "{:.6f}", None)]
    for label, va, vb, form, speedup in rows:
        lines.append(f"{label:22s}{form.format(va):>14s}{form.format(vb):>14s}"
                     + (f"{speedup:>9.2f}x" if speedup else ""))
    if config["repeats"] > 1:
        spread = "; ".join(f"{key} {min(values):.2f}..{max(values):.2f}x"
                           for key, values in result["ratio_per_repeat"].items())
        best = ", ".join(f"{key} {value:.2f}x" for key, value in result["ratio_best"].items())
        lines.append(f"medians of {config['repeats']} repeats; (a)/(b) per repeat: {spread}; "
                     f"fastest repeat of each: {best}")
    agree = result["agreement"]
    verdict = ("within" if agree["within"] else "NOT within") if agree["checked"] else "not held (bf16 or compiled)"
    lines.append(f"agreement: {verdict} the tolerance {agree['tolerance']}, "
                 f"largest difference {max(agree['abs_diff'].values()):.3g}")
    compiled = f"compile {a['compile_s']:.1f}s" if a["compile_s"] is not None else "not compiled"
    lines.append(f"(a) data: load (decode, digest) {a['load_s']:.2f}s once, index/copy per epoch {a['data_s']:.4f}s; "
                 f"{compiled}; {a['precision']}")
    lines.append(f"(b) data: waiting on the DataLoader {b['data_s']:.2f}s; host metric {b['metric_s']:.3f}s "
                 f"({b['metric_share_of_eval']:.1%} of evaluation)")
    iou = result["iou_timing"]
    lines.append(f"IoU over {iou['frames']} frames of {iou['size']}x{iou['size']}: ours {iou['seconds']['ours']:.3f}s, "
                 f"numpy {iou['seconds']['numpy']:.3f}s ({iou['speedup_vs_numpy']:.1f}x slower); "
                 f"largest difference {iou['max_abs_diff']:.2g}")
    mlflow = result["mlflow"]
    lines.append(f"MLflow per epoch: {mlflow['send_epochs_s'] * 1000:.1f} ms, "
                 f"{mlflow['share_of_epoch']:.2%} of (a)'s epoch")
    return "\n".join(lines)


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    check_args(args, parser)
    device = engine.pick_device()
    compile_model = engine.resolve_compile(args.compile, device)
    if args.warmup < 0:
        args.warmup = 3 if device.type == "cuda" else 1
    load_before = os.getloadavg()  # other processes' load makes CPU timings vary; it is recorded with them
    torch.manual_seed(args.seed)
    init_state = {k: v.clone() for k, v in segformer.random_init().state_dict().items()}

    with tempfile.TemporaryDirectory(prefix="regolith-bench-data-") as folder:
        if args.split:
            train_dir, val_dir, generate_s = Path(args.split), Path(args.val_split), None
        else:
            train_dir, val_dir, generate_s = generate_splits(Path(folder), args)
        args.steps = args.steps or steps_per_epoch(args.frames, args.batch, drop_last=compile_model)
        print(f"bench: {args.frames}+{args.val_frames} frames of {train_dir} / {val_dir}, {args.steps} steps, "
              f"on {device.type}", file=sys.stderr)
        projects, baselines = [], []
        for _ in range(args.repeats):
            projects.append(run_project(train_dir, val_dir, args, device, init_state, compile_model))
            baselines.append(run_baseline(train_dir, val_dir, args, device, init_state, projects[0]["class_weights"],
                                          drop_last=compile_model))
    project, baseline = median_over(projects), median_over(baselines)
    for combined, runs in ((project, projects), (baseline, baselines)):
        combined["per_repeat"] = {key: [run[key] for run in runs]
                                  for key in ("train_images_per_s", "inference_images_per_s", "epoch_s",
                                              "study_epoch_s")}
        # Load from other processes only ever adds time, so the fastest repeat is the least disturbed one.
        combined["best"] = {"train_images_per_s": max(combined["per_repeat"]["train_images_per_s"]),
                            "inference_images_per_s": max(combined["per_repeat"]["inference_images_per_s"]),
                            "epoch_s": min(combined["per_repeat"]["epoch_s"])}
    per_repeat = ratios(projects, baselines)
    result = {
        "config": {**vars(args), "device": device.type, "compile": compile_model, "generated_data_s": generate_s},
        "machine": machine(device), "versions": versions(), "peak_memory_kind": peak_memory_kind(device),
        "project": project, "baseline": baseline,
        "ratio": {key: statistics.median(values) for key, values in per_repeat.items()},
        "ratio_per_repeat": per_repeat,
        "ratio_best": {"train": project["best"]["train_images_per_s"] / baseline["best"]["train_images_per_s"],
                       "inference": project["best"]["inference_images_per_s"]
                       / baseline["best"]["inference_images_per_s"],
                       "epoch": baseline["best"]["epoch_s"] / project["best"]["epoch_s"]},
        "agreement": agreement(project, baseline, device),
        "iou_timing": time_iou(args, device),
        "load_average": {"before": load_before, "after": os.getloadavg()},
    }
    result["mlflow"] = time_mlflow(project)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(report(result))
    print(f"written to {args.out}")
    record(result, Path(args.out))
    return result


def record(result: dict, out: Path):
    """Under ``mlflow run -e bench``, the figures and bench.json into the run MLflow opened, which else holds nothing."""
    run_id = os.environ.get("MLFLOW_RUN_ID")
    if not run_id:
        return
    figures = {f"bench/ratio/{key}": value for key, value in result["ratio"].items()}
    for side in ("project", "baseline"):
        figures.update({f"bench/{side}/{key}": result[side][key] for key in
                        ("train_images_per_s", "inference_images_per_s", "epoch_s", "study_epoch_s")})
    track.label_launcher_run(names.KIND_BENCH, None)
    track.log_to_run(run_id, {key: value for key, value in figures.items() if isinstance(value, (int, float))},
                     {names.CPU_CAPABILITY: result["machine"].get("cpu_capability", "")})
    with tempfile.TemporaryDirectory(prefix="regolith-bench-") as folder:
        shutil.copyfile(out, Path(folder) / "bench.json")
        track.log_artifacts_to_run(run_id, Path(folder), "bench")
    print(f"recorded in run {run_id}: {len(figures)} figures and bench/bench.json")


if __name__ == "__main__":
    main()
