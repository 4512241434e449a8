"""Encoder loading from the hub's legacy layout, the refusal of partial encoders, and best.pt."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import SegformerForSemanticSegmentation

from conftest import REPO, legacy_name, save_legacy_encoder, tiny_config
from regolith import Refused, model as segformer


def test_legacy_encoder_loads_every_weight_and_gets_a_fresh_head(tiny_encoder):
    torch.manual_seed(0)
    net, encoder_tensors = segformer.load_pretrained(str(tiny_encoder))
    legacy = load_file(str(tiny_encoder / "model.safetensors"))
    state = net.state_dict()
    encoder = [k for k in state if k.startswith("segformer.")]
    assert encoder_tensors == len(encoder) > 0
    for key in encoder:  # every encoder tensor equals the checkpoint's, under its legacy name
        assert torch.equal(state[key], legacy[legacy_name(key)]), key
    assert net.config.id2label == {0: "regolith", 1: "rock", 2: "sky"}
    assert state["decode_head.classifier.weight"].shape[0] == 3
    assert not any(k.startswith("decode_head") for k in legacy)  # the head cannot have come from it


def test_encoder_missing_weights_is_refused_with_their_names(tmp_path):
    dropped = ("segformer.encoder.block.1.0.attention.self.query.weight", "segformer.encoder.layer_norm.3.bias")
    save_legacy_encoder(tmp_path / "partial", drop=dropped)
    with pytest.raises(Refused) as error:
        segformer.load_pretrained(str(tmp_path / "partial"))
    message = str(error.value)
    assert "2 encoder weight(s) did not load" in message
    assert "segformer.stages.1.blocks.0.attention.q_proj.weight (missing)" in message
    assert "segformer.stages.3.layer_norm.bias (missing)" in message


def test_unreachable_hub_id_is_a_clear_error():
    with pytest.raises(Refused, match="pretrained='no-such-org/no-such-model'"):
        segformer.load_pretrained("no-such-org/no-such-model")


def test_hub_id_resolves_from_the_cache_like_nvidia_mit_b0(hub_cache):
    cache, repo_id, commit = hub_cache
    code = ("from regolith.model import load_pretrained, pretrained_id\n"
            f"net, n = load_pretrained({repo_id!r})\n"
            f"print(n, pretrained_id({repo_id!r}, net))\n")
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split()[1] == f"{repo_id}@{commit}"


def test_checkpoint_loads_with_weights_only_and_predicts_the_same(tiny_encoder, tmp_path):
    torch.manual_seed(0)
    net, _ = segformer.load_pretrained(str(tiny_encoder))
    net.eval()
    path = tmp_path / "best.pt"
    torch.save(segformer.checkpoint(net, 3, {"iou_rock": 0.5}, {"lr": 6e-5}, segformer.PREPROCESSING, "fp32"), path)
    payload = segformer.load_checkpoint(path)  # weights_only=True inside
    assert payload["classes"] == ["regolith", "rock", "sky"] and payload["epoch"] == 3
    assert payload["preprocessing"] == segformer.PREPROCESSING
    rebuilt = segformer.model_from_checkpoint(payload)
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        assert torch.equal(segformer.logits_at_mask_size(net, images), segformer.logits_at_mask_size(rebuilt, images))


def test_a_missing_local_encoder_is_named_as_a_directory_not_a_hub_id(tmp_path):
    (tmp_path / "file").write_text("")
    for path, expected in [(tmp_path / "nowhere", "no such directory"), (tmp_path / "file", "not a directory")]:
        with pytest.raises(Refused, match=f"pretrained='{path}': {expected}"):
            segformer.load_pretrained(str(path))
    for hub_id in ("nvidia/mit-b0", "mit-b0"):  # left to the hub
        segformer.check_pretrained(hub_id)


def test_normalize_uses_imagenet_statistics():
    images = np.zeros((1, 3, 2, 2), np.uint8)
    images[0, 1] = 255
    out = segformer.normalize(__import__("torch").from_numpy(images))
    assert out[0, 0, 0, 0].item() == pytest.approx(-0.485 / 0.229)
    assert out[0, 1, 0, 0].item() == pytest.approx((1 - 0.456) / 0.224)


def tiny_checkpoint(**changes) -> dict:
    """A best.pt payload of a tiny random SegFormer, as training writes it, with fields replaced."""
    torch.manual_seed(0)
    net = segformer.random_init(tiny_config())
    return {**segformer.checkpoint(net, 1, {"iou_rock": 0.5}, {"batch": 4}, segformer.PREPROCESSING, "fp32"),
            **changes}


def five_class_head() -> dict:
    config = tiny_config()
    config.num_labels = 5
    net = SegformerForSemanticSegmentation(config)
    return {"model": {k: v.clone() for k, v in net.state_dict().items()},
            "config": json.loads(net.config.to_json_string())}


MALFORMED = {  # field changes -> what the refusal says
    "precision fp64": ({"precision": "fp64"}, "'precision' is 'fp64', expected one of bf16, fp32"),
    "5-class head": (five_class_head(), "its head is for 5 classes"),
    "classes a list of lists": ({"classes": [["regolith"], "rock", "sky"]}, "a checkpoint for the classes"),
    "preprocessing a string": ({"preprocessing": "imagenet"}, "'preprocessing': not a dict"),
    "preprocessing other mean": ({"preprocessing": {**segformer.PREPROCESSING, "mean": [0.5, 0.5]}},
                                 "'preprocessing': mean is [0.5, 0.5]"),
    "preprocessing NaN std": ({"preprocessing": {**segformer.PREPROCESSING, "std": [float("nan")] * 3}},
                              "'preprocessing': std is [nan, nan, nan]"),
    "args a list": ({"args": ["--batch", "4"]}, "'args' is a list"),
    "args batch text": ({"args": {"batch": "eight"}}, "'args' batch is 'eight'"),
    "epoch text": ({"epoch": "three"}, "'epoch' is 'three'"),
    "metrics text": ({"metrics": {"iou_rock": "high"}}, "'metrics' must map score names to numbers"),
    "model a tensor list": ({"model": {"w": [1, 2]}}, "'model' must map weight names to tensors"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_checkpoint_with_malformed_fields_is_refused_at_load(tmp_path, case):
    changes, said = MALFORMED[case]
    torch.save(tiny_checkpoint(**changes), tmp_path / "best.pt")
    with pytest.raises(Refused, match=re.escape(said)):
        segformer.load_checkpoint(tmp_path / "best.pt", "run x")


def test_a_well_formed_tiny_checkpoint_loads(tmp_path):
    torch.save(tiny_checkpoint(), tmp_path / "best.pt")
    assert segformer.load_checkpoint(tmp_path / "best.pt")["precision"] == "fp32"


@pytest.mark.parametrize("kind", ["fifo", "/dev/zero"])
def test_a_best_pt_that_is_a_fifo_or_a_device_is_refused_without_reading_it(tmp_path, kind):
    path = tmp_path / "best.pt"
    if kind == "fifo":
        os.mkfifo(path)  # torch.load would block on it forever
    else:
        path.symlink_to(kind)  # and read this one without end
    expected = "named pipe (FIFO)" if kind == "fifo" else "character device, through a symbolic link to /dev/zero"
    with pytest.raises(Refused, match=re.escape(f"{path}: not a regular file (a {expected})")):
        segformer.load_checkpoint(path)


def test_a_pickle_bomb_pytorch_model_bin_in_a_pretrained_folder_is_refused_unexecuted(tmp_path):
    import pickle
    marker = tmp_path / "ran"

    class RunsCode:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    folder = tmp_path / "encoder"
    save_legacy_encoder(folder)
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps({"w": RunsCode()}))
    with pytest.raises(Refused, match=r"holds a pickle that the safe unpickler refuses .*nothing in it was executed"):
        segformer.load_pretrained(str(folder))
    assert not marker.exists()
