"""What a run records of the code and the machine it ran on, beside its own numbers: versions, packages, git state.

A result that cannot be traced to its inputs is not a result: every training run logs the library
versions as params, every installed distribution as ``environment.txt``, and whether the checkout
had uncommitted changes (MLflow tags the commit itself).
"""

import platform
import subprocess
from importlib import metadata
from pathlib import Path

import torch


def cpu_capability() -> str:
    """The instruction set torch picked its CPU kernels for (DEFAULT, AVX2, AVX512, ...; ATEN_CPU_CAPABILITY overrides).

    Two CPUs with different ones give the same run numbers that differ in the 4th decimal of IoU.
    """
    return torch.backends.cpu.get_cpu_capability()


def library_versions() -> dict:
    return {"version.python": platform.python_version(), "version.torch": torch.__version__,
            **{f"version.{name}": metadata.version(name) for name in ("transformers", "mlflow")}}


def environment() -> str:
    """environment.txt: the Python, the platform and every installed distribution with its version, sorted."""
    installed = sorted({f"{dist.metadata['Name']}=={dist.version}" for dist in metadata.distributions()
                        if dist.metadata["Name"]}, key=str.lower)
    return f"# python {platform.python_version()} on {platform.platform()}\n" + "\n".join(installed) + "\n"


def git_dirty() -> str:
    """Whether the checkout this code runs from has uncommitted changes: "true", "false", or "unknown" outside git.

    The commit itself MLflow tags (``mlflow.source.git.commit``); a commit with edits on top is not that commit.
    """
    try:
        changed = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                 cwd=Path(__file__).resolve().parent, capture_output=True, text=True, timeout=10,
                                 check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return str(bool(changed)).lower()
