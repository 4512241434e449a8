"""What the operating curve and flip TTA cost, against a plain inference pass over the same frames and photos.

    python -m benchmarks.curve_bench [--frames 300] [--photos 21] [--size 512] [--batch 8] [--out curve_bench.json]

A benchmark, not a test: it prints figures and asserts nothing. It sits beside the package and uses only
its public functions. SegFormer-B0's architecture (random weights: the cost does not depend on them)
runs over ``--frames`` validation frames with masks (some 255) and ``--photos`` letterboxed photos at
``--size``, three ways, each a full pass as evaluate makes it:

(a) plain: logits, argmax, one confusion matrix per frame; the photos' argmax and rock shares;
(b) curve: (a) plus the rock margin counted into ``curve.EDGES`` bins per frame and photo, then the curve;
(c) tta=hflip: (b) with ``model.class_scores(..., tta="hflip")``: the image and its mirror.

It reports seconds per pass, (b)/(a) and (c)/(a), and the counting's own seconds inside (b).
"""

import argparse
import json
import time

import numpy as np
import torch
from transformers import SegformerConfig, SegformerForSemanticSegmentation

from regolith import CLASSES, curve, metrics, model as segformer, photoset


def inputs(frames: int, photos: int, size: int, seed: int = 0) -> tuple:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (frames, 3, size, size), dtype=torch.uint8, generator=generator)
    masks = torch.randint(0, 3, (frames, size, size), dtype=torch.uint8, generator=generator)
    masks[:, size // 3] = 255  # a horizon row of 255, as the rendered frames have
    photo_images = torch.randint(0, 256, (photos, 3, size, size), dtype=torch.uint8, generator=generator)
    valid = torch.ones(photos, size, size, dtype=torch.bool)
    valid[:, : size // 8] = valid[:, -size // 8:] = False  # letterbox bands: never counted
    return images, masks, photo_images, valid


@torch.no_grad()
def one_pass(model, data: tuple, batch: int, counting: bool, tta: str) -> dict:
    images, masks, photo_images, valid = data
    started, counted = time.perf_counter(), 0.0
    frame_counts, photo_counts, confusion = [], [], torch.zeros(len(CLASSES) + 1, len(CLASSES), dtype=torch.long)
    for start in range(0, len(images), batch):
        scores = segformer.class_scores(model, images[start:start + batch], "fp32", tta)
        for prediction, mask in zip(scores.argmax(1), masks[start:start + batch]):
            confusion += metrics.confusion_matrix(prediction, mask)
        if counting:
            tick = time.perf_counter()
            frame_counts.append(curve.frame_counts(curve.rock_margin(scores), masks[start:start + batch]))
            counted += time.perf_counter() - tick
    shares = []
    for start in range(0, len(photo_images), batch):
        scores = segformer.class_scores(model, photo_images[start:start + batch], "fp32", tta)
        shares += [photoset.class_shares(p, v)["rock"] for p, v in zip(scores.argmax(1), valid[start:start + batch])]
        if counting:
            tick = time.perf_counter()
            photo_counts.append(curve.photo_counts(curve.rock_margin(scores), valid[start:start + batch]))
            counted += time.perf_counter() - tick
    if counting:
        tick = time.perf_counter()
        curve.operating_curve(torch.cat(frame_counts).numpy(), torch.cat(photo_counts).numpy())
        counted += time.perf_counter() - tick
    return {"seconds": time.perf_counter() - started, "counting_seconds": counted,
            "iou_rock": metrics.iou_summary(confusion)["iou_rock"], "rock_share": float(np.mean(shares))}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--photos", type=int, default=21)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--out", default="curve_bench.json")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    config = SegformerConfig(num_labels=len(CLASSES))  # the defaults are mit-b0's architecture
    model = SegformerForSemanticSegmentation(config).eval()
    data = inputs(args.frames, args.photos, args.size)
    one_pass(model, tuple(x[: args.batch] for x in data), args.batch, True, "none")  # warm-up
    results = {name: one_pass(model, data, args.batch, counting, tta)
               for name, counting, tta in (("plain", False, "none"), ("curve", True, "none"),
                                           ("tta_hflip", True, "hflip"))}
    plain = results["plain"]["seconds"]
    summary = {**vars(args), "threads": torch.get_num_threads(), "torch": torch.__version__, "passes": results,
               "curve_over_plain": results["curve"]["seconds"] / plain,
               "counting_share_of_plain": results["curve"]["counting_seconds"] / plain,
               "tta_over_plain": results["tta_hflip"]["seconds"] / plain}
    for name, result in results.items():
        print(f"{name:10s} {result['seconds']:8.1f} s  ({(args.frames + args.photos) / result['seconds']:.2f} images/s)"
              f"  counting {result['counting_seconds']:.2f} s")
    print(f"curve / plain {summary['curve_over_plain']:.3f} (counting alone {summary['counting_share_of_plain']:.1%} "
          f"of the plain pass); tta=hflip / plain {summary['tta_over_plain']:.2f}")
    with open(args.out, "w") as handle:
        json.dump(summary, handle, indent=2)


if __name__ == "__main__":
    main()
