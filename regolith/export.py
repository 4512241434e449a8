"""A stored checkpoint as an ONNX file, checked against PyTorch on a split: ``python -m regolith.export``.

    python -m regolith.export models:/regolith-segformer@dr_750 --out DIR     # or a run id, or a run name
    mlflow run . --env-manager local -e export -P run=dr_750 -P out=DIR [-P split=DIR] [-P log_model=true]

DIR then holds

    model.onnx          images (uint8 RGB, N x 3 x H x W) -> logits (float32, N x 3 x H x W) and labels
                        (uint8, N x H x W: 0 regolith, 1 rock, 2 sky). The normalization, the model, the bilinear
                        upsampling to the input's size and the argmax are all in the graph: a deployer needs
                        onnxruntime, numpy and an image library, no PyTorch and no preprocessing code.
    preprocessing.json  what comes before the graph: the frame's side and how a photo is fitted to it
                        (letterbox or cover, as regolith.photos fits them), the sizes the graph takes, and
                        what the graph already does
    report.json         parity and speed, measured in this one process (below)

Batch, height and width are dynamic (torch.export first, whose shape guards fail loudly instead
of being narrowed in silence, then the ONNX conversion of its program); where the exporter
cannot keep height and width dynamic (frames under ``MIN_SIDE``, or a guard it cannot meet)
they are fixed at the checkpoint's size, and the report says so and why.

The report: on the run's validation split (or ``--split``), onnxruntime's logits against PyTorch
eager's (max absolute difference), the share of pixels whose class agrees (goal ``AGREEMENT``)
and the rock-IoU of each; the same at an odd size where the graph is dynamic; and onnxruntime's
CPU latency and throughput at the checkpoint's size, batch 1 and 8, against PyTorch eager in the
same process, interleaved rounds (medians). Everything is recorded on the source run in a new
``export/<UTC time>/`` folder (never overwriting), with ``export/*`` metrics and tags, and with
``--log-model true`` also as an MLflow onnx model of that run.

Exit status: 0 when the class maps agree, 2 on a parity miss (recorded on the run, naming the
numbers; DIR is not written) or an error: an export failure names the operator or the shape that
failed. Needs the ``onnx`` extra (``pip install -e '.[onnx]'``): without it, one line saying so.
"""

import argparse
import importlib.util
import json
import logging
import re
import shutil
import statistics
import tempfile
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch

from regolith import (CLASSES, ROCK, Refused, evaluate, metrics, model as segformer, names, photoset, provenance,
                      refusals, registry, store, track)

AGREEMENT = 0.9999  # the share of pixels whose class onnxruntime and PyTorch must agree on
MIN_SIDE, MAX_SIDE, MAX_BATCH = 64, 4096, 1024  # the dynamic graph's range; under 64 px the last stage's
# attention reduces a side to 1, a size torch.export specializes on
BATCHES = (1, 8)  # what the latency is timed at
EXTRA = ("onnx", "onnxruntime", "onnxscript")
INPUTS, OUTPUTS = ["images"], ["logits", "labels"]


class Segmenting(torch.nn.Module):
    """uint8 RGB images -> (logits at the images' own size, labels as uint8): the graph that is exported."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, images):
        logits = segformer.logits_at_mask_size(self.net, images)
        return logits, logits.argmax(1).to(torch.uint8)


def build_parser() -> argparse.ArgumentParser:
    """The flags are the MLproject ``export`` parameters, kebab-case, with the same defaults."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="run id, run name in the experiment, or models:/regolith-segformer@<variant>")
    parser.add_argument("-o", "--out", required=True, help="output folder; must be new or empty")
    parser.add_argument("--split", default="", help="split to check parity on; '' means the run's validation split")
    parser.add_argument("--rounds", type=int, default="5", help="timed rounds per batch size (medians reported)")
    parser.add_argument("--log-model", default="false", choices=["true", "false"],
                        help="also log model.onnx as an MLflow onnx model of the source run")
    parser.add_argument("--experiment", default="", help="experiment to look a run name up in; '' means the "
                                                          "active one (MLFLOW_EXPERIMENT_NAME, else Default)")
    return parser


def check_extra():
    """The exporter and the runtime are an optional extra: without them, say how to get them."""
    missing = [name for name in EXTRA if importlib.util.find_spec(name) is None]
    if missing:
        raise Refused(f"ONNX export needs {', '.join(missing)} (the onnx extra): pip install -e '.[onnx]'")


def export(args) -> dict:
    """Export, check, time, record; returns the report."""
    check_extra()
    if args.rounds < 1:
        raise Refused(f"rounds={args.rounds}: expected a positive number of timed rounds")
    out_dir = Path(args.out).resolve()
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise Refused(f"--out {out_dir}: exists and is not an empty folder; give a new or empty one")
    run = store.find_run(args.run, args.experiment)
    track.label_launcher_run(names.KIND_EXPORT, run)
    with store.fetched_checkpoint(run) as (_, payload):
        graph = Segmenting(segformer.model_from_checkpoint(payload)).eval()
    size = photoset.training_size(run)
    split = evaluate.split_to_score(args, run)
    with tempfile.TemporaryDirectory(prefix="regolith-export-") as scratch:
        staging = Path(scratch)
        onnx_info = to_onnx(graph, size, staging / names.ONNX_FILE)
        check_sizes(split, onnx_info["dynamic"])
        session = ort_session(staging / names.ONNX_FILE)
        report = {"run_id": run["run_id"], "run_name": run["run_name"], "ref": run["ref"],
                  "checkpoint": run["checkpoint_uri"], "checkpoint_epoch": payload.get("epoch"), "onnx": onnx_info,
                  **split_parity(session, graph, split, run["tags"]),
                  "odd_size": odd_size_parity(session, graph, size) if onnx_info["dynamic"]["height"] else None,
                  "latency": latency(session, graph, size, args.rounds),
                  "versions": versions(), "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        report["check"] = verdict(report)
        (staging / names.PREPROCESSING_FILE).write_text(json.dumps(preprocessing(payload, size, onnx_info), indent=2)
                                                        + "\n")
        record(run, report, staging, args.log_model == "true")
        report_lines(report)
        if report["check"] != "pass":
            raise Refused(f"parity miss: {report['check']}; recorded on run {run['run_id']} in "
                          f"{report['artifacts']}/, {out_dir} not written")
        out_dir.mkdir(parents=True, exist_ok=True)
        for name in (names.ONNX_FILE, names.PREPROCESSING_FILE, names.EXPORT_REPORT):
            shutil.copyfile(staging / name, out_dir / name)
    print(f"wrote {out_dir}: {names.ONNX_FILE}, {names.PREPROCESSING_FILE}, {names.EXPORT_REPORT}")
    return report


# ---- the export ------------------------------------------------------------------------------------

def to_onnx(module: torch.nn.Module, size: int, path: Path) -> dict:
    """Export ``module`` (uint8 N x 3 x size x size in) to ``path``; what the graph takes and how it came out.

    Dynamic batch, height and width from ``MIN_SIDE`` to ``MAX_SIDE``; height and width fixed at
    ``size`` where they cannot be dynamic (said in ``dynamic["why_fixed"]``). An export that fails
    either way is refused naming the operator or shape (``explain``).
    """
    import onnx

    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    # A sample batch of 2: torch.export specializes a dimension whose sample is 1.
    sample = torch.zeros(2, 3, size, size, dtype=torch.uint8)
    why_fixed = None
    if size < MIN_SIDE:
        why_fixed = (f"the checkpoint's frames are {size} px; the dynamic graph needs sides of {MIN_SIDE} px or more "
                     f"(under that SegFormer's last stage reduces a side to 1, a size torch.export specializes on)")
    started = time.perf_counter()
    program = None
    if why_fixed is None:
        side = {"min": MIN_SIDE, "max": MAX_SIDE}
        shapes = {0: batch, 2: torch.export.Dim("height", **side), 3: torch.export.Dim("width", **side)}
        try:
            program = _program(module, sample, shapes)
        except Refused as error:
            why_fixed = f"dynamic height and width failed: {error}"
    if program is None:
        program = _program(module, sample, {0: batch})
    try:
        with _quiet():
            torch.onnx.export(program, f=str(path), dynamo=True, external_data=False, input_names=INPUTS,
                              output_names=OUTPUTS, verbose=False)
    except Exception as error:
        raise Refused(f"ONNX conversion failed: {explain(error)}") from error
    loaded = onnx.load(str(path))
    # torch.onnx names the dynamic dimensions by their symbols (s14); a deployer reads batch, height, width
    symbols = {dim.dim_param: label for dim, label in zip(loaded.graph.input[0].type.tensor_type.shape.dim,
                                                          ("batch", None, "height", "width")) if dim.dim_param}
    for value in [*loaded.graph.input, *loaded.graph.output]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in symbols:  # a fixed dimension is left alone: setting dim_param would clear it
                dim.dim_param = symbols[dim.dim_param]
    onnx.checker.check_model(loaded)
    onnx.save(loaded, str(path))
    dims = {value.name: [dim.dim_param or dim.dim_value for dim in value.type.tensor_type.shape.dim]
            for value in [*loaded.graph.input, *loaded.graph.output]}
    return {"file": names.ONNX_FILE, "bytes": path.stat().st_size, "seconds": time.perf_counter() - started,
            "opset": next(o.version for o in loaded.opset_import if o.domain in ("", "ai.onnx")),
            "exporter": f"torch.export (non-strict) + torch.onnx dynamo, torch {torch.__version__}", "dims": dims,
            "dynamic": {"batch": [1, MAX_BATCH], "height": None if why_fixed else [MIN_SIDE, MAX_SIDE],
                        "width": None if why_fixed else [MIN_SIDE, MAX_SIDE], "fixed_side": size if why_fixed else None,
                        "why_fixed": why_fixed}}


def check_sizes(split, dynamic: dict):
    """The split's frames must be a size the graph takes: its fixed side, or within the dynamic range."""
    height, width = split.image_size
    if dynamic["height"] is None:
        if (height, width) != (dynamic["fixed_side"],) * 2:
            raise Refused(f"split {split.path}: frames of {width}x{height}, but the graph's height and width are "
                          f"fixed at {dynamic['fixed_side']} ({dynamic['why_fixed']}); give a split of such frames")
    elif not (dynamic["height"][0] <= min(height, width) and max(height, width) <= dynamic["height"][1]):
        raise Refused(f"split {split.path}: frames of {width}x{height}, outside the {dynamic['height'][0]} to "
                      f"{dynamic['height'][1]} px the graph takes; give a split of such frames")


@contextmanager
def _quiet():
    """What torch 2.13 says at every export and that is not about this graph: its own pytree deprecation, and
    that torchvision's operators (none here) are skipped."""
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
            yield
    finally:
        registration.setLevel(level)


def _program(module, sample, shapes: dict):
    try:
        with _quiet():
            return torch.export.export(module, (sample,), dynamic_shapes={"images": shapes}, strict=False)
    except Exception as error:
        raise Refused(f"torch.export failed: {explain(error)}") from error


_OPERATOR = re.compile(r"(?:torch\.ops\.)?aten[.:]{1,2}[A-Za-z_0-9]+(?:\.[A-Za-z_0-9]+)?")
_VIOLATED = re.compile(r"Constraints violated \(([^)]*)\)")
_FIXES = re.compile(r"Suggested fixes:[ \t]*\n((?:[ \t]+\S[^\n]*\n?)+)")


def explain(error: BaseException) -> str:
    """One line from an export failure's exception chain: the operator(s) and dimension(s) it names, the root cause."""
    chain, seen = [], set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        chain.append(error)
        error = error.__cause__ or error.__context__
    text = "\n".join(f"{type(link).__name__}: {link}" for link in chain)
    operators = sorted({match.replace("torch.ops.", "") for match in _OPERATOR.findall(text)})
    violated = sorted({dim.strip() for found in _VIOLATED.findall(text) for dim in found.split(",")})
    fixes = _FIXES.search(text)
    root = chain[-1]
    parts = [f"{type(chain[0]).__name__}"]
    if operators:
        parts.append("operator " + ", ".join(operators[:5]))
    if violated:
        parts.append("dimension " + ", ".join(violated) + " cannot be dynamic over the range asked")
    if fixes:
        parts.append("torch suggests " + " ".join(fixes.group(1).split())[:300])
    lines = str(root).strip().splitlines() or [""]
    parts.append(f"root cause {type(root).__name__}: {lines[0][:300]}")
    return "; ".join(parts)


def ort_session(path: Path):
    """onnxruntime on the CPU, every core, its threads sleeping between runs.

    By default they spin for a while after each run, which takes the cores from the PyTorch call
    timed right after it (on a 2-core machine, the tiny test model's eager batch of 8 took 390 to
    790 ms after a spinning session and 60 ms after a sleeping one).
    """
    import onnxruntime
    options = onnxruntime.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


# ---- the checks ------------------------------------------------------------------------------------

def compare(session, graph, images: torch.Tensor) -> dict:
    """onnxruntime's and PyTorch eager's logits and labels of one batch of uint8 images."""
    logits, labels = session.run(None, {INPUTS[0]: images.numpy()})
    with torch.inference_mode():
        expected_logits, expected_labels = graph(images)
    return {"onnx_logits": torch.from_numpy(logits), "onnx_labels": torch.from_numpy(labels),
            "torch_logits": expected_logits, "torch_labels": expected_labels}


def split_parity(session, graph, split, tags: dict, batch: int = 8) -> dict:
    """Parity over a whole split, batch by batch: max |logit difference|, class agreement, rock-IoU of each."""
    worst, scale, agree, pixels = 0.0, 0.0, 0, 0
    confusion = {"onnxruntime": 0, "pytorch": 0}
    for start in range(0, split.frames, batch):
        got = compare(session, graph, split.images[start:start + batch])
        masks = split.masks[start:start + batch]
        worst = max(worst, (got["onnx_logits"] - got["torch_logits"]).abs().max().item())
        scale = max(scale, got["torch_logits"].abs().max().item())
        agree += int((got["onnx_labels"] == got["torch_labels"]).sum())
        pixels += got["torch_labels"].numel()
        confusion["onnxruntime"] += metrics.confusion_matrix(got["onnx_labels"], masks)
        confusion["pytorch"] += metrics.confusion_matrix(got["torch_labels"], masks)
    _, relation = evaluate.same_split(split, tags)
    return {"split": str(split.path), "split_digest": split.digest, "frames": split.frames, "split_relation": relation,
            "parity": {"max_abs_logit_diff": worst, "max_abs_logit": scale, "class_agreement": agree / pixels,
                       "pixels": pixels, "goal": AGREEMENT,
                       "iou_rock": {engine: metrics.iou_per_class(counts)[ROCK].item()
                                    for engine, counts in confusion.items()}}}


def odd_size_parity(session, graph, size: int) -> dict:
    """The dynamic graph at a size it was not traced at (odd, not square, not a multiple of 32): it must agree too."""
    shape = (2, 3, size + 13, size + 29)
    images = torch.randint(0, 256, shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    got = compare(session, graph, images)
    return {"shape": list(shape),
            "max_abs_logit_diff": (got["onnx_logits"] - got["torch_logits"]).abs().max().item(),
            "class_agreement": (got["onnx_labels"] == got["torch_labels"]).double().mean().item()}


def verdict(report: dict) -> str:
    """pass, or what missed the agreement goal, with its numbers."""
    misses = []
    parity = report["parity"]
    if parity["class_agreement"] < AGREEMENT:
        misses.append(f"class maps agree on {parity['class_agreement']:.6%} of {parity['pixels']} pixels of "
                      f"{report['split']} (goal {AGREEMENT:.2%}; max |logit difference| "
                      f"{parity['max_abs_logit_diff']:.3g})")
    odd = report.get("odd_size")
    if odd and odd["class_agreement"] < AGREEMENT:
        misses.append(f"at {odd['shape']} the class maps agree on {odd['class_agreement']:.6%} (goal {AGREEMENT:.2%}; "
                      f"max |logit difference| {odd['max_abs_logit_diff']:.3g})")
    return "; ".join(misses) or "pass"


def latency(session, graph, size: int, rounds: int) -> dict:
    """onnxruntime and PyTorch eager at size x size, batch 1 and 8: median and fastest of ``rounds`` interleaved
    calls."""
    generator = torch.Generator().manual_seed(1)
    timed = {}
    for batch in BATCHES:
        images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, generator=generator)
        feed = {INPUTS[0]: images.numpy()}
        calls = {"onnxruntime": lambda: session.run(None, feed), "pytorch": lambda: graph(images)}
        seconds = {engine: [] for engine in calls}
        with torch.inference_mode():
            for call in calls.values():
                call()  # warm-up
            for _ in range(rounds):  # interleaved: a busy moment of a shared machine hits both
                for engine, call in calls.items():
                    started = time.perf_counter()
                    call()
                    seconds[engine].append(time.perf_counter() - started)
        timed[f"batch_{batch}"] = {
            **{engine: {"median_ms": 1e3 * statistics.median(times), "fastest_ms": 1e3 * min(times),
                        "images_per_s": batch / statistics.median(times)} for engine, times in seconds.items()},
            "speedup": statistics.median(seconds["pytorch"]) / statistics.median(seconds["onnxruntime"])}
    return {"size": size, "device": "cpu", "rounds": rounds, "torch_threads": torch.get_num_threads(), **timed}


def versions() -> dict:
    from importlib import metadata
    return {**provenance.library_versions(), **{f"version.{name}": metadata.version(name) for name in EXTRA}}


def preprocessing(payload: dict, size: int, onnx_info: dict) -> dict:
    """preprocessing.json: what a deployer does before the graph, and what the graph does itself."""
    pre = payload["preprocessing"]
    return {
        "input": {"name": INPUTS[0], "dtype": "uint8", "layout": "N x 3 x H x W", "channels": "RGB, 0..255",
                  "batch": onnx_info["dynamic"]["batch"],
                  "height": onnx_info["dynamic"]["height"] or onnx_info["dynamic"]["fixed_side"],
                  "width": onnx_info["dynamic"]["width"] or onnx_info["dynamic"]["fixed_side"]},
        "frame": {"side": size, "fit": "letterbox", "fits": {
            "letterbox": "scale the long side to the frame's side (bilinear, PIL's ImageOps.pad), centre, pad black; "
                         "the padding is not the photo's: leave it out of class shares",
            "cover": "scale the short side to the frame's side and crop the centre square (PIL's ImageOps.fit)"}},
        "in_graph": {"rescale": pre["rescale"], "mean": pre["mean"], "std": pre["std"],
                     "upsample": "bilinear (align_corners=False) from 1/4 resolution to the input's H x W",
                     "labels": "argmax over the classes"},
        "outputs": {"logits": "float32, N x 3 x H x W", "labels": "uint8, N x H x W"},
        "classes": dict(enumerate(CLASSES)),
    }


# ---- recording --------------------------------------------------------------------------------------

def record(run: dict, report: dict, staging: Path, log_model: bool):
    """On the source run, never overwriting: a new export/<UTC time>/ folder, the export/* metrics and tags."""
    folder, number = store.fresh_folder(run["run_id"], names.EXPORT)
    report.update(artifacts=folder, export=number)
    if log_model and report["check"] == "pass":
        report["mlflow_model"] = registry.log_onnx_model(run["run_id"], staging / names.ONNX_FILE, report["onnx"]["dims"])
    (staging / names.EXPORT_REPORT).write_text(json.dumps(report, indent=2) + "\n")
    track.log_artifacts_to_run(run["run_id"], staging, folder)
    track.log_to_run(run["run_id"], {names.EXPORT_AGREEMENT: report["parity"]["class_agreement"],
                                     names.EXPORT_LOGIT_DIFF: report["parity"]["max_abs_logit_diff"]},
                     {names.EXPORT_CHECK: report["check"][:4000], names.EXPORT_ARTIFACTS: folder}, step=number)


def report_lines(report: dict):
    onnx_info, parity = report["onnx"], report["parity"]
    dynamic = onnx_info["dynamic"]
    sides = (f"height and width {dynamic['height'][0]}..{dynamic['height'][1]}" if dynamic["height"]
             else f"height and width fixed at {dynamic['fixed_side']} ({dynamic['why_fixed']})")
    print(f"{report['run_name']} ({report['run_id'][:8]}), epoch {report['checkpoint_epoch']}, from "
          f"{report['checkpoint']}: {names.ONNX_FILE} {onnx_info['bytes'] / 2 ** 20:.1f} MiB, "
          f"opset {onnx_info['opset']}, "
          f"batch 1..{dynamic['batch'][1]}, {sides}; exported in {onnx_info['seconds']:.1f}s")
    print(f"parity on {report['split']} ({report['frames']} frames, {report['split_relation']}): max |logit "
          f"difference| {parity['max_abs_logit_diff']:.3g} (logits up to {parity['max_abs_logit']:.3g}), class maps "
          f"agree on {parity['class_agreement']:.4%} of {parity['pixels']} pixels, rock-IoU onnxruntime "
          f"{parity['iou_rock']['onnxruntime']:.4f} / PyTorch {parity['iou_rock']['pytorch']:.4f}")
    if report["odd_size"]:
        odd = report["odd_size"]
        print(f"at {'x'.join(map(str, odd['shape']))}: max |logit difference| {odd['max_abs_logit_diff']:.3g}, "
              f"class maps agree on {odd['class_agreement']:.4%}")
    timed = report["latency"]
    for batch in BATCHES:
        row = timed[f"batch_{batch}"]
        print(f"batch {batch} at {timed['size']}x{timed['size']} on the CPU (median of {timed['rounds']}): onnxruntime "
              f"{row['onnxruntime']['median_ms']:.1f} ms ({row['onnxruntime']['images_per_s']:.2f} img/s), PyTorch "
              f"eager {row['pytorch']['median_ms']:.1f} ms ({row['pytorch']['images_per_s']:.2f} img/s): "
              f"x{row['speedup']:.2f}")
    print(f"check: {report['check']}; recorded on run {report['run_id']} in {report['artifacts']}/"
          + (f", and as {report['mlflow_model']}" if report.get("mlflow_model") else ""))


def main(argv=None):
    with refusals():
        export(build_parser().parse_args(argv))


if __name__ == "__main__":
    main()
