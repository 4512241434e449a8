"""Pulling a checkpoint out of the store: it loads with plain transformers and predicts what best.pt does."""

import pickle
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoImageProcessor, SegformerForSemanticSegmentation

from regolith import data, model as segformer, pull
from conftest import REPO
from test_evaluate import RunsCode, copy_of_run, malicious_checkpoint, stored_checkpoint


def run_pull(*argv) -> int:
    """`python -m regolith.pull ...` in this process; returns the exit code."""
    try:
        pull.main(list(argv))
    except SystemExit as exit:
        return exit.code
    return 0


def test_pulled_folder_loads_with_from_pretrained_and_predicts_like_best_pt(in_store, tmp_path):
    out = tmp_path / "pulled"
    assert run_pull(in_store["alias"], "-o", str(out)) == 0
    assert {p.name for p in out.iterdir()} == set(pull.FILES)

    model = SegformerForSemanticSegmentation.from_pretrained(out).eval()
    processor = AutoImageProcessor.from_pretrained(out)
    assert model.config.id2label == {0: "regolith", 1: "rock", 2: "sky"}

    split = data.load_split(in_store["val_split"])
    reference = segformer.model_from_checkpoint(segformer.load_checkpoint(out / "best.pt"))
    with torch.no_grad():
        expected_logits = segformer.logits_at_mask_size(reference, split.images)
        # What a user elsewhere would write: the processor, the model, the processor's post-processing.
        inputs = processor(images=[image.permute(1, 2, 0).numpy() for image in split.images], return_tensors="pt")
        outputs = model(**inputs)
    size = tuple(split.images.shape[-2:])
    predictions = processor.post_process_semantic_segmentation(outputs, target_sizes=[size] * split.frames)
    assert torch.allclose(inputs["pixel_values"], segformer.normalize(split.images), atol=1e-6)
    upsampled = torch.nn.functional.interpolate(outputs.logits, size=size, mode="bilinear", align_corners=False)
    assert torch.allclose(upsampled, expected_logits, atol=1e-5)
    assert torch.equal(torch.stack(predictions), expected_logits.argmax(1))


def test_pull_by_run_name_and_id_fetches_the_same_checkpoint(in_store, tmp_path, capsys):
    assert run_pull(in_store["name"], "-o", str(tmp_path / "by-name")) == 0
    assert run_pull(in_store["run_id"], "--out", str(tmp_path / "by-id")) == 0
    assert (tmp_path / "by-name" / "best.pt").read_bytes() == (tmp_path / "by-id" / "best.pt").read_bytes()
    assert f"dr_6 ({in_store['run_id']})" in capsys.readouterr().out


def test_pull_and_mlflow_artifacts_download_agree(in_store, tmp_path):
    """The two ways the README shows; the second exactly as a user types it."""
    assert run_pull(in_store["alias"], "-o", str(tmp_path / "pulled")) == 0
    download = ["mlflow", "artifacts", "download", "-u", f"{in_store['alias']}/artifacts/best.pt", "-d",
                str(tmp_path / "dl")]
    done = subprocess.run(download, env=in_store["env"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    # The version's source is its MLflow model: best.pt is its artifacts/best.pt, and lands there.
    assert (tmp_path / "dl" / "artifacts" / "best.pt").read_bytes() == (tmp_path / "pulled" / "best.pt").read_bytes()


def test_a_checkpoint_that_would_run_code_is_refused_and_nothing_is_written(in_store, tmp_path, capsys):
    marker = tmp_path / "marker"
    copy_of_run(in_store, "tampered-pull", malicious_checkpoint(tmp_path / "evil", marker))
    out = tmp_path / "pulled"
    assert run_pull("tampered-pull", "-o", str(out)) == 2
    err = capsys.readouterr().err
    assert "not a regolith checkpoint that loads with weights_only=True" in err and "Traceback" not in err
    assert not marker.exists() and not out.exists()


def test_a_foreign_pickle_is_refused(in_store, tmp_path, capsys):
    # A plain pickle (not torch's zip format), as a file from elsewhere might be.
    marker = tmp_path / "marker"
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "best.pt").write_bytes(pickle.dumps({"model": RunsCode(marker)}))
    copy_of_run(in_store, "foreign", tmp_path / "foreign" / "best.pt")
    assert run_pull("foreign", "-o", str(tmp_path / "out")) == 2
    assert "weights_only=True" in capsys.readouterr().err and not marker.exists()


def test_a_non_empty_output_folder_is_refused(in_store, tmp_path, capsys):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    assert run_pull(in_store["alias"], "-o", str(tmp_path / "busy")) == 2
    assert "exists and is not an empty folder" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "busy").iterdir()] == ["notes.txt"]


def test_the_same_pull_again_into_its_folder_succeeds_and_touches_nothing(in_store, tmp_path, capsys):
    out = tmp_path / "out"
    assert run_pull(in_store["name"], "-o", str(out)) == 0
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert run_pull(in_store["run_id"], "-o", str(out)) == 0  # the same run, by id this time
    assert "already holds dr_6" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


def test_transformers_pipeline_on_the_pulled_folder_agrees_with_regolith_photos(in_store, tmp_path):
    from PIL import Image
    from transformers import pipeline

    from regolith import photoset
    photo = Image.open(sorted(in_store["photos"].iterdir())[0]).convert("RGB")
    side = min(photo.size)
    square = tmp_path / "square"
    square.mkdir()
    photo.crop((0, 0, side, side)).resize((96, 96)).save(square / "photo.png")  # 3x the 32-px training size
    out = tmp_path / "out"
    assert run_pull(in_store["name"], "-o", str(out)) == 0
    found = pipeline("image-segmentation", model=str(out))(Image.open(square / "photo.png"))
    masks = {entry["label"]: np.asarray(entry["mask"]) > 0 for entry in found}
    piped = float(masks["rock"].mean()) if "rock" in masks else 0.0
    # what regolith.photos does: fit to the training size, predict, shares over the photo's own pixels
    payload = segformer.load_checkpoint(out / "best.pt")
    fitted = photoset.prepare(square, 32, "letterbox")
    predictions = segformer.predict(segformer.model_from_checkpoint(payload), fitted["images"], "fp32", "cpu")
    shares, _ = photoset.rock_flood(predictions, fitted["valid"])
    assert abs(piped - shares[0]["rock"]) < 0.02, (piped, shares[0]["rock"])


@pytest.mark.parametrize("ref,expected", [("dr_9999", "no run with that id or name"),
                                          ("models:/regolith-segformer", "expected models:/<name>@<alias>")])
def test_unknown_references_are_clear_errors(in_store, tmp_path, ref, expected, capsys):
    assert run_pull(ref, "-o", str(tmp_path / "out")) == 2
    assert expected in capsys.readouterr().err



def test_a_checkpoint_that_loads_safely_but_is_not_ours_is_refused(in_store, tmp_path, capsys):
    (tmp_path / "foreign").mkdir()
    torch.save({"hello": torch.zeros(2)}, tmp_path / "foreign" / "best.pt")
    copy_of_run(in_store, "not-ours-pull", tmp_path / "foreign" / "best.pt")
    assert run_pull("not-ours-pull", "-o", str(tmp_path / "out")) == 2
    assert "not a regolith checkpoint: lacks 'classes', 'config'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_full_disk_leaves_no_truncated_checkpoint_in_the_folder(in_store, tmp_path):
    import sys
    from conftest import small_disk_command
    out = tmp_path / "small-disk"
    size = (in_store["root"] / "outputs" / in_store["run_id"] / "best.pt").stat().st_size
    # Room for the small files, not for best.pt: the old copy left a truncated best.pt there.
    cmd = small_disk_command(out, max(8, size // 2048),
                             [sys.executable, "-m", "regolith.pull", in_store["alias"], "-o", str(out)])
    if cmd is None:
        pytest.skip("needs unshare -rm (user namespaces) for a real full disk")
    done = subprocess.run(cmd, env={**in_store["env"], "PYTHONPATH": str(REPO)}, cwd=in_store["root"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"{out / 'best.pt'}: could not write it (No space left on device): the disk is full" in done.stderr
    assert "then run it again" in done.stderr and "--resume" not in done.stderr and "Traceback" not in done.stderr
    assert [line for line in done.stdout.splitlines() if line.startswith("FILE ")] == []  # nothing, not half


@pytest.mark.parametrize("kind", ["fifo", "/dev/zero"])
def test_a_stored_best_pt_that_is_a_fifo_or_a_link_to_a_device_is_refused_in_one_line(in_store, tmp_path, kind,
                                                                                       capsys):
    import os
    from mlflow.tracking import MlflowClient
    run_id = copy_of_run(in_store, f"special-{kind.strip('/')}", stored_checkpoint(in_store, tmp_path))
    stored = Path(MlflowClient().get_run(run_id).info.artifact_uri.removeprefix("file://")) / "best.pt"
    stored.unlink()
    if kind == "fifo":
        os.mkfifo(stored)
    else:
        stored.symlink_to(kind)
    assert run_pull(run_id, "-o", str(tmp_path / "out")) == 2
    err = capsys.readouterr().err
    assert "best.pt is 0 bytes in the artifact store" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_a_checkpoint_whose_head_has_other_classes_than_it_names_is_refused_and_nothing_written(in_store, tmp_path,
                                                                                                capsys):
    from test_model import five_class_head
    payload = torch.load(stored_checkpoint(in_store, tmp_path), weights_only=True)
    (tmp_path / "five").mkdir()
    torch.save({**payload, **five_class_head()}, tmp_path / "five" / "best.pt")  # 'classes' still names 3
    run_id = copy_of_run(in_store, "five-heads", tmp_path / "five" / "best.pt")
    assert run_pull(run_id, "-o", str(tmp_path / "out")) == 2
    assert "its head is for 5 classes" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
