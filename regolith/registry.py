"""A checkpoint as an MLflow model, the ONNX export as another, and the Model Registry's versions and aliases.

Part of the MLflow seam with ``regolith.track`` (writing runs) and ``regolith.store`` (reading
them). Which alias moves is policy, ``regolith.alias``'s; this module only carries it out.
"""

import tempfile
from importlib import metadata
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import Model
from mlflow.tracking import MlflowClient

from regolith import names, serving
from regolith.track import shielded


class _ModelFromCode:
    """``mlflow.pyfunc`` as the flavor of ``Model.log`` (what ``pyfunc.log_model`` calls), minus one keyword.

    ``Model.log`` then skips its serving-input check, which loads the model and predicts the input
    example: at 512 px on a CPU that is a B0 forward pass, most of what logging the model cost a
    run (BENCHMARKS.md). ``pyfunc.log_model`` cannot skip it, and ``pyfunc.save_model`` refuses the
    keyword, hence this. tests/test_serving.py loads, predicts and serves the logged model instead.
    """

    @staticmethod
    def save_model(validate_serving_input=True, **kwargs):
        return mlflow.pyfunc.save_model(**kwargs)


def log_model(checkpoint: Path, size: int, example, step: int) -> str:
    """The active run's best.pt as an MLflow model (``regolith.serving``'s), linked to the run's metrics at ``step``.

    MLflow 3 makes it a LoggedModel of the run: a signature, ``example`` (a 3 x H x W uint8 frame,
    shrunk to a small PNG) as its input example, best.pt copied in as ``artifacts/best.pt``, the
    frame's side ``size`` in its model config. Returns the model's URI, also tagged on the run
    (``regolith.logged_model``).
    """
    with tempfile.TemporaryDirectory(prefix="regolith-model-") as scratch, shielded():
        code = Path(scratch) / serving.CODE_FILE
        code.write_text(serving.MODEL_CODE)
        info = Model.log(
            artifact_path=None, flavor=_ModelFromCode, flavor_name="pyfunc.ModelFromCode",
            validate_serving_input=False, name=names.LOGGED_MODEL_NAME, python_model=str(code),
            artifacts={names.CHECKPOINT_ARTIFACT: str(checkpoint)},
            model_config={"size": int(size), "fit": "letterbox", "max_pixels": serving.MAX_PIXELS},
            signature=serving.signature(), input_example=pd.DataFrame({serving.IMAGE: [serving.example_png(example)]}),
            pip_requirements=serving.requirements(), step=step)
        mlflow.set_tag(names.LOGGED_MODEL, info.model_uri)
    return info.model_uri


def log_onnx_model(run_id: str, path: Path, dims: dict) -> str:
    """An exported ``model.onnx`` as an MLflow onnx model of the (finished) run ``run_id``, which stays closed.

    ``dims``: each graph input's and output's dimensions (a name where dynamic) for the signature, whose
    dtypes are the export's: uint8 images in, float32 logits and uint8 labels out. Returns the model's URI.
    """
    import mlflow.onnx  # with the onnx extra only
    import numpy as np
    import onnx
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    def schema(*tensors):
        return Schema([TensorSpec(np.dtype(np.float32 if tensor == "logits" else np.uint8),
                                  tuple(d if isinstance(d, int) else -1 for d in dims[tensor]), tensor)
                       for tensor in tensors])

    with shielded():
        return Model.log(artifact_path=None, flavor=mlflow.onnx, name=names.ONNX_MODEL_NAME, run_id=run_id,
                         onnx_model=onnx.load(str(path)), save_as_external_data=False,
                         signature=ModelSignature(inputs=schema("images"), outputs=schema("logits", "labels")),
                         pip_requirements=[f"{name}=={metadata.version(name)}" for name in ("onnxruntime", "mlflow")]
                         ).model_uri


def register_model(run_id: str, alias: str, move_alias: bool, model_uri: str, name: str = names.MODEL_NAME) -> str:
    """The run's MLflow model (``log_model``) as a new version of ``name``; ``@alias`` points at it if ``move_alias``.

    The version's source is the model, so ``mlflow.pyfunc.load_model`` and ``mlflow models serve``
    take ``models:/<name>@<alias>``, and its best.pt is ``models:/<name>@<alias>/artifacts/best.pt``
    (the run's own best.pt stays where it was). Whether the alias moves is the caller's judgement
    (``regolith.alias``). Returns the version's URI.
    """
    client = MlflowClient()
    try:
        client.create_registered_model(name, description="SegFormer-B0 regolith/rock/sky checkpoints (best.pt) as "
                                                          "MLflow models; one alias per variant, e.g. @dr_750")
    except MlflowException as error:
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    version = client.create_model_version(name, model_uri, run_id=run_id, model_id=model_uri.removeprefix("models:/"),
                                          tags={names.VARIANT: alias, names.VERSION_CHECKPOINT: names.MODEL_CHECKPOINT})
    if move_alias:
        client.set_registered_model_alias(name, alias, version.version)
    uri = f"models:/{name}/{version.version}"
    client.set_tag(run_id, names.MODEL_VERSION, uri)
    return uri
