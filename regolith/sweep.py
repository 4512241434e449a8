"""The ablation recipes: their variants over seeds, each a training run, then compare; resumable as a sweep.

    python -m regolith.sweep DATA [--recipe v2|demo] [--seeds "0 1 2"] [--epochs N] [--pretrained ID]
                             [--real-images DIR]                   # the ablation (experiments/ablation_*.sh)
    python -m regolith.sweep DATA --count K --skip-finished [...]  # a seed sweep over 0..K-1 (experiments/sweep.sh)
    mlflow run . --env-manager local -e ablation -P data=DATA [-P recipe=demo] --experiment-name NAME
    mlflow run . --env-manager local -e sweep -P data=DATA -P seeds=K [--run-id PARENT] --experiment-name NAME

A recipe (``RECIPES``) is its shared training parameters and three variants (a split of DATA and a
frame count). Each (variant, seed) is its own ``mlflow run`` of the main entry point, nested under
the ``mlflow run``'s own run where there is one, then verified by ``regolith.evaluate`` (its
per-frame confusions give compare the interval over validation frames) and, with
``--real-images``, measured on real photographs (``regolith.photos``). compare then records into
that outer run. With ``--skip-finished`` (a sweep), a pair whose latest FINISHED training run
recorded what this sweep would run (every recipe parameter, both splits' digests, the code's
commit: ``why_train``, by compare's own rule) is skipped, so an interrupted sweep finishes only
what is missing; any other pair is trained, and the sweep says why.

Every argument is checked as the type it claims before anything runs, and nothing reaches a
shell: the children are started from argument lists. (The shell recipes once computed
``$((K - 1))``, and bash expands command substitutions inside arithmetic, so ``-P seeds=...``
ran code.)
"""

import argparse
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from regolith import Refused, ablation, liveness, names, store, track
from regolith.runs import resume_commands

PROJECT = Path(__file__).resolve().parents[1]  # the MLproject the training runs are started from
# Each recipe: the training parameters its runs share, its (variant, split under DATA, frames[, params of
# that variant alone]), and the deltas compare reports beyond the built-in two (compare --delta A:B).
# demo: python -m regolith.synth data, 128x128, random init (the hub is offline), so ten times the lr.
# v2: the reference study (shared/reference/03-training.txt), fine-tuning the ImageNet encoder.
# augment: v2's dr_750 with each augmentation beside the original's plain hflip (issue 20's lever), each
#   compared with it by the regolith.augment tag; written for the rendered sets, the demo data says nothing.
AUGMENTS = ("gray", "photometric", "noise", "blur")
RECIPES = {
    "demo": {"params": {"epochs": "20", "lr": "6e-4", "batch": "8", "patience": "8", "pretrained": "none"},
             "variants": (("nodr_80", "train_nodr", 80), ("dr_80", "train_dr", 80), ("dr_160", "train_dr", 160))},
    "v2": {"params": {"epochs": "40", "lr": "6e-5", "batch": "8", "patience": "8", "pretrained": "nvidia/mit-b0"},
           "variants": (("nodr_750", "train_nodr", 750), ("dr_750", "train_dr", 750),
                        ("dr_1500", "train_dr", 1500))},
    "augment": {"params": {"epochs": "40", "lr": "6e-5", "batch": "8", "patience": "8", "pretrained": "nvidia/mit-b0"},
                "variants": (("dr_750", "train_dr", 750, {"augment": "hflip"}),
                             *((f"dr_750+{choice}", "train_dr", 750, {"augment": f"hflip,{choice}"})
                               for choice in AUGMENTS)),
                "deltas": tuple(f"{names.AUGMENT}=hflip:{names.AUGMENT}=hflip,{choice}" for choice in AUGMENTS)},
}
VAL_SPLIT = "test_photoreal"  # the main entry point's default validation split, the sibling of the training split
OLD_ENVIRONMENT = ("SEEDS", "EPOCHS", "PRETRAINED", "REAL_IMAGES")  # what the shell recipes once read
SUCCEEDED = re.compile(r"=== Run \(ID '([0-9a-f]+)'\) succeeded ===")


def build_parser() -> argparse.ArgumentParser:
    """Every value stays text here and is checked by ``check_args``, so a bad one gets a named refusal."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    # an unknown argument (`-P seeds=...` given to the bash recipe) is refused like any bad value
    parser.error = lambda message: fail(f"{parser.prog}: {message} (see --help)", 2)
    parser.add_argument("data", help="datasets root holding the recipe's splits (train_nodr, train_dr, test_photoreal)")
    parser.add_argument("--recipe", default="v2", help=f"one of: {', '.join(RECIPES)}")
    parser.add_argument("--seeds", default="", help="space-separated seeds, one run per variant and seed (default 0)")
    parser.add_argument("--count", default="", help="a sweep over seeds 0..COUNT-1 (instead of --seeds)")
    parser.add_argument("--epochs", default="", help="override the recipe's epochs ('': keep them)")
    parser.add_argument("--pretrained", default="", help="override the recipe's encoder ('': keep it)")
    parser.add_argument("--real-images", default="", help="a folder of real photographs every run is pointed at")
    parser.add_argument("--skip-finished", action="store_true",
                        help="skip the (variant, seed) pairs the store already holds as FINISHED runs")
    return parser


def _whole(text: str, what: str, least: int) -> int:
    """``text`` as a whole number >= ``least`` ("5" or, as MLflow passes a float parameter, "5.0"), else refused."""
    if not re.fullmatch(r"\s*\d+(\.0*)?\s*", text):
        raise Refused(f"{what}={text!r}: expected a whole number of at least {least}")
    value = int(float(text))
    if value < least:
        raise Refused(f"{what}={text!r}: expected a whole number of at least {least}")
    return value


def check_args(args) -> dict:
    """The arguments as the values they claim to be: a plan of what to run, or ``Refused`` naming the bad one."""
    for name in OLD_ENVIRONMENT:
        if os.environ.get(name):
            raise Refused(f"environment {name}={os.environ[name]!r} is no longer read; pass "
                          f"--{name.lower().replace('_', '-')} instead")
    if args.recipe not in RECIPES:
        raise Refused(f"recipe={args.recipe!r}: expected one of {', '.join(RECIPES)}")
    if args.seeds and args.count:
        raise Refused("give --seeds or --count, not both")
    if args.count:
        seeds = list(range(_whole(args.count, "seeds (a count)", 1)))
    else:
        seeds = [_whole(token, "seed", 0) for token in (args.seeds or "0").split()]
        if not seeds or len(set(seeds)) != len(seeds):
            raise Refused(f"seeds={args.seeds!r}: expected distinct whole numbers separated by spaces")
    recipe = RECIPES[args.recipe]
    params = dict(recipe["params"])
    if args.epochs.strip():
        params["epochs"] = str(_whole(args.epochs, "epochs", 1))
    if args.pretrained.strip():
        params["pretrained"] = args.pretrained.strip()
    data = Path(args.data).expanduser().resolve()
    for split in sorted({variant[1] for variant in recipe["variants"]} | {VAL_SPLIT}):
        if not (data / split).is_dir():
            raise Refused(f"data={args.data}: {data / split} is not a folder; recipe {args.recipe} needs "
                          f"{', '.join(sorted({variant[1] for variant in recipe['variants']}))} and {VAL_SPLIT} under it")
    real_images = ""
    if args.real_images.strip():
        real_images = str(Path(args.real_images).expanduser().resolve())
        if not Path(real_images).is_dir():
            raise Refused(f"real_images={args.real_images}: not a folder of photographs")
    runs = [{"variant": variant, "seed": seed, "params": {"split": str(data / split), "frames": str(frames),
                                                           **params, **(own[0] if own else {}), "seed": str(seed),
                                                           "real_images": real_images}}
            for seed in seeds for variant, split, frames, *own in recipe["variants"]]
    return {"runs": runs, "skip_finished": args.skip_finished, "real_images": real_images,
            "deltas": recipe.get("deltas", ())}


def latest_finished(rows: list) -> dict:
    """"variant:seed" -> the row of its latest FINISHED training run, the one compare counts."""
    latest = {}
    for row in rows:
        tags = row["tags"]
        if tags.get(names.KIND) != names.KIND_TRAIN or row["status"] != "FINISHED" or not {
                names.VARIANT, names.SEED} <= set(tags):
            continue
        pair = f"{tags[names.VARIANT]}:{tags[names.SEED]}"
        if pair not in latest or (row["start_time"], row["run_id"]) > (latest[pair]["start_time"],
                                                                         latest[pair]["run_id"]):
            latest[pair] = row
    return latest


def expected_settings(run: dict, digests: dict, commit: str | None) -> dict:
    """What a run of this pair records, as store rows hold it: the recipe's params, the splits' digests, the commit.

    ``digests`` caches (folder, frames) -> digest across the pairs. The split's path is not
    compared: its digest (names and bytes of every frame used) says whether it is the same data.
    """
    params = run["params"]
    split = Path(params["split"])
    for key in ((split, int(params["frames"])), (split.parent / VAL_SPLIT, 0)):
        if key not in digests:
            from regolith import data  # torch comes with it: only a sweep that checks the store pays for it
            digests[key] = data.split_digest(*key)
    return {**{key: value for key, value in params.items() if key != "split"},
            names.DATASET_DIGEST: digests[(split, int(params["frames"]))],
            names.VAL_DIGEST: digests[(split.parent / VAL_SPLIT, 0)], names.GIT_COMMIT: commit}


def as_given(value: str) -> str:
    """A param as it was given: ``mlflow run`` logs a string parameter shell-quoted (``''`` for empty, ``'/a b'``)."""
    try:
        parts = shlex.split(value)
    except ValueError:  # a quote of its own, as a direct run logs it
        return value
    return "" if not parts else parts[0] if len(parts) == 1 else value


def why_train(run: dict, recorded: dict | None, expected: dict) -> str | None:
    """None where the store's run of this pair is what the sweep would run; else why the pair is trained.

    The rule is compare's (``ablation.differing_settings``), over every key of ``expected``.
    """
    if recorded is None:
        return "no FINISHED run of it in the store"
    settings = {**{key: as_given(value) for key, value in recorded["params"].items()}, **recorded["tags"]}
    differ = ablation.differing_settings(expected, settings, tuple(expected))
    if not differ:
        return None
    return f"its latest FINISHED run {recorded['run_id']} differs in " + "; ".join(
        f"{key} ({settings.get(key)!r} there, {expected[key]!r} here)" for key in differ)


def project_commit() -> str | None:
    """The commit ``mlflow run`` tags the training runs with (None outside git, where it tags none)."""
    try:
        done = subprocess.run(["git", "-C", str(PROJECT), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else None


def store_rows() -> list:
    """The experiment's runs; names RUNNING runs whose process is gone, with the command that resumes each."""
    rows = store.read_runs(store.default_experiment(""), missing_ok=True)
    by_id = {row["run_id"]: row for row in rows}
    for entry in liveness.known_dead(rows):
        tags = by_id[entry["run_id"]]["tags"]
        print(f"warning: run {entry['run_id']} ({tags.get(names.VARIANT, '?')} seed {tags.get(names.SEED, '?')}) "
              f"is RUNNING but {entry['reason']}; this sweep starts the pair again unless you resume it with: "
              f"{resume_commands(by_id[entry['run_id']])[0]}", file=sys.stderr)
    return rows


def child_env() -> dict:
    """The environment of a training run: a new run of the same experiment, not the outer run itself."""
    env = {key: value for key, value in os.environ.items() if key != "MLFLOW_RUN_ID"}
    if env.get("MLFLOW_EXPERIMENT_ID"):  # `mlflow run` refuses an experiment given by both name and id
        env.pop("MLFLOW_EXPERIMENT_NAME", None)
    return env


def call(cmd: list, env: dict, what: str) -> str:
    """Run ``cmd`` in the project, its output passed through as it comes; returns it, or exits with its status."""
    if sys.stdout.isatty():  # relayed as it comes, so the child's progress bar (carriage returns) still moves
        env = {"REGOLITH_PROGRESS": "bar", **env}
    process = subprocess.Popen(cmd, cwd=PROJECT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    chunks = []
    while chunk := os.read(process.stdout.fileno(), 65536):
        sys.stdout.buffer.write(chunk)
        sys.stdout.buffer.flush()
        chunks.append(chunk)
    status = process.wait()
    if status:
        fail(f"{what} failed (exit {status}): {' '.join(cmd)}", status)
    return b"".join(chunks).decode(errors="replace")


def fail(reason: str, status: int):
    """End the sweep with ``reason`` on stderr and, under ``mlflow run``, in the outer run's ``regolith.error``."""
    print(f"error: {reason}", file=sys.stderr)
    track.record_error(reason)
    sys.exit(status)


def train(run: dict, env: dict) -> str:
    """One (variant, seed) as an ``mlflow run`` of the main entry point; returns its run id."""
    parent = os.environ.get("MLFLOW_RUN_ID", "")
    cmd = ["mlflow", "run", str(PROJECT), "--env-manager", "local", "--run-name", run["variant"],
           "-P", f"parent={parent}"]
    for key, value in run["params"].items():
        cmd += ["-P", f"{key}={value}"]
    output = call(cmd, env, f"training run {run['variant']} seed {run['seed']}")
    found = SUCCEEDED.findall(output)
    if not found:
        fail(f"training run {run['variant']} seed {run['seed']}: mlflow run named no run id", 1)
    return found[-1]


def execute(plan: dict):
    """Every run of the plan not already done, each verified (and measured on photos), then compare."""
    env = child_env()
    latest = latest_finished(store_rows()) if plan["skip_finished"] else None
    digests, commit = {}, project_commit()
    python = sys.executable
    for run in plan["runs"]:
        if latest is not None:
            reason = why_train(run, latest.get(f"{run['variant']}:{run['seed']}"),
                               expected_settings(run, digests, commit))
            if reason is None:
                print(f"skip {run['variant']} seed {run['seed']}: already FINISHED in the store with the same "
                      f"settings, data and commit", flush=True)
                continue
            print(f"train {run['variant']} seed {run['seed']}: {reason}", flush=True)
        run_id = train(run, env)
        # The fresh inference pass: it verifies the checkpoint reproduces validation, and its per-frame
        # confusion matrices give compare the bootstrap intervals over validation frames.
        # (A run that watched real_images made this pass itself, with its operating curve on them.)
        if not run["params"].get("real_images"):
            call([python, "-m", "regolith.evaluate", "--run", run_id], env, f"evaluate of {run['variant']}")
        if plan["real_images"]:  # the rock flood, per photo, so compare has an interval over photos
            call([python, "-m", "regolith.photos", "--run", run_id, "--images", plan["real_images"]], env,
                 f"photos of {run['variant']}")
    # compare records into the outer run (MLFLOW_RUN_ID), beside the runs it compares.
    call([python, "-m", "regolith.compare", *(arg for spec in plan["deltas"] for arg in ("--delta", spec))], {**env, **({"MLFLOW_RUN_ID": os.environ["MLFLOW_RUN_ID"]}
                                                         if os.environ.get("MLFLOW_RUN_ID") else {})}, "compare")


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        execute(check_args(args))
    except Refused as error:
        fail(str(error), 2)


if __name__ == "__main__":
    main()
