"""The checkpoint as an MLflow model: logged when a run finishes, loaded by alias, served over HTTP for real.

The tiny run of conftest's ``trained`` fixture (32 px frames, three synthetic photos) is the
model; the server is one real ``mlflow models serve`` on 127.0.0.1, shared by the HTTP tests.
"""

import base64
import io
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import requests
import torch
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from PIL import Image

from conftest import free_port, stop_server
from regolith import CLASSES, ROCK, data, model as segformer, photoset
from test_evaluate import stored_checkpoint
from test_photoset import blank_png, png_bytes

CPU = torch.device("cpu")


def decoded(text: str) -> np.ndarray:
    """A mask_png / rock_probability_png cell as its array."""
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(text))))


def stored_net(trained: dict, tmp_path: Path):
    return segformer.model_from_checkpoint(segformer.load_checkpoint(stored_checkpoint(trained, tmp_path)))


def test_a_finished_run_is_an_mlflow_model_linked_to_its_best_epoch_and_registered(in_store, tmp_path):
    client = MlflowClient()
    run = client.get_run(in_store["run_id"])
    model_uri = run.data.tags["regolith.logged_model"]
    model = mlflow.get_logged_model(model_uri.removeprefix("models:/"))
    assert model.source_run_id == in_store["run_id"] and model.name == "model" and str(model.status) == "READY"
    best_epoch = int(run.data.metrics["best/epoch"])
    linked = {metric.key: (metric.value, metric.step) for metric in model.metrics}
    assert linked["val/iou_rock"] == (run.data.metrics["best/iou_rock"], best_epoch)  # the best epoch's metrics
    assert linked["real/rock_share_mean"][1] == best_epoch

    version = client.get_model_version_by_alias("regolith-segformer", "dr_6")
    assert version.source == model_uri and version.run_id == in_store["run_id"]
    assert version.tags["regolith.checkpoint"] == "artifacts/best.pt"
    local = Path(mlflow.artifacts.download_artifacts(model_uri, dst_path=str(tmp_path / "model")))
    assert {"MLmodel", "input_example.json", "serving_input_example.json", "regolith_segmenter.py",
            "requirements.txt"} <= {p.name for p in local.iterdir()}
    # best.pt stays the run's artifact, and the model carries the same bytes
    assert (local / "artifacts" / "best.pt").read_bytes() == stored_checkpoint(in_store, tmp_path / "run").read_bytes()
    info = mlflow.models.get_model_info(in_store["alias"])
    assert info.signature.inputs.input_names() == ["image"]
    assert {param.name: param.default for param in info.signature.params} == {
        "fit": "letterbox", "mask": True, "rock_probability": False}
    assert "torch" in (local / "requirements.txt").read_text().split()  # unpinned: the machine's own build


def test_the_registered_model_answers_what_the_photos_verb_measures(in_store, tmp_path):
    model = mlflow.pyfunc.load_model(in_store["alias"])
    files = sorted(in_store["photos"].iterdir())
    answer = model.predict(pd.DataFrame({"image": [path.read_bytes() for path in files]}))
    assert list(answer.columns) == ["width", "height", "fit", *CLASSES, "mask_png", "rock_probability_png", "warnings"]

    # regolith.photos' own path: the folder read, fitted to the training frames' side, predicted, counted
    photo_set = photoset.prepare(in_store["photos"], 32)
    predictions = segformer.predict(stored_net(in_store, tmp_path), photo_set["images"], "fp32", CPU)
    shares, _ = photoset.rock_flood(predictions, photo_set["valid"])
    assert photo_set["names"] == [path.name for path in files]
    for row, path, expected in zip(answer.to_dict("records"), files, shares):
        rgb, _ = photoset.read_photo(path)
        assert (row["height"], row["width"], row["fit"]) == (*rgb.shape[:2], "letterbox")
        assert {name: row[name] for name in CLASSES} == expected
        mask = decoded(row["mask_png"])
        assert mask.shape == rgb.shape[:2] and set(np.unique(mask)) <= {0, 1, 2}  # letterbox: every pixel predicted
        assert row["rock_probability_png"] == "" and row["warnings"] == ""


def test_maps_are_at_the_image_own_size_and_arrays_are_taken_in_process(in_store, tmp_path):
    model = mlflow.pyfunc.load_model(in_store["alias"])
    rng = np.random.default_rng(0)
    square, wide = rng.integers(0, 256, (32, 32, 3), np.uint8), rng.integers(0, 256, (32, 64, 3), np.uint8)
    answer = model.predict(pd.DataFrame({"image": [square, wide]}), params={"fit": "cover", "rock_probability": True})
    net = stored_net(in_store, tmp_path)

    def frame_answer(rgb):
        with torch.no_grad():
            logits = segformer.logits_at_mask_size(net, torch.from_numpy(rgb).permute(2, 0, 1)[None].contiguous())[0]
        return logits.argmax(0).numpy(), (logits.softmax(0)[ROCK] * 255).round().numpy()

    # A photo of exactly the frame's size: its map is the frame's prediction, pixel for pixel.
    labels, rock = frame_answer(square)
    assert (decoded(answer.mask_png[0]) == labels).all()
    assert np.abs(decoded(answer.rock_probability_png[0]) - rock).max() <= 1
    # cover keeps the centre square of a 64 x 32 photo; the cut-off sides are 255 (not predicted) and 0
    labels, rock = frame_answer(np.ascontiguousarray(wide[:, 16:48]))
    mask, probability = decoded(answer.mask_png[1]), decoded(answer.rock_probability_png[1])
    assert mask.shape == (32, 64) and (mask[:, :16] == 255).all() and (mask[:, 48:] == 255).all()
    assert (mask[:, 16:48] == labels).all() and (probability[:, :16] == 0).all()
    assert np.abs(probability[:, 16:48].astype(int) - rock).max() <= 1
    assert answer.loc[1, "width"] == 64 and sum(answer.loc[1, list(CLASSES)]) == pytest.approx(1)


@pytest.mark.parametrize("frame,params,message", [
    (pd.DataFrame({"image": [np.zeros((8, 8), np.uint8)]}), None,
     "row 0: expected an H x W x 3 uint8 RGB array, got shape (8, 8) of uint8"),
    (pd.DataFrame({"image": [np.zeros((8, 8, 3), np.uint8), 42]}), None,
     "row 1: expected PNG or JPEG bytes or an H x W x 3 uint8 array, got int"),
    (pd.DataFrame({"image": [np.zeros((8, 8, 3), np.uint8)]}), {"fit": "stretch"},
     "fit='stretch': expected one of letterbox, cover"),
])
def test_bad_input_in_process_is_an_invalid_parameter_naming_the_row(in_store, frame, params, message):
    model = mlflow.pyfunc.load_model(in_store["alias"])
    with pytest.raises(MlflowException) as raised:
        model.predict(frame, params=params)
    assert raised.value.error_code == "INVALID_PARAMETER_VALUE" and message in raised.value.message


# ---- over HTTP ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def served(trained, tmp_path_factory):
    """`mlflow models serve -m models:/regolith-segformer@dr_6 --env-manager local` on 127.0.0.1, as the README says."""
    port, log = free_port(), tmp_path_factory.mktemp("serve") / "serve.log"
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m", trained["alias"], "--env-manager", "local",
         "-h", "127.0.0.1", "-p", str(port)], cwd=trained["root"], env=trained["env"], stdout=log.open("w"),
        stderr=subprocess.STDOUT, start_new_session=True)
    url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 300
    try:
        while True:
            try:
                if requests.get(f"{url}/ping", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow models serve did not come up: {log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        stop_server(server)


def post(url: str, images: list, params: dict | None = None) -> requests.Response:
    """The body a curl user sends: dataframe_split, each image as its base64 text."""
    body = {"dataframe_split": {"columns": ["image"], "data": [[base64.b64encode(image).decode()] for image in images]}}
    return requests.post(f"{url}/invocations", json={**body, **({"params": params} if params else {})}, timeout=300)


def test_the_server_answers_as_predict_in_process(served, in_store):
    photo = sorted(in_store["photos"].iterdir())[0].read_bytes()
    reply = post(served, [photo, photo], {"rock_probability": True, "fit": "cover"})
    assert reply.status_code == 200, reply.text[:2000]
    expected = mlflow.pyfunc.load_model(in_store["alias"]).predict(
        pd.DataFrame({"image": [photo, photo]}), params={"rock_probability": True, "fit": "cover"})
    assert reply.json()["predictions"] == expected.to_dict("records")


def test_malformed_images_get_a_4xx_naming_the_row_and_the_server_keeps_serving(served, in_store):
    photo = sorted(in_store["photos"].iterdir())[0].read_bytes()
    for what, blob, message in [
        ("not an image", b"GIF? no: plain text", "row 1: not an image (content not recognised as JPEG or PNG"),
        ("no bytes", b"", "row 1: empty file (0 bytes)"),
        ("a zero-size image", png_bytes(0, 0, 8, 2, []), "row 1: a 0x0 PNG has no pixels"),
        ("64 MP", blank_png(8000), "row 1: a 8000x8000 PNG (64 MP) is over the 50 MP limit; downscale it first"),
        ("20000 x 20000", blank_png(20000), "row 1: a 20000x20000 PNG (400 MP) is too large to decode"),
    ]:
        reply = post(served, [photo, blob])
        assert 400 <= reply.status_code < 500, (what, reply.status_code, reply.text[:500])
        assert message in reply.json()["message"], (what, reply.json()["message"][-500:])
    reply = post(served, [photo], {"fit": "stretch"})
    assert reply.status_code == 400 and "fit='stretch': expected one of letterbox, cover" in reply.json()["message"]
    assert post(served, [photo]).status_code == 200  # still serving


def test_a_16_bit_png_is_read_as_regolith_photos_reads_it(served, in_store):
    """Taken, not refused: 16-bit grey is scaled to 8 bits (65535 -> 255) as data.to_rgb8 does for photos."""
    gray = (np.linspace(0, 65535, 48 * 64).reshape(48, 64)).astype(np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(gray).save(buffer, format="PNG")  # PIL writes I;16 as a 16-bit grey PNG
    reply = post(served, [buffer.getvalue()])
    assert reply.status_code == 200, reply.text[:2000]
    as_photos_reads_it = data.to_rgb8(Image.open(io.BytesIO(buffer.getvalue())))
    assert as_photos_reads_it.max() == 255  # scaled, where PIL's convert would clip nearly every pixel to white
    expected = mlflow.pyfunc.load_model(in_store["alias"]).predict(pd.DataFrame({"image": [as_photos_reads_it]}))
    assert reply.json()["predictions"] == expected.to_dict("records")
