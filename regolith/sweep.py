"""What a seed sweep has already done: the (variant, seed) pairs the store holds as FINISHED runs.

    python -m regolith.sweep [--experiment NAME]     # one "variant:seed" line per finished pair

``experiments/sweep.sh`` (the ``sweep`` entry point) runs the ablation's three variants over
seeds 0..K-1 under one parent run; on a re-run it asks this verb first and skips every pair
that already finished, so an interrupted sweep picks up where it stopped. A training run left
RUNNING by a dead process (``regolith.runs``) is named on stderr, with the command that resumes
it; stdout stays the list of finished pairs.
"""

import argparse
import sys

from regolith import liveness, names, refusals, store
from regolith.runs import resume_commands


def finished_pairs(rows: list) -> list:
    """Sorted "variant:seed" of the FINISHED training runs among the store's rows."""
    return sorted({f"{row['tags'][names.VARIANT]}:{row['tags'][names.SEED]}" for row in rows
                   if row["tags"].get(names.KIND) == names.KIND_TRAIN and row["status"] == "FINISHED"
                   and names.VARIANT in row["tags"] and names.SEED in row["tags"]})


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", default="", help="experiment ('': the one training runs go to by default)")
    args = parser.parse_args(argv)
    with refusals():  # a sweep's first run finds no experiment yet: nothing has finished
        rows = store.read_runs(store.default_experiment(args.experiment), missing_ok=True)
    by_id = {row["run_id"]: row for row in rows}
    for entry in liveness.known_dead(rows):
        tags = by_id[entry["run_id"]]["tags"]
        print(f"warning: run {entry['run_id']} ({tags.get(names.VARIANT, '?')} seed {tags.get(names.SEED, '?')}) "
              f"is RUNNING but {entry['reason']}; this sweep starts the pair again unless you resume it with: "
              f"{resume_commands(by_id[entry['run_id']])[0]}", file=sys.stderr)
    for pair in finished_pairs(rows):
        print(pair)


if __name__ == "__main__":
    main()
