"""Whether a run's process still runs: host, pid, process start, heartbeat, and the judgement of stale runs.

Every run ``track.run`` opens records where its process runs (``where``) and refreshes a
heartbeat; a process killed with ``kill -9``, by the OOM killer or with its node cannot end its
run. ``stale_runs`` tells, from a run's tags alone, whether its process is gone. This module
reads ``/proc`` and the clock, never MLflow: ``regolith.runs`` lists and marks what it finds,
``track`` refuses to resume a run that may still be alive, and compare and sweep name stale runs.
"""

import os
import socket
import time
from datetime import datetime, timezone
from pathlib import Path

from regolith import as_number, names

HEARTBEAT_SECONDS = 30  # the heartbeat thread's period; every epoch refreshes it too
TIMEOUT = 600.0  # seconds without a heartbeat before a run on another host counts as gone
# The shortest timeout: three missed beats. A live run beats every HEARTBEAT_SECONDS (and a beat can wait
# up to 20 s on a SQLite lock), so anything shorter would call a live run gone.
MIN_TIMEOUT = 3.0 * HEARTBEAT_SECONDS


def heartbeat_now() -> str:
    """The heartbeat's value: UTC time, ISO 8601 to the second (2025-06-01T12:00:00+00:00)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def heartbeat_time(tags: dict) -> float | None:
    """The run's last heartbeat, epoch seconds; None where it has none."""
    try:
        return datetime.fromisoformat(tags[names.HEARTBEAT]).timestamp()
    except (KeyError, TypeError, ValueError):
        return None


def host() -> tuple:
    """(host name, pid namespace) of this process: two processes can compare pids only when both match.

    Containers that share the host's name (``docker --network host``) have pid namespaces of their
    own, in which a pid means another process.
    """
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = ""
    return socket.gethostname(), namespace


def _proc_stat(pid: int) -> list | None:
    """The fields of /proc/<pid>/stat after the command name (state first), or None."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def process_started(pid: int) -> float | None:
    """When process ``pid`` started, in epoch seconds to 1/100 s; None where it cannot be told.

    Linux: boot time plus the start in clock ticks (as psutil computes it); elsewhere psutil if installed.
    """
    fields = _proc_stat(pid)
    if fields:
        try:
            boot = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                        if line.startswith("btime "))
            return round(boot + int(fields[19]) / os.sysconf("SC_CLK_TCK"), 2)
        except (OSError, ValueError, IndexError, StopIteration):
            return None
    try:
        import psutil
        return round(psutil.Process(pid).create_time(), 2)
    except Exception:
        return None


def process_alive(pid: int, started: float | None = None) -> bool:
    """Whether process ``pid`` of this host still runs and, given ``started``, is the process that started then.

    A zombie (exited, not yet reaped) is gone; a pid that now belongs to a process started at
    another time was reused. Whatever cannot be told counts as alive: a live run is never reaped.
    """
    if pid <= 0:
        return True  # not a pid this code recorded; os.kill(0 or -1) would mean a whole group
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    except OSError:
        return True
    fields = _proc_stat(pid)
    if fields and fields[0] == "Z":
        return False
    now = process_started(pid)
    return started is None or now is None or abs(now - started) <= 1


def where() -> dict:
    """The tags that say where this process runs, with a first heartbeat."""
    name, namespace = host()
    return {names.HOST: name, names.PID: os.getpid(), names.PID_NAMESPACE: namespace,
            names.PROCESS_START: process_started(os.getpid()) or "", names.HEARTBEAT: heartbeat_now()}


def stale_runs(rows: list, here: tuple, now: float, timeout: float, alive=process_alive) -> list:
    """The RUNNING runs among ``rows`` (``store.read_runs``' rows) whose process is gone, oldest first.

    ``here`` is (host name, pid namespace) of the caller (``host()``), ``now`` epoch seconds,
    ``alive(pid, started)`` tells whether a process of this host still runs. Each entry: run_id,
    run_name, kind, host, pid, heartbeat (epoch seconds or None), reason, and markable (False for
    a run recorded before heartbeats, which may be alive).
    """
    stale = []
    for row in sorted(rows, key=lambda row: (row["start_time"] or 0, row["run_id"])):
        if row["status"] != "RUNNING":
            continue
        tags = row["tags"]
        beat = heartbeat_time(tags)
        entry = {"run_id": row["run_id"], "run_name": row["run_name"], "kind": tags.get(names.KIND),
                 "host": tags.get(names.HOST), "pid": tags.get(names.PID), "heartbeat": beat}
        started = (row["start_time"] or 0) / 1000
        if names.HOST in tags and names.PID in tags:
            pid = as_number(tags[names.PID])
            if (tags[names.HOST], tags.get(names.PID_NAMESPACE, "")) == tuple(here):
                if pid is not None and pid == int(pid) and not alive(int(pid), as_number(tags.get(names.PROCESS_START))):
                    stale.append({**entry, "markable": True,
                                  "reason": f"its process (pid {int(pid)} on {tags[names.HOST]}) is gone"})
            elif now - (beat or started) > timeout:
                stale.append({**entry, "markable": True,
                              "reason": f"no heartbeat from {tags[names.HOST]} for {now - (beat or started):.0f} s "
                                        f"(timeout {timeout:g} s)"})
        elif (tags.get(names.ENTRY_POINT) in names.TRACKED_ENTRY_POINTS and names.KIND not in tags
              and now - started > timeout):
            # `mlflow run` opened it, and its process never got as far as saying where it runs (it
            # does within seconds): killed as it started. Judged by its age alone.
            stale.append({**entry, "markable": True,
                          "reason": f"no host or process recorded: RUNNING for {now - started:.0f} s (timeout "
                                    f"{timeout:g} s) since `mlflow run` opened it; its process was gone before "
                                    f"it started"})
        elif tags.get(names.KIND) == names.KIND_TRAIN and now - started > timeout:
            # Recorded before runs said where they run: maybe dead, maybe still training.
            stale.append({**entry, "markable": False,
                          "reason": f"unknown (recorded before heartbeats): RUNNING since {now - started:.0f} s "
                                    f"ago, with no host or process recorded; not marked"})
    return stale


def find_stale(rows: list, timeout: float = TIMEOUT) -> list:
    """``stale_runs`` as seen from this process, now."""
    return stale_runs(rows, host(), time.time(), timeout)


def known_dead(rows: list, kind: str = names.KIND_TRAIN) -> list:
    """The stale runs of ``kind`` whose process is known to be gone (not merely unknown), as compare and sweep name them."""
    return [entry for entry in find_stale(rows) if entry["markable"] and entry["kind"] == kind]


def resume_blocker(row: dict) -> str | None:
    """Why a resume of the run ``row`` (``store.read_runs``' row) is refused: its process may still train it; else None.

    A RUNNING run whose process is not known gone; and a run ``regolith.runs --mark`` ended KILLED
    (``regolith.marked_killed``) whose process may have been alive all along (a pid namespace of its
    own, a late heartbeat): it waits until that process is gone here, or its heartbeat is older
    than ``MIN_TIMEOUT``. A run recorded before hosts were is not judged.
    """
    tags, status = row["tags"], row["status"]
    marked = status != "RUNNING" and names.MARKED in tags
    if (status != "RUNNING" and not marked) or names.HOST not in tags:
        return None
    if marked and as_number(tags.get(names.PID)) == os.getpid():
        return None  # this very process, which is not training it
    if find_stale([{**row, "status": "RUNNING"}], MIN_TIMEOUT if marked else TIMEOUT):
        return None  # its process is gone
    where = f"pid {tags.get(names.PID)} on {tags.get(names.HOST)}, last heartbeat {tags.get(names.HEARTBEAT)}"
    if marked:
        return (f"run {row['run_id']} was marked {status} by regolith.runs ({tags[names.MARKED]}), but its process "
                f"may still train it: {where}. Two processes would write one state.pt; resume it once that "
                f"process has ended, or its heartbeat is {MIN_TIMEOUT:g} s old")
    return (f"run {row['run_id']} is RUNNING and may be alive: {where}. Wait for it to end, or, if it is gone, for "
            f"its heartbeat to be {TIMEOUT:g} s old (python -m regolith.runs --mark ends it KILLED; --timeout "
            f"shortens the wait), then resume")
