"""Every name regolith records in MLflow, defined once: metric keys, tag names, run kinds, artifact names.

train, evaluate, compare, sweep, pull and track read them from here. Adding a per-epoch metric
is one line here plus the code that computes it; readers treat a key an older run lacks as
"not recorded", never as a broken run (``compare.training_run``).
"""

import re

from regolith import CLASSES

# ---- scores of one split (``metrics.iou_summary``), logged under a prefix: val/iou_rock, best/miou ----
SCORES = (*(f"iou_{name}" for name in CLASSES), "miou")
HEADLINE = "iou_rock"  # picks the best checkpoint (strictly greater: the earliest wins ties); the deltas are on it
# The original study's rule beside ours: a pixel labelled 255 predicted as class c is a false positive of c.
STRICT_SCORES = ("iou_rock_strict", "miou_strict")
TRAIN_SCORES = ("iou_rock", "miou")  # of the training batches, from the loop's own predictions

TRAIN, VAL, BEST, VERIFY = "train", "val", "best", "verify"  # metric prefixes


def key(prefix: str, name: str) -> str:
    """``val`` and ``iou_rock`` -> ``val/iou_rock``."""
    return f"{prefix}/{name}"


DEFAULT_AUGMENT, DEFAULT_ENCODER = "hflip", "b0"  # the original's recipe: a variant's name says only what differs
CUSTOM_ENCODER = "custom"  # an encoder of none of the MiT sizes (model.encoder_size)


def variant(dr: bool, frames: int, augment: str = DEFAULT_AUGMENT, encoder: str = DEFAULT_ENCODER) -> str:
    """dr_750, nodr_750: how training runs are named, grouped by compare and aliased in the registry.

    A lever other than the original's joins the name: each augmentation beyond hflip as ``+gray``
    (``+noflip`` where hflip is off), an MiT size other than B0 as ``@b2``: dr_750+gray, dr_750@b2.
    ``augment`` is the canonical list (``augment.canonical``); an encoder of no MiT size (``custom``)
    adds nothing to the name (its pretrained_id tells it apart, and compare's settings warn).
    """
    chosen = [] if augment == "none" else augment.split(",")
    levers = "".join(f"+{choice}" for choice in chosen if choice != DEFAULT_AUGMENT)
    levers += "" if DEFAULT_AUGMENT in chosen else "+noflip"
    size = f"@{encoder}" if encoder not in (DEFAULT_ENCODER, CUSTOM_ENCODER, "") else ""
    return f"{'dr' if dr else 'nodr'}_{frames}{levers}{size}"


def alias_name(variant_name: str) -> str:
    """The registry alias of a variant: MLflow aliases take letters, digits, _ and - only (dr_750+gray -> dr_750-gray)."""
    return variant_name.replace("+", "-").replace("@", "-")


def prefixed(prefix: str, values: dict) -> dict:
    """A dict of scores keyed as logged under ``prefix``."""
    return {key(prefix, name): value for name, value in values.items()}


# ---- per-epoch metrics of a training run (step = epoch, counted from 1) ----
LOSS = "loss"
LR = "lr"  # the rate of the epoch's last step
EPOCH_SECONDS = "time/epoch_s"
EPOCH_METRICS = (key(TRAIN, LOSS), *(key(TRAIN, s) for s in TRAIN_SCORES), key(VAL, LOSS),
                 *(key(VAL, s) for s in (*SCORES, *STRICT_SCORES)), LR, EPOCH_SECONDS)
# Every epoch logs it, so its steps say which epochs the store already has (resume, a server that blipped).
EPOCH_MARKER = key(VAL, HEADLINE)

# Real photographs, no masks (regolith.photos, and -P real_images on main): the share of their own pixels
# predicted as rock, the study's "rock flood".
REAL = "real"
REAL_ROCK_SHARE = key(REAL, "rock_share_mean")  # per epoch in training; at the checkpoint's epoch from photos
REAL_SET = tuple(key(REAL, name) for name in ("rock_share_mean", "rock_share_min", "rock_share_max", "photos"))
REAL_ENTROPY = key(REAL, "mean_entropy")  # regolith.photos: softmax entropy over the photos' own pixels (nats)
REAL_SHARE = "real_rock_share"  # a checkpoint's mean rock share over real photos, as a score beside iou_rock
BEST_REAL_ROCK_SHARE = key(BEST, REAL_SHARE)  # the real share at the epoch checkpoint selection picked
EPOCH_IMAGES_SECONDS = "time/epoch_images_s"  # what drawing and logging the per-epoch images cost
PEAK_MEMORY = "memory/peak_allocated_mb"  # torch's own peak per epoch, on CUDA (a GB10's NVML reports none)

# ---- logged once, when a training run finishes ----
BEST_EPOCH = key(BEST, "epoch")
STOPPED_EPOCH = "stopped_epoch"

# ---- params ----
# The MLproject's main parameters: what mlflow run logs itself, and what a direct run logs the same way.
RUN_PARAMS = ("split", "val_split", "frames", "epochs", "lr", "batch", "seed", "patience", "augment",
              "weight_decay", "schedule", "pretrained", "dr", "compile", "precision", "parent", "register", "out",
              "real_images", "epoch_images")
# beside them, what a training run measures of its data and encoder
IMAGE_SIZE = "image_size"  # HxW of the training frames, e.g. 512x512: photos are fitted to its long side
VAL_IMAGE_SIZE = "val_image_size"
PRETRAINED_ID = "pretrained_id"  # what the encoder came from: hub id at its commit, a directory, or random init
RANDOM_INIT = "none (random init)"  # PRETRAINED_ID of a run with pretrained=none
CLASS_WEIGHT = "class_weight"  # class_weight.rock
# the model's size (model.footprint): parameters, the encoder's share, forward FLOPs per frame at IMAGE_SIZE
MODEL_PARAMETERS, ENCODER_PARAMETERS, FLOPS = "model_parameters", "encoder_parameters", "flops_per_frame"
# beside augment (augment.recorded): the probability each choice acts with, and augment_range.<name> = low..high
AUGMENT_P, AUGMENT_RANGE = "augment_p", "augment_range"
PIXEL_SHARE = "pixel_share"  # pixel_share.rock

# ---- dataset inputs: the context each is logged with ----
CONTEXT_TRAINING, CONTEXT_VALIDATION, CONTEXT_REAL = "training", "validation", "real"

# ---- tags ----
KIND = "regolith.kind"  # what a run is: one of the kinds below
KIND_TRAIN, KIND_COMPARE = "train", "compare"
# the launcher runs `mlflow run -e <verb>` opens for the verbs that act on other runs
KIND_EVALUATE, KIND_PHOTOS, KIND_PULL, KIND_RUNS, KIND_EXPORT = "evaluate", "photos", "pull", "runs", "export"
KIND_BENCH = "bench"  # `mlflow run -e bench`: the benchmark's figures and bench.json
ERROR = "regolith.error"  # why a run ended FAILED or KILLED
DR = "regolith.dr"  # "true" / "false"
VARIANT = "regolith.variant"  # dr_750, dr_750+gray, dr_750@b2
AUGMENT = "regolith.augment"  # the augmentations as applied, in their order: hflip,gray (or none)
ENCODER = "regolith.encoder"  # the MiT size: b0 .. b5, or custom
SPLIT = "regolith.split"  # the training split's folder name
FRAMES = "regolith.frames"  # frames used
DATASET_DIGEST = "regolith.dataset_digest"
VAL_SPLIT = "regolith.val_split"  # resolved path
VAL_DIGEST = "regolith.val_digest"
VAL_IS_TRAIN = "regolith.val_is_train"  # "true": validated on the training split itself (same folder or frames)
SEED = "regolith.seed"
DEVICE = "regolith.device"
COMPILED = "regolith.compiled"
PRECISION = "regolith.precision"  # bf16 or fp32, as run
ATTENTION = "regolith.attn_implementation"
# torch.backends.cpu.get_cpu_capability(): the instruction set CPU kernels were picked for (AVX2, AVX512, ...);
# it moves IoU in the 4th decimal between CPUs, so a run says which it ran with
CPU_CAPABILITY = "regolith.cpu_capability"
MODEL_VERSION = "regolith.model_version"  # models:/regolith-segformer/N
LOGGED_MODEL = "regolith.logged_model"  # models:/m-...: the run's best.pt as an MLflow model (regolith.serving)
SOURCE_RUN = "regolith.source_run"  # on a launcher run of evaluate or pull: the run it acted on
PULLED_TO = "regolith.pulled_to"
PARENT = "mlflow.parentRunId"  # MLflow's own: nests a run under a sweep in the UI
# where a run's process runs, set when it opens or resumes the run (``regolith.runs`` finds the dead ones)
HOST = "regolith.host"  # socket.gethostname()
PID = "regolith.pid"
PID_NAMESPACE = "regolith.pid_namespace"  # e.g. pid:[4026531836]: pids compare only within one host and namespace
PROCESS_START = "regolith.process_start"  # the process's start, epoch seconds: a reused pid is another process
HEARTBEAT = "regolith.heartbeat"  # UTC ISO 8601 time, refreshed every epoch and every 30 s while the run is open
# MLflow's own tag on a run `mlflow run` opened, and the entry points whose process tags host and pid at once
# (through track.run): such a run RUNNING long without them lost its process before it could say where it runs.
ENTRY_POINT = "mlflow.project.entryPoint"
MARKED = "regolith.marked_killed"  # when regolith.runs --mark ended the run KILLED from another process (UTC ISO)
TRACKED_ENTRY_POINTS = ("main", "compare", "bench")
# on the experiment, for MLflow's UI (compare writes them): the view its printed link opens, a view state
# shared under this key (MLflow reads experiment tags mlflow.sharedViewState.<key>), and the experiment's kind
VIEW_KEY = "training"
VIEW_STATE = f"mlflow.sharedViewState.{VIEW_KEY}"
EXPERIMENT_KIND = "mlflow.experimentKind"
EXPERIMENT_KIND_TRAINING = "custom_model_development"  # MLflow's value for model training; genai_development else
# compare's own run
EXPERIMENT = "regolith.experiment"
SOURCE_RUNS = "regolith.source_runs"
RESULTS_DIR = "regolith.results_dir"


def source_tag(variant: str) -> str:
    """regolith.source.dr_750: the run ids of one variant that a compare counted (dr_750+gray: dr_750_gray, in
    the letters MLflow keys take)."""
    return "regolith.source." + "".join(c if c.isalnum() or c in "_-. /:" else "_" for c in variant)


def delta_tag(delta: str) -> str:
    """regolith.dr_delta: "dr_750 vs nodr_750"."""
    return f"regolith.{delta}"


# The code a run ran: MLflow tags the commit itself (with `mlflow run` and when started from a git checkout);
# whether the checkout had uncommitted changes is ours to add.
GIT_COMMIT = "mlflow.source.git.commit"
GIT_DIRTY = "regolith.git_dirty"  # "true", "false", or "unknown" outside git
ENVIRONMENT = "environment.txt"  # artifact: every installed distribution and its version
# the real photos a run was pointed at (regolith.photos, or -P real_images during training)
REAL_DIGEST = "real/photos_digest"
REAL_ARTIFACTS = "real/artifacts"  # the latest real/<UTC time>/ folder of regolith.photos
# the per-epoch images in MLflow's image view (mlflow.log_image keys)
IMAGE_PREDICTIONS = "predictions"
IMAGE_REAL = "real_photos"
# the fresh inference pass (evaluate), on the run it verified: under verify/ on the run's own validation split
# only; any other split under split/<its folder name>/ (so verifying and reporting never share a key)
SPLITS = "split"


def split_prefix(split_name: str) -> str:
    """``test_real`` -> ``split/test_real``: where evaluate records a split that is not the validation split."""
    return key(SPLITS, safe_segment(split_name))


def safe_segment(name: str) -> str:
    """A name as one segment of a metric key (MLflow allows letters, digits, _ - . / and spaces; no / here)."""
    return re.sub(r"[^A-Za-z0-9_\-. ]", "_", name) or "_"


def evaluation_tags(prefix: str) -> tuple:
    """(split, split digest, check, artifacts): the tags of one evaluation under ``prefix``."""
    return tuple(key(prefix, name) for name in ("split", "split_digest", "check", "artifacts"))


VERIFY_SPLIT, VERIFY_SPLIT_DIGEST, VERIFY_CHECK, VERIFY_ARTIFACTS = evaluation_tags(VERIFY)
# the operating curve (regolith.curve) of an evaluation with photos, in its folder and under its prefix
CURVE_CSV, CURVE_JSON, CURVE_COUNTS, CURVE_FIGURE = "curve.csv", "curve.json", "curve_counts.npz", "curve.png"
IMAGE_CURVE = "operating_curve"  # mlflow.log_image key: synthetic rock-IoU against real share, argmax marked
REAL_SHARE_AT_ARGMAX = "real_share_at_argmax"  # verify/real_share_at_argmax: t = 0 of the curve
CURVE_PHOTOS_DIGEST = "curve_photos_digest"  # tag verify/curve_photos_digest: the photo set the curve counted


# the softmax entropy (nats, 0 to log 3) over validation and photo pixels, and their ratio: an out-of-domain signal
ENTROPY_VAL, ENTROPY_PHOTOS, ENTROPY_RATIO = "entropy_val", "entropy_photos", "entropy_ratio_photos_val"
TTA = "hflip"  # evaluate --tta hflip records under <prefix>/hflip/ (verify/hflip/iou_rock): never the verification's


def at_share(share: float) -> str:
    """0.05 -> ``iou_rock_at_real_5pct``: rock-IoU where the curve's real rock share is held to ``share``."""
    return f"iou_rock_at_real_{round(share * 100)}pct"
# an ONNX export (regolith.export), on the run it exported, in a new export/<UTC time>/ folder each time
EXPORT = "export"
EXPORT_CHECK = "export/check"  # pass, or fail: with the numbers that missed
EXPORT_ARTIFACTS = "export/artifacts"
EXPORT_AGREEMENT = "export/class_agreement"  # share of pixels where onnxruntime's class equals PyTorch's
EXPORT_LOGIT_DIFF = "export/max_abs_logit_diff"
ONNX_FILE = "model.onnx"
PREPROCESSING_FILE = "preprocessing.json"
EXPORT_REPORT = "report.json"

# ---- artifacts and the Model Registry ----
CHECKPOINT = "best.pt"
HISTORY = "metrics.jsonl"
SUMMARY = "summary.json"
OUT_CLAIM = ".regolith-claim"  # in -P out=DIR while a run writes there: which run and process (JSON)
PHOTOS_JSON = "photos.json"  # in real/<UTC time>/: regolith.photos' measurement (photos reads it back)
FRAME_CONFUSIONS = "confusion_per_frame.json"  # in verify/<UTC time>/: evaluate's per-frame counts (evaluate reads it)
MODEL_NAME = "regolith-segformer"
VERSION_CHECKPOINT = "regolith.checkpoint"  # a model version's tag: which artifact is the checkpoint
# The MLflow model every finished training run logs (regolith.serving): its name, and best.pt inside it as
# ``artifacts/best.pt`` under this key. A version of MODEL_NAME has it as its source.
LOGGED_MODEL_NAME = "model"
CHECKPOINT_ARTIFACT = "checkpoint"
MODEL_CHECKPOINT = f"artifacts/{CHECKPOINT}"
ONNX_MODEL_NAME = "onnx"  # regolith.export --log-model true: the ONNX file as an MLflow onnx model
