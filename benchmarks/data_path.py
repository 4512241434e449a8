"""Benchmark the data path on splits larger than memory: load, first batch, peak memory, the cache, one epoch.

    python -m benchmarks.data_path --root /tmp/data-path [--frames 250 1000 3000] [--size 512] [--out data_path.json]

A benchmark, not a timed test: it prints figures and asserts nothing. For each N it builds a split of
N frames at ``--size``² (``--unique`` distinct frames encoded with PIL, the rest byte copies under their
own names: decoding and hashing cost the same per frame, and the digests differ by name), then runs
two measuring processes on it, each a fresh interpreter so its memory is its own:

- cold: an empty ``REGOLITH_CACHE_DIR`` (every PNG hashed and decoded, the cache written);
- warm: the cache the cold process left (the digest index and the memory-mapped arrays).

Each reports: ``data.load_split`` seconds; seconds from the start of loading to the first training
batch gathered (``engine.gather``), and that batch's step; peak RSS above the imports (VmHWM after resetting it
through ``/proc/self/clear_refs``) at the first batch and after one epoch, with RssAnon and RssFile at
the end (RssFile is the map's page cache, which the kernel reclaims under pressure); the cache's
size on disk; and one epoch's data time (gathering batches from the map, masks to int64, flips)
against its compute time (timed over the first ``--compute-batches`` steps and scaled to
the epoch). The compute is a deliberately tiny model (a 1x1 convolution on the normalized
frames, cross-entropy at full size, AdamW) to keep the run short: it says what the data path costs, not what
SegFormer-B0 trains at (BENCHMARKS.md has that). The machine's load average is recorded beside the figures.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image


def status() -> dict:
    """This process's memory figures from /proc, in MiB."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile", "RssShmem"):
            fields[key] = int(value.split()[0]) / 1024
    return fields


def frame(rng, size: int) -> tuple:
    """A stand-in render: sky above a horizon, shaded regolith with noise, a few bright rocks."""
    mask = np.zeros((size, size), np.uint8)
    horizon = int(rng.integers(size // 5, size // 3))
    mask[:horizon] = 2
    yy, xx = np.mgrid[0:size, 0:size]
    for _ in range(int(rng.integers(3, 9))):
        cy, cx, r = rng.integers(horizon + 8, size - 8), rng.integers(8, size - 8), rng.integers(4, size // 12)
        mask[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = 1
    mask[horizon] = 255
    shade = (60 + 80 * yy / size).astype(np.float32)
    rgb = np.where(mask[..., None] == 2, 15.0, shade[..., None] + rng.normal(0, 12, (size, size, 3)))
    rgb = np.where(mask[..., None] == 1, 210.0 + rng.normal(0, 10, (size, size, 3)), rgb)
    return np.clip(rgb, 0, 255).astype(np.uint8), mask


def build(root: Path, frames: list, size: int, unique: int) -> dict:
    """One split per N under ``root``: the first N frames of one master set (hard links, so disk holds one copy)."""
    master = root / f"master_{size}"
    (master / "rgb").mkdir(parents=True, exist_ok=True)
    (master / "mask").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(max(frames)):
        rgb_path, mask_path = master / "rgb" / f"rgb_{i:05d}.png", master / "mask" / f"mask_{i:05d}.png"
        if rgb_path.exists() and mask_path.exists():
            continue
        if i < unique:
            rgb, mask = frame(rng, size)
            Image.fromarray(rgb).save(rgb_path)
            Image.fromarray(mask).save(mask_path)
        else:  # a copy, so each file has its own inode and mtime as a rendered one would
            shutil.copyfile(master / "rgb" / f"rgb_{i % unique:05d}.png", rgb_path)
            shutil.copyfile(master / "mask" / f"mask_{i % unique:05d}.png", mask_path)
    splits = {}
    for n in frames:
        split = root / f"train_dr_{n}"
        for sub, prefix in (("rgb", "rgb"), ("mask", "mask")):
            (split / sub).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                target = split / sub / f"{prefix}_{i:05d}.png"
                if not target.exists():
                    os.link(master / sub / f"{prefix}_{i:05d}.png", target)
        splits[n] = split
    return splits


def compute_model():
    """A 1x1 convolution: compute that costs little beside the data path, so the run stays short."""
    import torch
    return torch.nn.Conv2d(3, 3, 1)


def measure(split_dir: str, batch: int, epoch: bool, compute_batches: int) -> dict:
    """One process's figures (run with ``--measure``)."""
    import torch
    import torch.nn.functional as F
    from regolith import IGNORE_INDEX, data, engine, model as segformer
    torch.manual_seed(0)
    net = compute_model()
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4)
    cpu = torch.device("cpu")

    def step(images, masks):
        inputs = segformer.normalize(images)
        logits = net(inputs)
        loss = F.cross_entropy(logits, masks, ignore_index=IGNORE_INDEX)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    Path("/proc/self/clear_refs").write_text("5")  # VmHWM from here: what loading and training add
    base = status()
    started = time.perf_counter()
    split = data.load_split(split_dir)
    loaded = time.perf_counter()
    generator = torch.Generator().manual_seed(0)
    order = torch.randperm(split.frames, generator=generator)
    flips = engine.draw_flips("hflip", split.frames, generator)
    batches = engine.batches(order, batch, drop_last=False)
    first = batches[0]
    images, masks = engine.gather(split, "images", first, cpu), engine.gather(split, "masks", first, cpu).long()
    first_batch = time.perf_counter()
    step(images, masks)
    at_first = status()
    result = {"frames": split.frames, "load_s": loaded - started, "first_batch_s": first_batch - started,
              "first_step_s": time.perf_counter() - first_batch,
              "peak_rss_first_mib": at_first["VmHWM"] - base["VmRSS"], "base_rss_mib": base["VmRSS"]}
    if epoch:
        # Data time over the whole epoch (every batch gathered from the map, masks to int64, flips);
        # compute time over the first ``compute_batches`` steps, scaled to the epoch's batch count.
        data_s = compute_s = 0.0
        for number, index in enumerate(batches):
            t0 = time.perf_counter()
            positions = torch.arange(number * batch, number * batch + len(index))
            images, masks = engine.gather(split, "images", index, cpu), engine.gather(split, "masks", index, cpu).long()
            images, masks = engine.hflip(images, masks, flips[positions])
            t1 = time.perf_counter()
            data_s += t1 - t0
            if number < compute_batches:
                step(images, masks)
                compute_s += time.perf_counter() - t1
        end = status()
        result.update(epoch_data_s=data_s, epoch_compute_s=compute_s * len(batches) / min(compute_batches, len(batches)),
                      compute_batches_timed=min(compute_batches, len(batches)), batches=len(batches),
                      peak_rss_epoch_mib=end["VmHWM"] - base["VmRSS"],
                      rss_anon_end_mib=end["RssAnon"], rss_file_end_mib=end["RssFile"])
    return result


def cache_bytes(cache: Path) -> int:
    return sum(path.stat().st_size for path in cache.rglob("*") if path.is_file())


def load_average() -> str:
    return Path("/proc/loadavg").read_text().split(" ")[0]


def run_one(split: Path, cache: Path, args, label: str) -> dict:
    env = {**os.environ, "REGOLITH_CACHE_DIR": str(cache), "REGOLITH_CACHE_MAX_GB": "100", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "benchmarks.data_path", "--measure", str(split), "--batch", str(args.batch),
               "--compute-batches", str(args.compute_batches), *(["--epoch"] if label in args.epoch_in else [])]
    load = load_average()
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    if done.returncode != 0:
        raise SystemExit(f"{label} {split}: {done.stderr[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {"run": label, **result, "cache_mib": cache_bytes(cache) / 2**20, "load_avg_before": load,
            "load_avg_after": load_average()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="/tmp/regolith-data-path")
    parser.add_argument("--frames", type=int, nargs="+", default=[250, 1000, 3000])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--unique", type=int, default=100)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--compute-batches", type=int, default=10, help="steps whose compute is timed, scaled to the epoch")
    parser.add_argument("--epoch-in", nargs="*", default=["warm"], help="which runs also time one epoch")
    parser.add_argument("--out", default="data_path.json")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--epoch", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.measure, args.batch, args.epoch, args.compute_batches)))
        return
    root = Path(args.root)
    started = time.perf_counter()
    splits = build(root, args.frames, args.size, args.unique)
    print(f"built {', '.join(map(str, args.frames))} frames at {args.size}x{args.size} in "
          f"{time.perf_counter() - started:.0f} s", flush=True)
    rows = []
    for n, split in splits.items():
        cache = root / f"cache_{n}"
        shutil.rmtree(cache, ignore_errors=True)
        for label in ("cold", "warm"):
            rows.append({"N": n, **run_one(split, cache, args, label)})
            print(json.dumps(rows[-1]), flush=True)
            Path(args.out).write_text(json.dumps(rows, indent=1))
        shutil.rmtree(cache, ignore_errors=True)


if __name__ == "__main__":
    main()
