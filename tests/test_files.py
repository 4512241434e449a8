"""A run's local files: atomic writes never write through a planted link, never overwrite where told not to."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from conftest import REPO
from regolith import Refused, files


def test_a_link_planted_at_the_old_partial_name_is_never_written_through(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("mine")
    out = tmp_path / "res"
    out.mkdir()
    (out / "summary.json.partial").symlink_to(victim)
    files.write_atomic(out / "summary.json", b"{}\n")
    assert victim.read_text() == "mine" and (out / "summary.json").read_bytes() == b"{}\n"
    assert not (out / "summary.json").is_symlink()
    assert {p.name for p in out.iterdir()} == {"summary.json", "summary.json.partial"}  # no temporary file left


def test_written_files_get_the_usual_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        files.write_atomic(tmp_path / "a.json", b"1")
    finally:
        os.umask(umask)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644


def test_an_exclusive_write_never_replaces_a_file(tmp_path):
    (tmp_path / "summary.json").write_text("first")
    with pytest.raises(Refused, match="summary.json: exists already"):
        files.write_atomic(tmp_path / "summary.json", b"second", exclusive=True)
    assert (tmp_path / "summary.json").read_text() == "first" and len(list(tmp_path.iterdir())) == 1


def test_the_full_disk_message_advises_resume_only_where_a_state_exists(tmp_path):
    full = OSError(28, "No space left on device")
    assert "then run it again" in str(files.disk_full(tmp_path / "best.pt", full))
    (tmp_path / files.STATE_FILE).write_bytes(b"")
    assert "--resume the run" in str(files.disk_full(tmp_path / "best.pt", full))


def under_memory_limit(script: str, headroom_mb: int) -> subprocess.CompletedProcess:
    """Run ``script`` (after its set-up, up to a line ``# limit``) with ``ulimit -v`` at its size then plus ``headroom_mb``."""
    setup, rest = script.split("# limit\n")
    limit = ("import resource\nsize = int(next(l for l in open('/proc/self/status') if l.startswith('VmSize')).split()[1])\n"
             f"resource.setrlimit(resource.RLIMIT_AS, ((size + {headroom_mb * 1024}) * 1024,) * 2)\n")
    return subprocess.run([sys.executable, "-c", textwrap.dedent(setup) + limit + textwrap.dedent(rest)],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})


def test_a_state_larger_than_the_memory_left_is_still_saved(tmp_path):
    # 64 MB of tensors, 32 MB of room: a copy in memory (the old save) cannot be made, a streamed one needs none.
    done = under_memory_limit(f"""
        import torch
        from regolith import files
        state = {{"model": torch.ones(16 * 1024 * 1024)}}
        # limit
        files.save_atomic(state, __import__("pathlib").Path({str(tmp_path / "state.pt")!r}))
        """, headroom_mb=32)
    assert done.returncode == 0, done.stderr
    assert torch.load(tmp_path / "state.pt", weights_only=True)["model"].sum() == 16 * 1024 * 1024
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]
