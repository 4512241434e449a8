"""SegFormer with a fresh 3-class head, its input preprocessing, the encoder check, and the ``best.pt`` format.

The encoder comes from ``pretrained``: a hub id ``nvidia/mit-b0`` to ``nvidia/mit-b5`` or a local
directory in the hub's layout (``config.json`` + ``model.safetensors`` or ``pytorch_model.bin``).
The hub's mit-b0 stores the legacy weight names (``segformer.encoder.block.…``), which
transformers 5 renames on load; if a rename ever misses, the encoder would silently start
random and every result would be wrong, so ``load_pretrained`` refuses any checkpoint that
does not supply every encoder weight, and then compares every encoder tensor by value with the
tensor in the checkpoint file itself, under transformers' own renaming: a clean loading report
is not proof (huggingface/transformers#46620 reports silent random init with one).
"""

import json
import math
import os
import pickle
import stat
from pathlib import Path

import torch
import torch.nn.functional as F
import transformers
from huggingface_hub import try_to_load_from_cache
from safetensors.torch import load_file
from transformers import SegformerConfig, SegformerForSemanticSegmentation
from transformers import conversion_mapping as conversion, core_model_loading as loading

from regolith import CLASSES, Refused, names

# SegformerImageProcessor's defaults (ImageNet statistics), which nvidia/mit-b0 was trained with.
# Every best.pt records them, and everything that feeds the model (training, evaluate, photos,
# the pulled HuggingFace processor) normalizes by them.
PREPROCESSING = {"rescale": 1 / 255, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
ID2LABEL = dict(enumerate(CLASSES))
LABEL2ID = {name: i for i, name in ID2LABEL.items()}
ENCODER_PREFIX = "segformer."
# The MiT encoder sizes of the SegFormer paper (Xie et al. 2021, table 6), as the hub's nvidia/mit-b0..b5
# configs give them: blocks per stage and channels per stage. Every size has 1, 2, 5, 8 heads per stage.
MIT_SIZES = {"b0": ([2, 2, 2, 2], [32, 64, 160, 256]), "b1": ([2, 2, 2, 2], [64, 128, 320, 512]),
             "b2": ([3, 4, 6, 3], [64, 128, 320, 512]), "b3": ([3, 4, 18, 3], [64, 128, 320, 512]),
             "b4": ([3, 8, 27, 3], [64, 128, 320, 512]), "b5": ([3, 6, 40, 3], [64, 128, 320, 512])}
# The paper's all-MLP decoder width per size: 256 channels for B0 and B1, 768 from B2 on. The hub's
# nvidia/mit-bN configs are ImageNet classifiers and all say 256, so the fresh head takes it from here.
DECODER_WIDTH = {"b0": 256, "b1": 256, "b2": 768, "b3": 768, "b4": 768, "b5": 768}
CUSTOM_SIZE = names.CUSTOM_ENCODER  # none of the paper's shapes (a test's tiny one): its own config's head
# What evaluate and pull read from every best.pt (``checkpoint`` writes these and more).
CHECKPOINT_KEYS = {"model", "config", "classes", "preprocessing"}
HEAD_WEIGHT = "decode_head.classifier.weight"  # its first dimension is the number of classes the head predicts
PRECISIONS = ("bf16", "fp32")


def encoder_size(config) -> str:
    """b0 .. b5 where the encoder's depths and widths are one of the paper's sizes, else ``custom``."""
    shape = (list(config.depths), list(config.hidden_sizes))
    return next((size for size, known in MIT_SIZES.items() if known == shape), CUSTOM_SIZE)


def size_config(size: str = "b0") -> SegformerConfig:
    """The config of MiT size ``size`` with its paper decoder width (a B2 without the hub, for instance)."""
    if size not in MIT_SIZES:
        raise Refused(f"encoder size {size!r}: expected one of {', '.join(MIT_SIZES)}")
    depths, widths = MIT_SIZES[size]
    return SegformerConfig(depths=depths, hidden_sizes=widths, decoder_hidden_size=DECODER_WIDTH[size])


def footprint(model, image_size: tuple) -> dict:
    """The model's parameter counts and its forward FLOPs on one frame of ``image_size`` (H, W).

    FLOPs by ``torch.utils.flop_counter`` (matmuls and convolutions, 2 per multiply-add), counted
    on a blank frame in eval mode, so nothing the run draws is touched.
    """
    from torch.utils.flop_counter import FlopCounterMode
    mode, device = model.training, next(model.parameters()).device
    model.eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(pixel_values=torch.zeros(1, 3, *image_size, device=device))
    model.train(mode)
    return {"parameters": sum(p.numel() for p in model.parameters()),
            "encoder_parameters": sum(p.numel() for n, p in model.named_parameters() if n.startswith(ENCODER_PREFIX)),
            "flops": counter.get_total_flops()}


def random_init(config: SegformerConfig | None = None) -> SegformerForSemanticSegmentation:
    """SegFormer with every weight random; the default config is the B0 size."""
    config = config or SegformerConfig()
    config.num_labels, config.id2label, config.label2id = len(CLASSES), ID2LABEL, LABEL2ID
    return SegformerForSemanticSegmentation(config)


def looks_like_path(pretrained: str) -> bool:
    """A local directory, not a hub id: a hub id is ``name`` or ``namespace/name``, never ./, / or ~."""
    return (pretrained.startswith((".", "/", "~")) or pretrained.count("/") > 1
            or any(sep in pretrained for sep in (os.sep, os.altsep) if sep and sep != "/"))


def check_pretrained(pretrained: str):
    """Refuse a ``pretrained`` that is plainly a path but no directory, before the hub is asked about it."""
    if looks_like_path(pretrained) and not Path(pretrained).is_dir():
        what = "not a directory" if Path(pretrained).exists() else "no such directory"
        hint = " (~ is not expanded here; give the full path)" if pretrained.startswith("~") else ""
        raise Refused(f"pretrained={pretrained!r}: {what}{hint}; expected a local directory with config.json and "
                      f"model weights, a hub id such as nvidia/mit-b0, or 'none' for random init")


def load_pretrained(pretrained: str) -> tuple:
    """Encoder from ``pretrained``, fresh 3-class head; returns (model, the encoder tensors loaded).

    Refuses, naming them, any encoder weight the checkpoint lacked or had in another shape.
    """
    check_pretrained(pretrained)
    # transformers' own load report lists the fresh head as MISSING, which reads like a fault;
    # the check below is the one that matters, so its report is kept quiet.
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        # The head's width from the encoder's size (its input widths follow the encoder's config by itself).
        size = encoder_size(SegformerConfig.from_pretrained(pretrained))
        head = {"decoder_hidden_size": DECODER_WIDTH[size]} if size in DECODER_WIDTH else {}
        model, info = SegformerForSemanticSegmentation.from_pretrained(
            pretrained, num_labels=len(CLASSES), id2label=ID2LABEL, label2id=LABEL2ID,
            ignore_mismatched_sizes=True, output_loading_info=True, **head)
    except pickle.UnpicklingError as error:  # torch's own text advises weights_only=False: never repeated here
        raise Refused(f"pretrained={pretrained!r}: its weights file holds a pickle that the safe unpickler refuses "
                      f"(it would run code or build objects other than tensors; nothing in it was executed). Use "
                      f"model.safetensors weights, or 'none' for random init") from error
    except Exception as error:  # OSError for a missing file; a bad config, ...
        raise Refused(
            f"pretrained={pretrained!r}: could not load it ({type(error).__name__}: {_first_line(error)}). Give a hub "
            f"id that is reachable or cached, a local directory with config.json and model weights, or 'none' for "
            f"random init") from error
    finally:
        transformers.logging.set_verbosity(verbosity)
    missing = sorted(k for k in info["missing_keys"] if k.startswith(ENCODER_PREFIX))
    mismatched = sorted(k for k, *_ in info["mismatched_keys"] if k.startswith(ENCODER_PREFIX))
    if missing or mismatched:
        names = [f"{k} (missing)" for k in missing] + [f"{k} (shape differs)" for k in mismatched]
        raise Refused(
            f"pretrained={pretrained!r}: {len(names)} encoder weight(s) did not load from the checkpoint, "
            f"so the encoder would start partly random: " + ", ".join(names[:10])
            + (" ..." if len(names) > 10 else ""))
    encoder_keys = check_encoder_values(pretrained, model)
    return model, len(encoder_keys)


def _first_line(error: Exception) -> str:
    lines = str(error).strip().splitlines()
    return (lines[0][:300] if lines else "") or "no message"


# The files from_pretrained reads weights from, in its own order of preference.
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def weight_file(pretrained: str) -> Path | None:
    """The weights file from_pretrained read: in the local directory, or in the hub cache it resolved."""
    for name in WEIGHT_FILES:
        if Path(pretrained).is_dir():
            found = Path(pretrained) / name
            if found.is_file():
                return found
        else:
            cached = try_to_load_from_cache(pretrained, name)
            if isinstance(cached, str):
                return Path(cached)
    return None


def file_tensors(path: Path) -> dict:
    """Every tensor of a safetensors or ``.bin`` file (or of the shards an index names), by its stored name."""
    if path.name.endswith(".index.json"):
        shards = sorted(set(json.loads(path.read_text())["weight_map"].values()))
        return {k: v for shard in shards for k, v in file_tensors(path.parent / shard).items()}
    if path.suffix == ".safetensors":
        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


def current_names(model, stored: list) -> dict:
    """Stored name -> the model's name for it, by transformers' own load-time renaming (legacy names included)."""
    renamings = conversion.get_model_conversion_mapping(model)
    renames = [r for r in renamings if isinstance(r, loading.WeightRenaming)]
    converters = [r for r in renamings if not isinstance(r, loading.WeightRenaming)]
    state = model.state_dict()
    return {key: loading.rename_source_key(key, renames, converters, model.base_model_prefix, state)[0]
            for key in stored}


def _same_tensor(loaded, stored) -> bool:
    """Equal in shape and every value, NaN equal to NaN (a checkpoint may hold NaNs; the check is of loading)."""
    return loaded.shape == stored.shape and bool(torch.isclose(loaded, stored, rtol=0, atol=0, equal_nan=True).all())


def check_encoder_values(pretrained: str, model) -> list:
    """Refuse unless every encoder tensor equals the one tensor the checkpoint file holds for it; returns their names.

    Absent from ``missing_keys`` is not enough: a file that holds a tensor under both its legacy and
    its current name, with other values, loads one and drops the other without a word, and a loader
    that re-initializes after loading reports nothing either. The file is read again and compared.
    """
    path = weight_file(pretrained)
    if path is None:
        raise Refused(f"pretrained={pretrained!r}: found none of {', '.join(WEIGHT_FILES)} to check the loaded "
                      f"encoder against")
    stored = file_tensors(path)
    by_model_name = {}
    for key, model_key in current_names(model, list(stored)).items():
        by_model_name.setdefault(model_key, []).append(key)
    state = model.state_dict()
    encoder_keys = [k for k in state if k.startswith(ENCODER_PREFIX)]
    wrong = []
    for key in encoder_keys:
        sources = by_model_name.get(key, [])
        if not sources:
            wrong.append(f"{key} (not in the file)")
        elif not all(_same_tensor(state[key], stored[s].to(state[key].dtype)) for s in sources):
            wrong.append(f"{key} (differs from the file's {' / '.join(sources)})")
    if wrong:
        raise Refused(f"pretrained={pretrained!r}: {len(wrong)} encoder tensor(s) loaded without error are not the "
                      f"tensors in {path}, so the encoder would start partly random: " + ", ".join(wrong[:5])
                      + (" ..." if len(wrong) > 5 else ""))
    return encoder_keys


def resolve_precision(precision: str, device: torch.device) -> str:
    """``bf16`` or ``fp32``; ``auto`` is bf16 on CUDA (the GB10 and H100 run bf16 matmuls at full rate), fp32 on CPU.

    Resolved once per run; everything downstream takes the resolved value.
    """
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    if precision not in PRECISIONS:
        raise Refused(f"precision={precision!r}: expected auto, bf16 or fp32")
    return precision


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 N x 3 x H x W -> float32 model input, on whatever device ``images`` is on."""
    mean = torch.tensor(PREPROCESSING["mean"], device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(PREPROCESSING["std"], device=images.device).view(1, 3, 1, 1)
    return (images.float() * PREPROCESSING["rescale"] - mean) / std


def checkpoint_precision(payload: dict, device: torch.device) -> str:
    """The precision a checkpoint's validation ran at; one from before it was recorded ran bf16 exactly on CUDA."""
    return resolve_precision(payload.get("precision") or "auto", device)


def inference_device() -> torch.device:
    """Where a fresh pass over a stored checkpoint runs: the GPU where there is one."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def logits_at_mask_size(model, images: torch.Tensor, precision: str = "fp32") -> torch.Tensor:
    """Class logits for uint8 images, computed at ``precision`` and upsampled bilinearly to the image size.

    SegFormer predicts at 1/4 resolution; its own loss upsamples the same way before comparing
    with the mask. Training, validation and the fresh inference pass all go through here, and
    ``best.pt`` records the precision its validation ran at, so the fresh pass computes at it too.
    """
    pixels = normalize(images)
    if images.is_cuda:
        pixels = pixels.contiguous(memory_format=torch.channels_last)  # matches the model's layout there
    with torch.autocast(device_type=images.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        logits = model(pixel_values=pixels).logits
    # Upsampled in fp32 even under bf16 autocast: the argmax and the loss see full-precision logits.
    return F.interpolate(logits.float(), size=images.shape[-2:], mode="bilinear", align_corners=False)


TTA_MODES = ("none", "hflip")


def class_scores(model, images: torch.Tensor, precision: str = "fp32", tta: str = "none") -> torch.Tensor:
    """Per-pixel class scores whose argmax is the prediction: the logits (tta=none), or with tta=hflip the log of
    the mean softmax of the image and its mirror (mirrored back), so the rock margin stays a difference of scores.

    none returns ``logits_at_mask_size`` itself, bit for bit: the verification's numbers never move.
    """
    logits = logits_at_mask_size(model, images, precision)
    if tta == "none":
        return logits
    if tta != "hflip":
        raise Refused(f"tta {tta!r}: expected one of {', '.join(TTA_MODES)}")
    mirrored = logits_at_mask_size(model, images.flip(-1), precision).flip(-1)
    return ((logits.softmax(1) + mirrored.softmax(1)) / 2).log()


def entropy(scores: torch.Tensor) -> torch.Tensor:
    """N x C x H x W scores -> N x H x W entropy of their softmax, in nats: 0 (certain) to log C (uniform)."""
    log_p = scores.float().log_softmax(1)
    return (-(log_p.exp() * log_p).sum(1)).clamp(min=0)  # clamp: rounding can dip a hair under 0


@torch.no_grad()
def predict(model, images: torch.Tensor, precision: str, device, batch: int = 8) -> torch.Tensor:
    """Class ids (N x H x W, on the CPU) of uint8 images, in batches on ``device`` at ``precision``, in eval mode."""
    model.eval()
    return torch.cat([logits_at_mask_size(model, images[start:start + batch].to(device), precision).argmax(1).cpu()
                      for start in range(0, len(images), batch)])


def pretrained_id(pretrained: str, model) -> str:
    """What the encoder really came from: the hub id at its commit, a directory, or random init."""
    if pretrained.lower() == "none":
        return names.RANDOM_INIT
    if Path(pretrained).is_dir():
        return str(Path(pretrained).resolve())
    # A hub id resolves to a snapshot folder named by its commit; the id alone could change under us.
    cached = try_to_load_from_cache(pretrained, "config.json")
    return f"{pretrained}@{Path(cached).parent.name}" if isinstance(cached, str) else pretrained


def checkpoint(model, epoch: int, metrics: dict, args: dict, preprocessing: dict, precision: str) -> dict:
    """The ``best.pt`` payload: tensors and plain Python values only, so ``weights_only=True`` loads it."""
    return {
        "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        # A JSON round trip keeps only plain types (the safe unpickler refuses anything else).
        "config": json.loads(model.config.to_json_string()),
        "classes": list(CLASSES),
        "epoch": epoch,
        "metrics": dict(metrics),
        "args": dict(args),
        "preprocessing": dict(preprocessing),
        "precision": precision,  # what validation computed at: bf16 or fp32
    }


def load_checkpoint(path, label: str = "") -> dict:
    """Read ``best.pt`` with the safe unpickler: a file that would run code is refused, never executed.

    ``label`` names where it came from (a run) in the refusal.
    """
    where = f"{label}: {path}" if label else str(path)
    try:
        mode = os.stat(path).st_mode
    except OSError as error:
        raise Refused(f"{where}: unreadable ({error.strerror or error})") from error
    # A FIFO would block torch.load forever and a device (/dev/zero) feed it without end.
    if not stat.S_ISREG(mode):
        raise Refused(f"{where}: not a regular file (a {_file_kind(mode)}"
                      f"{', through a symbolic link to ' + os.path.realpath(path) if os.path.islink(path) else ''}); "
                      f"expected the best.pt of a training run")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise Refused(f"{where}: not a regolith checkpoint that loads with weights_only=True "
                      f"(refused, nothing in it was executed): {error}") from error
    # A file can load safely and still be someone else's: say so here, not as a KeyError later.
    if not isinstance(payload, dict):
        raise Refused(f"{where}: not a regolith checkpoint: a {type(payload).__name__}, expected a dict "
                      f"with {', '.join(map(repr, sorted(CHECKPOINT_KEYS)))}")
    lacks = sorted(CHECKPOINT_KEYS - set(payload))
    if lacks:
        raise Refused(f"{where}: not a regolith checkpoint: lacks {', '.join(map(repr, lacks))} (keys found: "
                      f"{', '.join(map(repr, sorted(map(str, payload))[:10])) or 'none'}); expected the best.pt "
                      f"of a training run")
    if not isinstance(payload["model"], dict) or not isinstance(payload["config"], dict):
        raise Refused(f"{where}: not a regolith checkpoint: 'model' and 'config' must be dicts")
    if payload["classes"] != list(CLASSES):
        raise Refused(f"{where}: a checkpoint for the classes {payload['classes']!r}, expected {list(CLASSES)}")
    problem = _malformed(payload)
    if problem:
        raise Refused(f"{where}: not a regolith checkpoint: {problem}; expected the best.pt of a training run")
    return payload


def _file_kind(mode: int) -> str:
    kinds = ((stat.S_ISFIFO, "named pipe (FIFO)"), (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
             (stat.S_ISDIR, "directory"), (stat.S_ISSOCK, "socket"))
    return next((name for test, name in kinds if test(mode)), "special file")


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _preprocessing_problem(pre) -> str | None:
    if not isinstance(pre, dict) or set(pre) != set(PREPROCESSING):
        return "not a dict with rescale, mean and std"
    for key, expected in PREPROCESSING.items():
        got, want = (pre[key], expected) if isinstance(expected, list) else ([pre[key]], [expected])
        if (not isinstance(got, (list, tuple)) or len(got) != len(want)
                or not all(_number(g) and math.isclose(g, w, rel_tol=1e-6) for g, w in zip(got, want))):
            return f"{key} is {pre[key]!r}, expected {expected}"
    return None


def _malformed(payload: dict) -> str | None:
    """What in a loaded checkpoint's fields does not fit regolith's format, else None.

    Checked before anything is recorded or written: a head for other classes would otherwise be
    pulled with exit 0, and a bad field would crash photos after it had recorded half a measurement.
    """
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in payload["model"].items()):
        return "'model' must map weight names to tensors"
    head = payload["model"].get(HEAD_WEIGHT)
    labels = payload["config"].get("num_labels", len(payload["config"].get("id2label") or {}))
    if head is None or head.ndim < 1 or head.shape[0] != len(CLASSES) or labels != len(CLASSES):
        shape = "missing" if head is None else f"of shape {tuple(head.shape)}"
        return (f"its head is for {labels!r} classes (config num_labels) with {HEAD_WEIGHT} {shape}, but "
                f"'classes' names {len(CLASSES)}")
    problem = _preprocessing_problem(payload["preprocessing"])
    if problem:
        # Every verb normalizes by PREPROCESSING: a checkpoint that records others would be fed wrong inputs.
        return f"'preprocessing': {problem}"
    args = payload.get("args", {})
    if not isinstance(args, dict) or not all(isinstance(k, str) for k in args):
        return f"'args' is a {type(args).__name__}, expected a dict of the training parameters"
    batch = args.get("batch", 1)
    if not (isinstance(batch, int) and not isinstance(batch, bool) and batch >= 1):
        return f"'args' batch is {batch!r}, expected a positive whole number"
    if payload.get("precision") not in (None, *PRECISIONS):
        return f"'precision' is {payload['precision']!r}, expected one of {', '.join(PRECISIONS)}"
    epoch = payload.get("epoch")
    if epoch is not None and not (isinstance(epoch, int) and not isinstance(epoch, bool) and epoch >= 0):
        return f"'epoch' is {epoch!r}, expected a whole number"
    recorded = payload.get("metrics", {})
    if not isinstance(recorded, dict) or not all(value is None or _number(value) for value in recorded.values()):
        return "'metrics' must map score names to numbers"
    return None


def model_from_checkpoint(payload: dict) -> SegformerForSemanticSegmentation:
    """Rebuild the model a checkpoint was saved from, in eval mode; refused when its weights do not fit its config."""
    try:
        model = SegformerForSemanticSegmentation(SegformerConfig.from_dict(payload["config"]))
        model.load_state_dict(payload["model"])
    except Exception as error:
        raise Refused(f"checkpoint: its model weights do not fit its own config ({str(error)[:500]})") from error
    return model.eval()
