"""The photos verb through a real store, and training's -P real_images (the pure pieces: test_photoset)."""

import json
import subprocess
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from conftest import REPO, make_split
from regolith import ROCK, photos, photoset


# ---- tracked: during training, and the verb through the store ----------------------------------------

def test_training_watches_the_real_photos_and_fixed_frames_every_epoch(in_store, tmp_path):
    """`-P real_images` and the per-epoch images: one real/rock_share_mean per epoch, pictures at each step."""
    client = MlflowClient()
    run = client.get_run(in_store["run_id"])
    shares = {m.step: m.value for m in client.get_metric_history(in_store["run_id"], "real/rock_share_mean")}
    assert sorted(shares) == [1, 2] and all(0 <= value <= 1 for value in shares.values())
    assert run.data.metrics["best/real_rock_share"] == shares[int(run.data.metrics["best/epoch"])]
    assert [m.step for m in client.get_metric_history(in_store["run_id"], "time/epoch_images_s")] == [1, 2]
    assert run.data.tags["real/photos_digest"] == photoset.photo_set_digest(in_store["photos"])
    contexts = {d.dataset.name: [t.value for t in d.tags] for d in run.inputs.dataset_inputs}
    assert contexts["photos"] == ["real"]
    images = [info.path for info in client.list_artifacts(in_store["run_id"], "images")]
    for key in ("predictions", "real_photos"):  # MLflow's image view: one picture per key and step
        assert {int(path.split("+step+")[1].split("+")[0]) for path in images
                if path.startswith(f"images/{key}+") and path.endswith(".png")} == {1, 2}, key
    environment = Path(mlflow.artifacts.download_artifacts(run_id=in_store["run_id"], artifact_path="environment.txt",
                                                           dst_path=str(tmp_path))).read_text()
    assert f"torch=={torch.__version__}" in environment and "mlflow==" in environment
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True)
    expected = head.stdout.strip() if head.returncode == 0 else "unknown"  # the code's commit, outside git unknown
    # MLflow tags the commit itself; ours is whether the checkout had uncommitted changes on top of it.
    assert run.data.tags.get("mlflow.source.git.commit", "unknown") == expected
    assert run.data.tags["regolith.git_dirty"] in (("true", "false") if head.returncode == 0 else ("unknown",))
    # the instruction set CPU kernels were picked for: it moves IoU in the 4th decimal between CPUs
    assert run.data.tags["regolith.cpu_capability"] == torch.backends.cpu.get_cpu_capability()


def test_the_preview_frames_are_the_ones_with_most_rock_every_epoch(tmp_path):
    from argparse import Namespace
    from regolith import data, train
    make_split(tmp_path / "val", frames=6, seed=3)
    split = data.load_split(tmp_path / "val")
    views = train.epoch_views(Namespace(epoch_images="true", real_images=""), split, split)
    rock = (split.masks == ROCK).flatten(1).sum(1).tolist()
    assert views["frames"] == sorted(range(6), key=lambda i: (-rock[i], i))[:4]
    assert train.epoch_views(Namespace(epoch_images="false", real_images=""), split, split) == {}


def test_photos_through_mlflow_run_records_on_both_runs_and_never_overwrites(in_store, tmp_path):
    from test_evaluate import copy_of_run, stored_checkpoint
    payload = torch.load(stored_checkpoint(in_store, tmp_path / "stored"), weights_only=True)
    payload["model"]["decode_head.classifier.bias"][ROCK] += 3.0  # a checkpoint that calls more rock
    (tmp_path / "other").mkdir()
    torch.save(payload, tmp_path / "other" / "best.pt")
    other = copy_of_run(in_store, "rock-happy", tmp_path / "other" / "best.pt")

    cmd = ["mlflow", "run", str(REPO), "--env-manager", "local", "-e", "photos", "-P", f"run={in_store['run_id']}",
           "-P", f"images={in_store['photos']}", "-P", f"compare={other}"]
    done = subprocess.run(cmd, cwd=in_store["root"], env=in_store["env"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "rock-happy calls more rock" not in done.stdout and "dr_6 - rock-happy:" in done.stdout

    client = MlflowClient()
    digest = photoset.photo_set_digest(in_store["photos"])
    epoch = payload["epoch"]
    for run_id in (in_store["run_id"], other):
        run = client.get_run(run_id)
        assert run.data.tags["real/photos_digest"] == digest
        folder = run.data.tags["real/artifacts"]
        listed = {Path(info.path).name for info in client.list_artifacts(run_id, folder)}
        assert {"photos.csv", "photos.json", "panels", "contact_sheet.png"} <= listed
        assert int(run.data.metrics["real/photos"]) == 3
        assert epoch in [m.step for m in client.get_metric_history(run_id, "real/rock_share_mean")]
        assert "real" in [t.value for d in run.inputs.dataset_inputs for t in d.tags]
    local = Path(mlflow.artifacts.download_artifacts(run_id=other, artifact_path=folder, dst_path=str(tmp_path / "dl")))
    measured = json.loads((local / "photos.json").read_text())
    ours, theirs = ([share["rock"] for share in c["shares"]] for c in measured["checkpoints"])
    difference = measured["comparison"]["rock_share_difference"]
    assert difference["mean"] == pytest.approx(np.mean(np.subtract(ours, theirs)))
    assert difference["b_more"] == 3 and difference["mean"] < 0  # the biased head floods every photo
    assert len(list((local / "panels").iterdir())) == 3

    before = {info.path for info in client.list_artifacts(in_store["run_id"], "real")}
    photos.main(["--run", in_store["run_id"], "--images", str(in_store["photos"])])  # a second measurement
    after = {info.path for info in client.list_artifacts(in_store["run_id"], "real")}
    assert before < after and len(after) == len(before) + 1  # a new folder; the first is untouched


def test_photos_by_registry_alias_measures_the_checkpoint_the_version_serves(in_store, tmp_path, capsys):
    """The version's source is its MLflow model: photos reads the best.pt inside it, and records on the run."""
    photos.main(["--run", in_store["alias"], "--images", str(in_store["photos"])])
    folder = MlflowClient().get_run(in_store["run_id"]).data.tags["real/artifacts"]
    assert f"in run dr_6's {folder}/" in capsys.readouterr().out  # the folder's own name, not a placeholder
    local = mlflow.artifacts.download_artifacts(run_id=in_store["run_id"], artifact_path=f"{folder}/photos.json",
                                                dst_path=str(tmp_path))
    measured = json.loads(Path(local).read_text())["checkpoints"][0]
    assert measured["checkpoint"] == "models:/regolith-segformer/1/artifacts/best.pt"
    assert measured["run_id"] == in_store["run_id"] and measured["ref"] == in_store["alias"]


def test_a_malformed_compare_checkpoint_is_refused_before_anything_is_recorded(in_store, tmp_path, capsys):
    from test_evaluate import copy_of_run, stored_checkpoint
    payload = torch.load(stored_checkpoint(in_store, tmp_path / "stored"), weights_only=True)
    (tmp_path / "bad").mkdir()
    torch.save({**payload, "epoch": "three"}, tmp_path / "bad" / "best.pt")
    bad = copy_of_run(in_store, "epoch-text", tmp_path / "bad" / "best.pt")
    before = {run_id: MlflowClient().get_run(run_id).data.tags.get("real/artifacts") for run_id in (in_store["run_id"], bad)}
    with pytest.raises(SystemExit) as exit_status:
        photos.main(["--run", in_store["run_id"], "--images", str(in_store["photos"]), "--compare", bad])
    assert exit_status.value.code == 2
    assert "'epoch' is 'three', expected a whole number" in capsys.readouterr().err
    assert {run_id: MlflowClient().get_run(run_id).data.tags.get("real/artifacts") for run_id in before} == before


def test_a_photo_folder_with_a_name_that_is_not_utf8_is_refused_in_one_line(in_store, tmp_path, capsys):
    import os
    import shutil
    folder = tmp_path / "latin1"
    shutil.copytree(in_store["photos"], folder)
    first = sorted(folder.iterdir())[0]
    first.rename(os.fsdecode(bytes(folder) + b"/caf\xe9.jpg"))
    before = MlflowClient().get_run(in_store["run_id"]).data.tags.get("real/artifacts")
    with pytest.raises(SystemExit) as exit_status:
        photos.main(["--run", in_store["run_id"], "--images", str(folder)])
    assert exit_status.value.code == 2
    assert "'caf\\xe9.jpg' is not valid UTF-8" in capsys.readouterr().err
    assert MlflowClient().get_run(in_store["run_id"]).data.tags.get("real/artifacts") == before
