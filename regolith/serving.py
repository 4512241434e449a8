"""A checkpoint as an MLflow model: a ``mlflow.pyfunc`` PythonModel around best.pt and its own preprocessing.

Every training run logs its best.pt as this model when it finishes (``registry.log_model``), and the
registry's ``models:/regolith-segformer@<variant>`` resolves to it::

    model = mlflow.pyfunc.load_model("models:/regolith-segformer@dr_750")
    answer = model.predict(pd.DataFrame({"image": [Path("photo.jpg").read_bytes()]}))
    mlflow models serve -m models:/regolith-segformer@dr_750 --env-manager local   # POST /invocations

The contract (README, "Deploying a checkpoint"):

- input: a table with one column ``image``, one row per image of any size up to ``max_pixels``:
  encoded PNG or JPEG bytes (over HTTP, their base64 text), or in process an H x W x 3 uint8 RGB array;
- params: ``fit`` (letterbox or cover; default the checkpoint's), ``mask`` (true), ``rock_probability`` (false);
- output, one row per image: ``width``, ``height``, ``fit``; ``regolith``, ``rock``, ``sky``: each class's
  share of the image's own pixels, counted as ``regolith.photos`` counts them (the padding of a letterbox
  never counts); ``mask_png``: base64 of an 8-bit grey PNG at the image's own size, 0 regolith, 1 rock,
  2 sky, 255 where a cover crop cut the image off; ``rock_probability_png``: the same with 255 x P(rock),
  or "" unless asked; ``warnings``: what decoding said (a truncated file read as far as it goes), or "".

Nothing is reimplemented: decoding is ``photoset.decode_photo`` (16-bit and alpha converted as
``data.to_rgb8`` does, for photos too), fitting ``photoset.fit`` to the training frames' long side,
inference ``model.logits_at_mask_size`` at the precision the checkpoint validated at, shares
``photoset.class_shares``. A bad image raises ``MlflowException(INVALID_PARAMETER_VALUE)`` naming
its row, which the scoring server answers with HTTP 400 and that message.

The model is logged "from code" (``MODEL_CODE``, three lines that import this module), so it needs
this package where it is loaded: serve it from the project's environment (``--env-manager local``).
"""

import base64
import io
import math

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema
from PIL import Image

from regolith import CLASSES, ROCK, Refused, model as segformer, names, photoset

IMAGE = "image"  # the input column
NOT_PREDICTED = 255  # mask value of a pixel a cover crop cut off
MAX_PIXELS = 50_000_000  # per image: its class map and probabilities at full size stay within a few hundred MB
BATCH = 8  # images per forward pass
STRIP = 256  # rows resampled to the image's own size at a time
COLUMNS = ("width", "height", "fit", *CLASSES, "mask_png", "rock_probability_png", "warnings")
# What the scoring server hands over for {"inputs": {"image": [...]}}: the base64 text itself.
BASE64_SIGNATURES = tuple(base64.b64encode(photoset.SIGNATURES[kind])[:length] for kind, length in (("PNG", 8),
                                                                                                      ("JPEG", 4)))

# The model's code file: MLflow runs it to build the model, which is this module's.
CODE_FILE = "regolith_segmenter.py"
MODEL_CODE = '''"""The regolith segmenter (regolith.serving.Segmenter); its checkpoint is artifacts/best.pt."""
import mlflow
from regolith.serving import Segmenter

mlflow.models.set_model(Segmenter())
'''


def signature(fit: str = "letterbox") -> ModelSignature:
    """The model's signature: the ``image`` column, the params (``fit`` defaulting to the checkpoint's), the answer."""
    outputs = [ColSpec("long", "width"), ColSpec("long", "height"), ColSpec("string", "fit"),
               *(ColSpec("double", name) for name in CLASSES), ColSpec("string", "mask_png"),
               ColSpec("string", "rock_probability_png"), ColSpec("string", "warnings")]
    return ModelSignature(inputs=Schema([ColSpec("binary", IMAGE)]), outputs=Schema(outputs),
                          params=ParamSchema([ParamSpec("fit", "string", fit), ParamSpec("mask", "boolean", True),
                                              ParamSpec("rock_probability", "boolean", False)]))


def requirements() -> list:
    """What the model needs besides this package. torch unpinned: a GPU box's own build (the NGC container's) serves."""
    from importlib import metadata
    return ["torch", *(f"{name}=={metadata.version(name)}" for name in ("transformers", "mlflow", "pillow")),
            "numpy", "pandas"]


def example_png(image: torch.Tensor, side: int = 64) -> bytes:
    """A 3 x H x W uint8 frame, shrunk to ``side`` on its long side, as PNG bytes: the model's input example."""
    picture = Image.fromarray(image.permute(1, 2, 0).numpy(), "RGB")
    picture.thumbnail((side, side), Image.Resampling.BILINEAR)
    return encode_png(picture)


def encode_png(picture: Image.Image) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


class Segmenter(mlflow.pyfunc.PythonModel):
    """best.pt (the artifact ``checkpoint``) and the model config: ``size`` (the frame's side), ``fit``,
    ``max_pixels``."""

    def load_context(self, context):
        config = context.model_config or {}
        self.size, self.fit = int(config["size"]), config.get("fit", "letterbox")
        self.max_pixels = int(config.get("max_pixels", MAX_PIXELS))
        payload = segformer.load_checkpoint(context.artifacts[names.CHECKPOINT_ARTIFACT], "the model's checkpoint")
        self.device = segformer.inference_device()
        self.precision = segformer.checkpoint_precision(payload, self.device)
        self.net = segformer.model_from_checkpoint(payload).to(self.device)

    # Typed, or MLflow warns at every import; a DataFrame hint leaves the cells (bytes or arrays) as they are.
    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        try:
            return segment(self, model_input, params or {})
        except Refused as error:  # the scoring server answers 400 with the message
            raise MlflowException(str(error), error_code=INVALID_PARAMETER_VALUE) from None


def segment(model: Segmenter, model_input, params: dict) -> pd.DataFrame:
    """The answer for a table of images (the contract above), in batches of ``BATCH``."""
    fit = params.get("fit") or model.fit
    if fit not in photoset.FIT_MODES:
        raise Refused(f"fit={fit!r}: expected one of {', '.join(photoset.FIT_MODES)}")
    want_mask, want_rock = _flag(params, "mask", True), _flag(params, "rock_probability", False)
    images = read_images(model_input, model.max_pixels)
    rows = []
    for start in range(0, len(images), BATCH):
        chunk = images[start:start + BATCH]
        frames, valid = photoset.stack([photoset.fit(rgb, model.size, fit) for rgb, _ in chunk])
        with torch.inference_mode():
            logits = segformer.logits_at_mask_size(model.net, frames.to(model.device), model.precision).cpu()
        for (rgb, warnings), frame_logits, frame_valid in zip(chunk, logits, valid):
            height, width = rgb.shape[:2]
            shares = photoset.class_shares(frame_logits.argmax(0), frame_valid)
            mask, rock = (at_own_size(frame_logits, height, width, fit, frame_valid)
                          if want_mask or want_rock else (None, None))
            rows.append({"width": width, "height": height, "fit": fit, **shares,
                         "mask_png": _png_text(mask) if want_mask else "",
                         "rock_probability_png": _png_text(rock) if want_rock else "",
                         "warnings": "; ".join(warnings)})
    return pd.DataFrame(rows, columns=list(COLUMNS))


def _flag(params: dict, name: str, default: bool) -> bool:
    value = params.get(name, default)
    return value.strip().lower() in ("true", "1", "yes") if isinstance(value, str) else bool(value)


def read_images(model_input, max_pixels: int) -> list:
    """[(H x W x 3 uint8, warnings)] of the ``image`` column, each checked; refused naming the row that is wrong."""
    if isinstance(model_input, dict):
        model_input = pd.DataFrame(model_input)
    if not isinstance(model_input, pd.DataFrame) or IMAGE not in model_input.columns:
        got = list(model_input.columns) if isinstance(model_input, pd.DataFrame) else type(model_input).__name__
        raise Refused(f"expected a table with a column {IMAGE!r} (PNG or JPEG bytes, or H x W x 3 uint8 arrays), "
                      f"got {got}")
    values = model_input[IMAGE].tolist()
    if not values:
        raise Refused("no images in the request")
    return [read_image(value, f"row {n}", max_pixels) for n, value in enumerate(values)]


def read_image(value, where: str, max_pixels: int) -> tuple:
    """One cell: (H x W x 3 uint8, warnings) from an array, PNG or JPEG bytes, or their base64 text."""
    if isinstance(value, np.ndarray) and value.dtype != object:
        if value.ndim != 3 or value.shape[2] != 3 or value.dtype != np.uint8:
            raise Refused(f"{where}: expected an H x W x 3 uint8 RGB array, got shape {value.shape} of {value.dtype}")
        if not 0 < value.shape[0] * value.shape[1] <= max_pixels:
            raise Refused(f"{where}: a {value.shape[1]}x{value.shape[0]} array: expected 1 to "
                          f"{max_pixels / 1e6:g} MP")
        return value, []
    if isinstance(value, str):
        value = value.encode("ascii", "replace")
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise Refused(f"{where}: expected PNG or JPEG bytes or an H x W x 3 uint8 array, got {type(value).__name__}")
    raw = bytes(value)
    if raw.startswith(BASE64_SIGNATURES):
        try:
            raw = base64.b64decode(raw, validate=True)
        except ValueError:
            raise Refused(f"{where}: starts as base64 of a PNG or JPEG but is not valid base64") from None
    return photoset.decode_photo(raw, where, max_pixels=max_pixels)


def at_own_size(logits: torch.Tensor, height: int, width: int, fit: str, valid: torch.Tensor) -> tuple:
    """(class map, 255 x P(rock)), both height x width uint8, from one frame's C x S x S logits.

    The frame's logits are resampled bilinearly (pixel centres, as ``F.interpolate`` with
    align_corners=False) onto the image's own pixels, a strip of rows at a time, so a large photo never
    holds three full-size float planes. letterbox: the photo's box in the frame covers every pixel.
    cover: the frame covers ``ImageOps.fit``'s centred square crop; the cut-off pixels stay 255 and 0.
    """
    size = logits.shape[-1]
    if fit == "letterbox":
        rows, cols = valid.any(1).nonzero().flatten(), valid.any(0).nonzero().flatten()
        frame_box, photo_box = (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1), (0, 0, width, height)
    else:
        side = min(width, height)
        left, top = (width - side) / 2, (height - side) / 2
        frame_box, photo_box = (0, 0, size, size), (left, top, left + side, top + side)
    first_col, xs = _sampling(photo_box[0], photo_box[2], frame_box[0], frame_box[2])
    first_row, ys = _sampling(photo_box[1], photo_box[3], frame_box[1], frame_box[3])
    mask = np.full((height, width), NOT_PREDICTED, np.uint8)
    rock = np.zeros((height, width), np.uint8)
    columns = logits[:, :, xs[0]] * (1 - xs[2]) + logits[:, :, xs[1]] * xs[2]  # C x S x image columns
    for start in range(0, len(ys[0]), STRIP):
        lower, upper, weight = (part[start:start + STRIP] for part in ys)
        strip = columns[:, lower] * (1 - weight.view(1, -1, 1)) + columns[:, upper] * weight.view(1, -1, 1)
        rows = slice(first_row + start, first_row + start + len(lower))
        cols = slice(first_col, first_col + len(xs[0]))
        mask[rows, cols] = strip.argmax(0).numpy()
        rock[rows, cols] = (strip.softmax(0)[ROCK] * 255).round().to(torch.uint8).numpy()
    return mask, rock


def _sampling(photo_start: float, photo_end: float, frame_start: int, frame_end: int) -> tuple:
    """(first image pixel, (lower, upper, weight)): where each image pixel whose centre lies in
    [photo_start, photo_end) samples the frame's pixels frame_start .. frame_end - 1, along one axis."""
    first, end = math.ceil(photo_start - 0.5), math.ceil(photo_end - 0.5)
    centres = torch.arange(first, end, dtype=torch.float64) + 0.5
    scale = (frame_end - frame_start) / (photo_end - photo_start)
    source = (frame_start + (centres - photo_start) * scale - 0.5).clamp(frame_start, frame_end - 1)
    lower = source.floor().long()
    return first, (lower, (lower + 1).clamp(max=frame_end - 1), (source - lower).float())


def _png_text(plane: np.ndarray) -> str:
    return base64.b64encode(encode_png(Image.fromarray(plane, "L"))).decode("ascii")
