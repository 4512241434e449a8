"""What the levers cost: the augmentations against a training step, and the B2 encoder against B0.

    python -m benchmarks.levers_bench [--size 512] [--batch 4] [--steps 3] [--out levers-bench.json]

A benchmark, not a timed test: it prints figures and asserts nothing. It reaches the package only
through public functions, on random frames (the cost does not depend on what the pixels show):

- **augment cost**: ``augment.draw`` and ``augment.apply`` of every choice on one batch, against one
  training step of the engine (``engine.train_epoch`` over that batch, B0, fp32 on the CPU, the step
  timed for B0 below), both at ``--size``; the ratio is what the augmentations add to a step.
- **B0 against B2**: training and inference images/s of randomly initialized B0 and B2
  (``model.size_config``: the hub's depths and widths and the paper's decoder widths; the hub is not
  needed), through the same engine step and ``model.predict``, with their parameters and FLOPs.

Each figure is the median of ``--steps`` timed repeats after one warm-up. Timings move with the
machine's load; the ratios, taken in one run, move less.
"""

import argparse
import json
import statistics
import time
from types import SimpleNamespace

import torch

from regolith import augment, engine, model as segformer

EVERY = "hflip,gray,photometric,noise,blur"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.levers_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    for flag, kind, default, text in (("--size", int, 512, "frame width and height"),
                                      ("--batch", int, 4, "frames per step"),
                                      ("--steps", int, 3, "timed repeats of each figure (after one warm-up)"),
                                      ("--out", str, "levers-bench.json", "where the figures are written as JSON")):
        parser.add_argument(flag, type=kind, default=default, help=text)
    return parser


def frames(batch: int, size: int) -> SimpleNamespace:
    generator = torch.Generator().manual_seed(0)
    return SimpleNamespace(images=torch.randint(0, 256, (batch, 3, size, size), generator=generator, dtype=torch.uint8),
                           masks=torch.randint(0, 3, (batch, size, size), generator=generator, dtype=torch.uint8),
                           frames=batch)


def median_seconds(work, repeats: int) -> float:
    work()  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def step_seconds(net, split, repeats: int) -> float:
    """One engine training step over the whole batch, as train.py takes it (fp32 on the CPU)."""
    device = torch.device("cpu")
    optimizer = engine.make_optimizer(net, 6e-5, engine.WEIGHT_DECAY, device)
    weights = torch.ones(3)
    generator = torch.Generator().manual_seed(0)

    def work():
        engine.train_epoch(net, split, torch.arange(split.frames), batch=split.frames, class_weights=weights,
                           optimizer=optimizer, lr_at=lambda step: 6e-5, step=0, precision="fp32", device=device,
                           augmentation=augment.draw("none", split.frames, generator))
    return median_seconds(work, repeats)


def augment_seconds(split, repeats: int) -> float:
    generator = torch.Generator().manual_seed(0)

    def work():
        draws = augment.draw(EVERY, split.frames, generator)
        augment.apply(split.images, split.masks, augment.batch_draws(draws, torch.arange(split.frames), 0, "cpu"))
    return median_seconds(work, repeats)


def sizes(split, args) -> dict:
    figures = {}
    for size in ("b0", "b2"):
        torch.manual_seed(0)
        net = segformer.random_init(segformer.size_config(size))
        footprint = segformer.footprint(net, (args.size, args.size))
        train_s = step_seconds(net, split, args.steps)
        infer_s = median_seconds(lambda: segformer.predict(net, split.images, "fp32", torch.device("cpu"),
                                                           batch=split.frames), args.steps)
        figures[size] = {"parameters": footprint["parameters"], "gflops_per_frame": footprint["flops"] / 1e9,
                         "train_img_s": split.frames / train_s, "infer_img_s": split.frames / infer_s}
        print(f"{size}: {footprint['parameters'] / 1e6:.1f} M parameters, {footprint['flops'] / 1e9:.1f} GFLOPs/frame; "
              f"train {figures[size]['train_img_s']:.2f} img/s, inference {figures[size]['infer_img_s']:.2f} img/s",
              flush=True)
    figures["b2_over_b0"] = {key: figures["b2"][key] / figures["b0"][key] for key in ("train_img_s", "infer_img_s")}
    return figures


def main(argv=None):
    args = build_parser().parse_args(argv)
    split = frames(args.batch, args.size)
    alone = augment_seconds(split, args.steps)
    print(f"augment ({EVERY}) on {args.batch} frames of {args.size}x{args.size}: {alone * 1000:.1f} ms", flush=True)
    results = {"size": args.size, "batch": args.batch, "threads": torch.get_num_threads(),
               "encoders": sizes(split, args)}
    step = args.batch / results["encoders"]["b0"]["train_img_s"]
    results["augment"] = {"choices": EVERY, "augment_s": alone, "b0_step_s": step, "share_of_step": alone / step}
    print(f"a B0 training step {step:.2f} s: the augmentations are {alone / step:.1%} of it")
    ratio = results["encoders"]["b2_over_b0"]
    print(f"B2 / B0: training {ratio['train_img_s']:.2f}x the img/s, inference {ratio['infer_img_s']:.2f}x")
    with open(args.out, "w") as out:
        json.dump(results, out, indent=2)


if __name__ == "__main__":
    main()
