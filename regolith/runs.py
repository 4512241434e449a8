"""Runs the store says are RUNNING whose process is gone (``kill -9``, the OOM killer, a lost node); ends them KILLED.

    python -m regolith.runs [--experiment NAME] [--timeout SECONDS] [--mark]
    mlflow run . --env-manager local -e runs --experiment-name NAME [-P mark=true]

A process killed outright cannot end its run. Every run ``track.run`` opens records its host,
pid, pid namespace and process start, and refreshes ``regolith.heartbeat`` every epoch and every
30 s. A RUNNING run is stale when:

- it ran on this host (same host name and pid namespace), and that process is gone (or its pid
  now belongs to a process started at another time);
- it ran elsewhere, and its heartbeat is older than ``--timeout`` seconds (default 600; the
  hosts' clocks must agree to well within it).

Each is listed with its last finished epoch in the store and the command that resumes it;
``--mark`` ends it KILLED with the reason in ``regolith.error``. Nothing else changes: its
metrics, artifacts and ``outputs/<run id>/state.pt`` stay, and ``--resume`` continues it. A
training run recorded before heartbeats existed is listed as "unknown" once it started more than
``--timeout`` ago, and never marked: nothing says whether it is alive.
"""

import argparse
import time

from regolith import Refused, files, liveness, names, refusals, store, track


def resume_commands(row: dict) -> tuple:
    """The two commands that continue a training run, with the parameters it recorded (shell-quoted as logged)."""
    given = [(key, row["params"][key]) for key in names.RUN_PARAMS if key in row["params"]]
    flags = " ".join(f"--{key}".replace("_", "-") + f" {value}" for key, value in given)
    project = " ".join(f"-P {key}={value}" for key, value in given)
    return (f"python -m regolith.train {flags} --resume {row['run_id']}",
            f"mlflow run . --env-manager local --run-id {row['run_id']} {project}")


def last_epoch(run_id: str) -> int:
    """The last epoch whose metrics the store has (the epoch marker's largest step); 0 for none."""
    return max((step for step, _ in store.read_metric_history(run_id, names.EPOCH_MARKER)), default=0)


def describe(entry: dict, row: dict, now: float) -> str:
    """A stale run in a few lines: who, why, how far it got, how to continue it."""
    age = "none" if entry["heartbeat"] is None else f"{now - entry['heartbeat']:.0f} s ago"
    lines = [f"{entry['run_id']}  {entry['run_name']}  host {entry['host'] or '?'}  pid {entry['pid'] or '?'}  "
             f"last heartbeat {age}: {entry['reason']}"]
    if entry["kind"] == names.KIND_TRAIN:
        lines.append(f"  last finished epoch in the store: {last_epoch(entry['run_id'])}; resume it (the state is "
                     f"{files.output_dir(entry['run_id']) / files.STATE_FILE} on {entry['host'] or 'its host'}, "
                     f"under {files.OUTPUT_DIR} as set there) with:")
        direct, project = resume_commands(row)
        lines += [f"  {direct}", f"  or: {project}"]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """Flags are the kebab-case twins of the MLproject parameters, with the same defaults."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", default="",
                        help="experiment ('': the one training runs go to by default, as compare resolves it)")
    parser.add_argument("--timeout", type=float, default=str(int(liveness.TIMEOUT)),
                        help="seconds without a heartbeat before a run on another host counts as gone")
    parser.add_argument("--mark", nargs="?", const="true", default="false", choices=["true", "false"],
                        help="end the stale runs KILLED, the reason in regolith.error (--mark alone: true)")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    with refusals():
        if not args.timeout >= liveness.MIN_TIMEOUT:  # nan too
            raise Refused(f"--timeout {args.timeout:g}: expected at least {liveness.MIN_TIMEOUT:g} s (three "
                          f"heartbeats of {liveness.HEARTBEAT_SECONDS} s); a shorter one would mark live runs KILLED")
        store.check_reachable()
        experiment = store.default_experiment(args.experiment)
        track.label_launcher_run(names.KIND_RUNS, None)
        rows = {row["run_id"]: row for row in store.read_runs(experiment)}
        now = time.time()
        stale = liveness.find_stale(list(rows.values()), args.timeout)
        print(f"experiment {experiment!r}: {len(stale)} RUNNING run(s) whose process is gone "
              f"(this host: its process; other hosts: no heartbeat for {args.timeout:g} s)")
        for entry in stale:
            print(describe(entry, rows[entry["run_id"]], now))
            if args.mark == "true" and entry["markable"]:
                # Read again just before marking: a run resumed meanwhile is alive again.
                if not any(again["run_id"] == entry["run_id"] for again in
                           liveness.find_stale([store.read_run(entry["run_id"])], args.timeout)):
                    print("  not marked: it is alive again")
                    continue
                track.mark_killed(entry["run_id"], f"process gone: {entry['reason']} (marked by regolith.runs)",
                                  end_time=entry["heartbeat"])
                print("  marked KILLED")


if __name__ == "__main__":
    main()
