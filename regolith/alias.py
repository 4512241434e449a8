"""Which registered run holds a variant's alias: the promotion rule of ``models:/regolith-segformer@<variant>``.

Pure judgement on two store rows (``store.read_runs``' shape: tags and metrics), no MLflow:
the training verb reads the current holder and itself, asks ``stays``, and registers with the
answer. ``@dr_750`` names the best registered run of ``dr_750`` by validation rock-IoU, whatever
experiment it ran in.
"""

from regolith import names

SCORE = names.key(names.BEST, names.HEADLINE)


def random_init(row: dict) -> bool:
    """Whether a run trained from a random encoder (``pretrained=none``), as its ``pretrained_id`` param records."""
    return row.get("params", {}).get(names.PRETRAINED_ID) == names.RANDOM_INIT


def stays(holder: dict | None, candidate: dict, alias: str, name: str = names.MODEL_NAME) -> str | None:
    """Why ``@alias`` keeps its version rather than move to ``candidate``'s; None when it moves.

    A run trained from a random encoder (``pretrained=none``: the demo, a quick check) never takes
    it. Otherwise it moves when it points nowhere yet (or at a deleted run, a run with no best
    rock-IoU, one validated on its own training frames, or one trained from a random encoder), or when the candidate's ``best/iou_rock`` is at least the
    holder's on the same validation split (by digest; ties go to the newer run). It stays for a worse
    run, a run validated on its own training frames, and a run validated on another split, whose
    number does not compare. ``holder`` is ``store.alias_holder``'s row (with ``version``), or None.
    """
    if random_init(candidate):
        return (f"@{alias} does not move: this run trained from a random encoder (pretrained=none), a quick check "
                f"or a demo rather than the variant's training; move it by hand if it should")
    if holder is None:
        return None
    theirs, mine = holder["metrics"].get(SCORE), candidate["metrics"].get(SCORE)
    if (holder.get("lifecycle_stage") == "deleted" or theirs is None or holder["tags"].get(names.VAL_IS_TRAIN) == "true"
            or random_init(holder)):
        return None
    where = f"@{alias} stays at models:/{name}/{holder['version']} (run {holder['run_id']}, {SCORE} {theirs:.4f})"
    if candidate["tags"].get(names.VAL_IS_TRAIN) == "true":
        return f"{where}: this run validated on its own training frames"
    ours, their_split = candidate["tags"].get(names.VAL_DIGEST), holder["tags"].get(names.VAL_DIGEST)
    if ours and their_split and ours != their_split:
        return (f"{where}: this run validated on another split (digest {ours}, not {their_split}), so the two "
                f"do not compare; move the alias by hand if it should")
    if mine is None or mine < theirs:
        return f"{where}: this run's {SCORE} {'is missing' if mine is None else f'{mine:.4f} is lower'}"
    return None
