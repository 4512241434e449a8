"""Fetch a run's best checkpoint from the store into a folder that plain transformers can load.

    python -m regolith.pull models:/regolith-segformer@dr_750 -o DIR     # or a run id, or a run name
    mlflow run . --env-manager local -e pull -P run=dr_750 -P out=DIR

DIR then holds

    best.pt                   the checkpoint exactly as stored (load it with regolith.model.load_checkpoint)
    config.json               \\  a save_pretrained folder:
    model.safetensors         /   SegformerForSemanticSegmentation.from_pretrained(DIR), id2label regolith/rock/sky
    preprocessor_config.json  the checkpoint's preprocessing (resize to the training size, bilinear;
                              rescale 1/255, ImageNet mean/std): AutoImageProcessor.from_pretrained(DIR)
    source.json               where it came from: run, model version, variant, training-time IoU

The model predicts at 1/4 resolution; ``processor.post_process_semantic_segmentation(outputs,
target_sizes=[(H, W)])`` upsamples bilinearly to the image size and takes the argmax, exactly as
validation does. best.pt is loaded with the safe unpickler before anything is written, so a
checkpoint that would run code is refused and never reaches DIR.
"""

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import torch
from PIL import Image
from transformers import SegformerForSemanticSegmentation, SegformerImageProcessorPil

from regolith import Refused, files, model as segformer, names, photoset, refusals, store, track

FILES = (names.CHECKPOINT, "config.json", "model.safetensors", "preprocessor_config.json", "source.json")


def build_parser() -> argparse.ArgumentParser:
    """The run and ``--out`` are the MLproject ``pull`` parameters ``run`` and ``out``."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="run id, run name in the experiment, or models:/regolith-segformer@<variant>")
    parser.add_argument("-o", "--out", required=True, help="output folder; must be new or empty")
    parser.add_argument("--experiment", default="", help="experiment to look a run name up in; '' means the "
                                                          "active one (MLFLOW_EXPERIMENT_NAME, else Default)")
    return parser


def image_processor(preprocessing: dict, size: int) -> SegformerImageProcessorPil:
    """The checkpoint's own preprocessing as a HuggingFace image processor: resize, rescale, normalize.

    The resize is to the square ``regolith.photos`` fits a photo to (the training frames' long side,
    PIL bilinear as ``photoset.fit``), so ``pipeline("image-segmentation")`` predicts at the size
    the model was trained at rather than at each photo's own size (which measured about twice the
    rock share). A square photo is then fitted exactly as photos fits it; another shape is stretched,
    where photos letterboxes. The PIL backend needs no torchvision; its saved config names
    ``SegformerImageProcessor``, so AutoImageProcessor picks whichever backend the loading machine has.
    """
    return SegformerImageProcessorPil(do_resize=True, size={"height": size, "width": size},
                                      resample=Image.Resampling.BILINEAR, do_rescale=True,
                                      rescale_factor=preprocessing["rescale"], do_normalize=True,
                                      image_mean=list(preprocessing["mean"]), image_std=list(preprocessing["std"]),
                                      do_reduce_labels=False)


def save_pretrained(payload: dict, out_dir: Path, size: int):
    """Write the checkpoint's model and preprocessing in HuggingFace's layout, then check it loads back equal."""
    model = segformer.model_from_checkpoint(payload)
    model.save_pretrained(out_dir)
    image_processor(payload["preprocessing"], size).save_pretrained(out_dir)
    reloaded = SegformerForSemanticSegmentation.from_pretrained(out_dir).state_dict()
    differ = [key for key, tensor in payload["model"].items()
              if key not in reloaded or not torch.equal(reloaded[key], tensor)]
    if differ:
        raise Refused(f"{out_dir}: the saved model does not load back equal to best.pt ({len(differ)} tensors "
                        f"differ, e.g. {differ[0]})")


def publish(staging: Path, out_dir: Path):
    """The staged files into ``out_dir``, each whole or not at all; on a failure none of them stays.

    Each is copied to a fresh temporary file there, then renamed (``files.copy_atomic``), so a full
    disk never leaves a truncated best.pt that looks like a checkpoint, and the new files get the
    user's usual permissions.
    """
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise Refused(f"--out {out_dir}: cannot create it ({error.strerror})") from error
    written = []
    try:
        for name in FILES:
            files.copy_atomic(staging / name, out_dir / name, exclusive=True)
            written.append(out_dir / name)
    except Refused:
        for path in written:  # a folder with some of the files would pass for a pulled checkpoint
            path.unlink(missing_ok=True)
        raise


def earlier_pull(out_dir: Path) -> dict | None:
    """The ``source.json`` of a complete earlier pull in ``out_dir``, or None (other files, or a partial pull)."""
    if not all((out_dir / name).is_file() for name in FILES):
        return None
    try:
        held = json.loads((out_dir / "source.json").read_text())
    except (OSError, ValueError):
        return None
    return held if isinstance(held, dict) else None


def pull(args) -> dict:
    """Fetch, check, write; returns what ``source.json`` records."""
    out_dir = Path(args.out).resolve()
    if out_dir.exists() and not out_dir.is_dir():
        raise Refused(f"--out {out_dir}: exists and is not a folder; give a new or empty one")
    run = store.find_run(args.run, args.experiment)
    track.label_launcher_run(names.KIND_PULL, run, {names.PULLED_TO: out_dir})
    if any(out_dir.iterdir()) if out_dir.exists() else False:
        held = earlier_pull(out_dir)
        if held and held.get("run_id") == run["run_id"] and held.get("checkpoint") == run["checkpoint_uri"]:
            # The same pull again (a re-run script, a second `-e pull`): nothing to do, and nothing is overwritten.
            print(f"{out_dir} already holds {run['run_name']} ({run['run_id']}) from {run['checkpoint_uri']}; "
                  f"left as it is")
            return held
        what = (f"holds a pull of run {held.get('run_id')} ({held.get('checkpoint')})" if held
                else "exists and is not an empty folder")
        raise Refused(f"--out {out_dir}: {what}; give a new or empty one")
    # The safe unpickler refuses a checkpoint that would run code: nothing in it ran, nothing is written.
    with store.fetched_checkpoint(run) as (checkpoint, payload), \
            tempfile.TemporaryDirectory(prefix="regolith-pull-") as scratch:
        staging = Path(scratch)
        shutil.copy2(checkpoint, staging / names.CHECKPOINT)
        save_pretrained(payload, staging, photoset.training_size(run))
        source = {"run_id": run["run_id"], "run_name": run["run_name"], "ref": run["ref"],
                  "model_version": run["model_version"], "checkpoint": run["checkpoint_uri"],
                  "variant": run["tags"].get(names.VARIANT), "epoch": payload.get("epoch"),
                  "classes": payload.get("classes"), "validation": payload.get("metrics"),
                  "preprocessing": payload.get("preprocessing")}
        (staging / "source.json").write_text(json.dumps(source, indent=2) + "\n")
        publish(staging, out_dir)
    rock = (payload.get("metrics") or {}).get("iou_rock", float("nan"))
    print(f"{run['run_name']} ({run['run_id']}), epoch {payload.get('epoch')}, training-time rock-IoU {rock:.4f}, "
          f"from {run['checkpoint_uri']}")
    print(f"wrote {out_dir}: {', '.join(FILES)}")
    print(f"load it with SegformerForSemanticSegmentation.from_pretrained({str(out_dir)!r}) and "
          f"AutoImageProcessor.from_pretrained({str(out_dir)!r})")
    return source


def main(argv=None):
    with refusals():
        pull(build_parser().parse_args(argv))


if __name__ == "__main__":
    main()
