"""Every name regolith records in MLflow, defined once: metric keys, tag names, run kinds, artifact names.

train, evaluate, compare, sweep, pull and track read them from here. Adding a per-epoch metric
is one line here plus the code that computes it; readers treat a key an older run lacks as
"not recorded", never as a broken run (``compare.training_run``).
"""

from regolith import CLASSES

# ---- scores of one split (``metrics.iou_summary``), logged under a prefix: val/iou_rock, best/miou ----
SCORES = (*(f"iou_{name}" for name in CLASSES), "miou")
HEADLINE = "iou_rock"  # picks the best checkpoint (strictly greater: the earliest wins ties); the deltas are on it

TRAIN, VAL, BEST, VERIFY = "train", "val", "best", "verify"  # metric prefixes


def key(prefix: str, name: str) -> str:
    """``val`` and ``iou_rock`` -> ``val/iou_rock``."""
    return f"{prefix}/{name}"


def variant(dr: bool, frames: int) -> str:
    """dr_750, nodr_750: how training runs are named, grouped by compare and aliased in the registry."""
    return f"{'dr' if dr else 'nodr'}_{frames}"


def prefixed(prefix: str, values: dict) -> dict:
    """A dict of scores keyed as logged under ``prefix``."""
    return {key(prefix, name): value for name, value in values.items()}


# ---- per-epoch metrics of a training run (step = epoch, counted from 1) ----
LOSS = "loss"
LR = "lr"  # the rate of the epoch's last step
EPOCH_SECONDS = "time/epoch_s"
EPOCH_METRICS = (key(TRAIN, LOSS), key(VAL, LOSS), *(key(VAL, s) for s in SCORES), LR, EPOCH_SECONDS)
# Every epoch logs it, so its steps say which epochs the store already has (resume, a server that blipped).
EPOCH_MARKER = key(VAL, HEADLINE)

# ---- logged once, when a training run finishes ----
BEST_EPOCH = key(BEST, "epoch")
STOPPED_EPOCH = "stopped_epoch"

# ---- params beside the MLproject's own ----
CLASS_WEIGHT = "class_weight"  # class_weight.rock
PIXEL_SHARE = "pixel_share"  # pixel_share.rock

# ---- tags ----
KIND = "regolith.kind"  # what a run is: one of the kinds below
KIND_TRAIN, KIND_COMPARE = "train", "compare"  # evaluate and pull label their launcher runs with their verb
ERROR = "regolith.error"  # why a run ended FAILED or KILLED
DR = "regolith.dr"  # "true" / "false"
VARIANT = "regolith.variant"  # dr_750
SPLIT = "regolith.split"  # the training split's folder name
FRAMES = "regolith.frames"  # frames used
DATASET_DIGEST = "regolith.dataset_digest"
VAL_SPLIT = "regolith.val_split"  # resolved path
VAL_DIGEST = "regolith.val_digest"
SEED = "regolith.seed"
DEVICE = "regolith.device"
COMPILED = "regolith.compiled"
PRECISION = "regolith.precision"  # bf16 or fp32, as run
ATTENTION = "regolith.attn_implementation"
MODEL_VERSION = "regolith.model_version"  # models:/regolith-segformer/N
SOURCE_RUN = "regolith.source_run"  # on a launcher run of evaluate or pull: the run it acted on
PULLED_TO = "regolith.pulled_to"
PARENT = "mlflow.parentRunId"  # MLflow's own: nests a run under a sweep in the UI
# compare's own run
EXPERIMENT = "regolith.experiment"
SOURCE_RUNS = "regolith.source_runs"
RESULTS_DIR = "regolith.results_dir"


def source_tag(variant: str) -> str:
    """regolith.source.dr_750: the run ids of one variant that a compare counted."""
    return f"regolith.source.{variant}"


def delta_tag(delta: str) -> str:
    """regolith.dr_delta: "dr_750 vs nodr_750"."""
    return f"regolith.{delta}"


# the fresh inference pass (evaluate), on the run it verified
VERIFY_SPLIT = "verify/split"
VERIFY_SPLIT_DIGEST = "verify/split_digest"
VERIFY_CHECK = "verify/check"
VERIFY_ARTIFACTS = "verify/artifacts"

# ---- artifacts and the Model Registry ----
CHECKPOINT = "best.pt"
HISTORY = "metrics.jsonl"
SUMMARY = "summary.json"
MODEL_NAME = "regolith-segformer"
VERSION_CHECKPOINT = "regolith.checkpoint"  # a model version's tag: which artifact is the checkpoint
