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


def test_a_tensor_the_loader_silently_replaces_is_refused_by_value(tmp_path):
    # The file holds one encoder tensor twice: under its legacy name and, with other values, under its
    # current one. transformers keeps one and drops the other with a clean loading report (no missing,
    # no mismatched key), so only a comparison with the file itself can tell.
    from safetensors.torch import save_file
    state = save_legacy_encoder(tmp_path / "twice")
    current = "segformer.stages.0.blocks.0.mlp.fc1.weight"
    state[current] = torch.randn_like(state[legacy_name(current)])
    save_file(state, str(tmp_path / "twice" / "model.safetensors"), metadata={"format": "pt"})
    from transformers import SegformerForSemanticSegmentation
    _, info = SegformerForSemanticSegmentation.from_pretrained(str(tmp_path / "twice"), num_labels=3,
                                                               output_loading_info=True)
    assert not [k for k in info["missing_keys"] if k.startswith("segformer.")] and not info["mismatched_keys"]
    with pytest.raises(Refused) as error:
        segformer.load_pretrained(str(tmp_path / "twice"))
    message = str(error.value)
    assert "1 encoder tensor(s) loaded without error are not the tensors in" in message
    assert f"{current} (differs from the file's" in message


def test_a_pytorch_model_bin_checkpoint_is_checked_by_value_too(tmp_path):
    state = save_legacy_encoder(tmp_path / "bin")
    (tmp_path / "bin" / "model.safetensors").unlink()
    torch.save(state, tmp_path / "bin" / "pytorch_model.bin")
    net, encoder_tensors = segformer.load_pretrained(str(tmp_path / "bin"))
    assert segformer.weight_file(str(tmp_path / "bin")).name == "pytorch_model.bin"
    assert encoder_tensors == len([k for k in net.state_dict() if k.startswith("segformer.")])
    # A file with one value changed (another folder: the loaded model maps the .bin it read): the check names it.
    state["segformer.encoder.layer_norm.3.bias"] = state["segformer.encoder.layer_norm.3.bias"] + 1
    (tmp_path / "changed").mkdir()
    torch.save(state, tmp_path / "changed" / "pytorch_model.bin")
    with pytest.raises(Refused, match=r"segformer\.stages\.3\.layer_norm\.bias \(differs"):
        segformer.check_encoder_values(str(tmp_path / "changed"), net)


@pytest.mark.parametrize("size", ["b0", "b2"])
def test_encoders_of_two_mit_depth_patterns_load_through_the_same_path(tmp_path, size):
    from conftest import tiny_size_config
    config = tiny_size_config(size)
    save_legacy_encoder(tmp_path / size, config=config)
    net, encoder_tensors = segformer.load_pretrained(str(tmp_path / size))  # checked by value inside
    assert list(net.config.depths) == config.depths and list(net.config.hidden_sizes) == config.hidden_sizes
    assert [len(stage.blocks) for stage in net.segformer.stages] == config.depths
    state = net.state_dict()
    # the fresh head reads each stage at that stage's width, and answers in 3 classes
    for stage, width in enumerate(config.hidden_sizes):
        assert state[f"decode_head.linear_projections.{stage}.proj.weight"].shape == (16, width)
    assert state["decode_head.classifier.weight"].shape[0] == 3
    assert encoder_tensors == len([k for k in state if k.startswith("segformer.")])
    assert segformer.encoder_size(net.config) == "custom"  # tiny: none of the paper's widths


def test_mit_sizes_are_named_from_their_config_and_get_the_papers_decoder_width():
    for size, width in (("b0", 256), ("b1", 256), ("b2", 768), ("b5", 768)):
        config = segformer.size_config(size)
        assert segformer.encoder_size(config) == size and config.decoder_hidden_size == width
    with pytest.raises(Refused, match="encoder size 'b9'"):
        segformer.size_config("b9")


def test_footprint_counts_parameters_and_flops_at_the_training_size(tiny_encoder):
    net, _ = segformer.load_pretrained(str(tiny_encoder))
    net.train()
    small, large = segformer.footprint(net, (32, 32)), segformer.footprint(net, (64, 64))
    assert small["parameters"] == sum(p.numel() for p in net.parameters()) > small["encoder_parameters"] > 0
    assert 3 < large["flops"] / small["flops"] < 5  # about 4x the pixels, about 4x the work
    assert net.training  # left in the mode it came in
