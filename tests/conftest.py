"""Shared test fixtures: tiny SegFormer encoders in the hub's own file layout, small splits, a temp store.

The hub is not reachable from tests (HF_HUB_OFFLINE=1). Instead a tiny MiT encoder is saved
exactly as ``nvidia/mit-b0`` is on the hub: a ``SegformerForImageClassification`` checkpoint
whose tensors carry the legacy names (``segformer.encoder.block.…``) that transformers 5
renames on load, so the tests go through the same loading path as the real encoder.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from transformers import SegformerConfig, SegformerForImageClassification

from regolith import synth

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
# Decoded splits are cached by digest; tests keep theirs out of the home directory.
os.environ.setdefault("REGOLITH_CACHE_DIR", os.path.join(__import__("tempfile").mkdtemp(prefix="regolith-cache-")))
# `mlflow run` starts `python -m regolith...` through the shell: both must be this interpreter's.
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"

REPO = Path(__file__).resolve().parents[1]

# transformers 5's current SegFormer names -> the hub's legacy names (the inverse of its load-time mapping).
TO_LEGACY = [
    (r"segformer\.stages\.(\d+)\.patch_embeddings\.", r"segformer.encoder.patch_embeddings.\1."),
    (r"segformer\.stages\.(\d+)\.blocks\.", r"segformer.encoder.block.\1."),
    (r"segformer\.stages\.(\d+)\.layer_norm\.", r"segformer.encoder.layer_norm.\1."),
    (r"attention\.q_proj", "attention.self.query"),
    (r"attention\.k_proj", "attention.self.key"),
    (r"attention\.v_proj", "attention.self.value"),
    (r"attention\.sequence_reduction\.sequence_reduction", "attention.self.sr"),
    (r"attention\.sequence_reduction\.layer_norm", "attention.self.layer_norm"),
    (r"attention\.o_proj", "attention.output.dense"),
    (r"mlp\.fc1", "mlp.dense1"),
    (r"mlp\.fc2", "mlp.dense2"),
    (r"layernorm_before", "layer_norm_1"),
    (r"layernorm_after", "layer_norm_2"),
]


def legacy_name(key: str) -> str:
    for pattern, replacement in TO_LEGACY:
        key = re.sub(pattern, replacement, key)
    return key


def tiny_config() -> SegformerConfig:
    return SegformerConfig(hidden_sizes=[8, 16, 24, 32], num_attention_heads=[1, 1, 2, 2], depths=[1, 1, 1, 1],
                           decoder_hidden_size=16, num_labels=10)


def tiny_size_config(size: str) -> SegformerConfig:
    """A tiny encoder with the depth pattern of MiT ``size`` (b0: 2-2-2-2, b2: 3-4-6-3) and its widths' ratios / 8."""
    depths, widths = {"b0": ([2, 2, 2, 2], [4, 8, 20, 32]), "b2": ([3, 4, 6, 3], [8, 16, 40, 64])}[size]
    return SegformerConfig(hidden_sizes=widths, num_attention_heads=[1, 1, 2, 2], depths=depths,
                           decoder_hidden_size=16, num_labels=10)


def save_legacy_encoder(directory: Path, drop: tuple = (), seed: int = 123, config=None) -> dict:
    """Write a tiny ImageNet-style MiT checkpoint in the hub layout; returns its legacy state dict."""
    torch.manual_seed(seed)
    classifier = SegformerForImageClassification(config or tiny_config())
    state = {legacy_name(k): v.contiguous() for k, v in classifier.state_dict().items()}
    for key in drop:
        state.pop(key)
    directory.mkdir(parents=True, exist_ok=True)
    classifier.config.architectures = ["SegformerForImageClassification"]
    classifier.config.save_pretrained(directory)
    save_file(state, str(directory / "model.safetensors"), metadata={"format": "pt"})
    return state


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("encoders") / "tiny-mit"
    save_legacy_encoder(directory)
    return directory


def write_frame(split: Path, index: int, rgb: np.ndarray, mask: np.ndarray):
    (split / "rgb").mkdir(parents=True, exist_ok=True)
    (split / "mask").mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb.astype(np.uint8), "RGB").save(split / "rgb" / f"rgb_{index:05d}.png")
    Image.fromarray(mask.astype(np.uint8), "L").save(split / "mask" / f"mask_{index:05d}.png")


def simple_frame(rng, size=32):
    """Sky on top, regolith below, one bright square rock; some 255 at the horizon."""
    mask = np.zeros((size, size), np.uint8)
    horizon = int(rng.integers(size // 4, size // 2))
    mask[:horizon] = 2
    mask[horizon] = 255
    y, x = rng.integers(horizon + 2, size - 6), rng.integers(0, size - 6)
    mask[y:y + 5, x:x + 5] = 1
    rgb = np.stack([np.choose(mask.clip(0, 3), [90, 200, 10, 0])] * 3, -1) + rng.integers(0, 20, (size, size, 1))
    return rgb, mask


def make_split(split: Path, frames: int = 6, size: int = 32, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for i in range(frames):
        write_frame(split, i, *simple_frame(rng, size))
    return split


def make_datasets(root: Path, train_frames: int, val_frames: int, size: int = 32) -> Path:
    """A datasets root as a user's looks: train_dr and its sibling validation split test_photoreal."""
    make_split(root / "train_dr", frames=train_frames, size=size, seed=0)
    make_split(root / "test_photoreal", frames=val_frames, size=size, seed=2)
    return root


def _forget_experiment():
    # mlflow.set_experiment remembers the experiment in-process and in MLFLOW_EXPERIMENT_ID (for
    # subprocesses); neither may leak into the next test's store.
    import mlflow.tracking.fluent
    mlflow.tracking.fluent._active_experiment_id = None
    for name in ("MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID"):
        os.environ.pop(name, None)


@pytest.fixture
def store(tmp_path, monkeypatch) -> str:
    """A real SQLite tracking store with its artifacts in the temp dir, for this test only."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    _forget_experiment()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("REGOLITH_OUTPUT_DIR", str(tmp_path / "outputs"))
    monkeypatch.chdir(tmp_path)  # MLflow's default artifact root ./mlruns lands here
    yield uri
    _forget_experiment()


def save_hub_cache(cache: Path, repo_id: str = "regolith-test/tiny-mit") -> tuple:
    """Place the tiny encoder in a huggingface_hub cache, as a download of ``repo_id`` would leave it.

    With HF_HUB_CACHE pointing here and HF_HUB_OFFLINE=1, ``from_pretrained(repo_id)`` resolves
    the hub id exactly as it does for ``nvidia/mit-b0`` on a box that has it cached.
    """
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    save_legacy_encoder(repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return repo_id, commit


@pytest.fixture(scope="session")
def hub_cache(tmp_path_factory) -> tuple:
    """(cache dir, repo id, commit) of a tiny encoder cached under a hub id."""
    cache = tmp_path_factory.mktemp("hf-cache")
    repo_id, commit = save_hub_cache(cache)
    return cache, repo_id, commit


def free_port() -> int:
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(backend_uri: str, artifacts: Path, port: int, log: Path):
    """A real `mlflow server` on loopback (any backend store, proxied artifacts); returns it once healthy."""
    import subprocess
    import time
    import urllib.request
    out = log.open("a")
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", backend_uri, "--serve-artifacts", "--artifacts-destination", str(artifacts),
         "--workers", "1"], stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 90
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                if response.status == 200:
                    return server
        except OSError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            stop_server(server)
            pytest.fail(f"mlflow server did not come up: {log.read_text()[-3000:]}")
        time.sleep(0.3)


def stop_server(server):
    import signal
    try:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    except ProcessLookupError:
        pass
    except Exception:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=30)


def copy_project(destination: Path) -> Path:
    """The project's tracked shape without stores, data or outputs, so a run writes nothing into the repo."""
    import shutil
    ignore = shutil.ignore_patterns(".git", ".venv", "__pycache__", "mlruns", "mlflow.db", "outputs", "data",
                                    "results", ".pytest_cache", "tests")
    shutil.copytree(REPO, destination, ignore=ignore)
    return destination


@pytest.fixture(scope="session")
def trained(tmp_path_factory, tiny_encoder) -> dict:
    """A finished, registered tiny training run in its own store, trained once per test session.

    `python -m regolith.train` with the tiny encoder on 32 px frames for 2 epochs, pointed at three
    rock-free photographic JPEGs from ``synth`` (``--real-images``), as a user's run would be.
    """
    root = tmp_path_factory.getbasetemp() / "trained-run"
    env = {key: value for key, value in os.environ.items()
           if key not in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME")}
    env.update(MLFLOW_TRACKING_URI=f"sqlite:///{root / 'mlflow.db'}", REGOLITH_OUTPUT_DIR=str(root / "outputs"),
               PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", TQDM_DISABLE="1")
    record = root / "run.json"
    if not record.exists():
        make_split(root / "data" / "train_dr", frames=6, seed=0)
        make_split(root / "data" / "test_photoreal", frames=4, seed=1)
        synth.write_photos(root / "data", 3, seed=0)
        cmd = [sys.executable, "-m", "regolith.train", "--split", str(root / "data" / "train_dr"),
               "--pretrained", str(tiny_encoder), "--epochs", "2", "--batch", "4",
               "--real-images", str(root / "data" / "photos")]
        done = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "registered models:/regolith-segformer/1 as models:/regolith-segformer@dr_6" in done.stdout
        (root / "train.log").write_text(done.stdout + done.stderr)
        record.write_text(json.dumps({"run_id": done.stdout.split("; run ")[1].split(",")[0]}))
    return {"root": root, "env": env, "uri": env["MLFLOW_TRACKING_URI"], "name": "dr_6",
            "alias": "models:/regolith-segformer@dr_6", "val_split": root / "data" / "test_photoreal",
            "train_split": root / "data" / "train_dr", "photos": root / "data" / "photos",
            **json.loads(record.read_text())}


@pytest.fixture
def in_store(trained, monkeypatch) -> dict:
    """Point this process at the trained run's store, as a user's shell would be."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained["uri"])
    for name in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(trained["root"])
    return trained


def make_demo_layout(root: Path) -> Path:
    """Tiny splits with the demo recipe's frame counts (train_nodr 80, train_dr 160), for recipe tests."""
    make_split(root / "train_nodr", frames=80, seed=1)
    make_split(root / "train_dr", frames=160, seed=0)
    make_split(root / "test_photoreal", frames=8, seed=2)
    return root


def small_disk_command(mount: Path, kilobytes: int, command: list) -> list | None:
    """``command`` with a ``kilobytes`` tmpfs mounted at ``mount`` (a full disk, for real), in a user and mount
    namespace of its own (``unshare -rm``: no root needed where user namespaces are allowed); afterwards
    it lists what is left there as ``FILE name size`` lines. None where namespaces are not allowed here."""
    import shlex
    import shutil
    if not shutil.which("unshare") or subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode:
        return None
    mount.mkdir(parents=True, exist_ok=True)
    script = (f"mount -t tmpfs -o size={kilobytes}k tmpfs {shlex.quote(str(mount))} || exit 99; "
              f"{shlex.join(command)}; status=$?; "
              f"find {shlex.quote(str(mount))} -mindepth 1 -printf 'FILE %P %s\\n'; exit $status")
    return ["unshare", "-rm", "sh", "-c", script]
