"""A training run's resumable state, ``state.pt``: written after every finished epoch, read by ``--resume``.

It holds the model, the optimizer, the step (the learning rate is a pure function of it), the RNG
states, the epoch, the best so far, the early-stopping counter and the per-epoch history, so a
resumed run continues exactly as an unbroken one would. A missing, torn or foreign state, or a
resume with other parameters or data, is refused: an old run is never trained again from scratch.
"""

import json
from pathlib import Path

import torch

from regolith import Refused, files, names

# What a run only looks at or writes elsewhere, not what it computes: the resumable state leaves
# them out (the store still refuses a resume that gives one another value than its params record).
OBSERVING = ("register", "parent", "out", "real_images", "epoch_images")
# What a state.pt written before a parameter existed ran with: the code of that time's behaviour.
EARLIER_DEFAULTS = {"precision": "auto", "augment": "none", "weight_decay": 0.01, "schedule": "step"}


def resume_key(args) -> dict:
    """The arguments a resumed run must share with its start: everything that changes the computation."""
    return {key: getattr(args, key) for key in names.RUN_PARAMS if key not in OBSERVING}


def new_progress(train_split, val_split, source: str) -> dict:
    """Where a run stands after its last finished epoch; saved whole in state.pt after every epoch."""
    return {"epoch": 0, "step": 0, "best": None, "best_epoch": 0, "epochs_without_gain": 0, "history": [],
            "dataset_digest": train_split.digest, "val_digest": val_split.digest, "pretrained_id": source}


def save(path: Path, net, optimizer, data_rng, progress: dict, args):
    """Everything needed to continue after the last finished epoch, written atomically.

    The learning rate is a pure function of the step, so the step is the whole schedule state;
    the RNG states make the resumed run draw the same data order and dropout as an unbroken one.
    """
    rng = {"torch": torch.get_rng_state(), "order": data_rng.get_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    files.save_atomic({"model": net.state_dict(), "config": json.loads(net.config.to_json_string()),
                       "optimizer": optimizer.state_dict(), "rng": rng, "args": resume_key(args), **progress}, path)


def load(path: Path, run_id: str, args) -> dict:
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
