"""The engine's batches from a memory-mapped split: the staged gather on the CPU, and the same numbers through it."""

import pytest
import torch

from conftest import make_split, tiny_config
from regolith import data, engine, model as segformer


@pytest.fixture
def mapped(tmp_path, monkeypatch):
    monkeypatch.setenv("REGOLITH_CACHE_DIR", str(tmp_path / "cache"))
    return data.load_split(make_split(tmp_path / "train_dr", frames=6))


def test_gather_stages_batches_from_the_map_through_one_reused_buffer(mapped):
    expected_images, expected_masks = mapped.images.clone(), mapped.masks.clone()
    mapped.staging = {}  # as keep_on leaves a split too large for the GPU
    cpu = torch.device("cpu")
    first = engine.gather(mapped, "images", torch.tensor([4, 0, 2]), cpu)
    assert torch.equal(first, expected_images[[4, 0, 2]])
    buffer = mapped.staging["images"][0]
    assert buffer.is_pinned() == torch.cuda.is_available()  # pinned only where a GPU copies from it
    second = engine.gather(mapped, "images", torch.tensor([1, 5]), cpu)
    assert torch.equal(second, expected_images[[1, 5]])
    assert mapped.staging["images"][0].data_ptr() == buffer.data_ptr()  # reused, not one per batch
    assert torch.equal(engine.gather(mapped, "masks", slice(3, 6), cpu), expected_masks[3:6])


def test_validation_through_the_staged_gather_gives_the_same_numbers(mapped):
    torch.manual_seed(0)
    config = tiny_config()
    net = segformer.random_init(config)
    weights = torch.tensor(data.class_weights(mapped.pixel_counts))
    kwargs = dict(batch=4, class_weights=weights, precision="fp32", device=torch.device("cpu"))
    direct = engine.validate(net, mapped, **kwargs)
    mapped.staging = {}
    assert engine.validate(net, mapped, **kwargs) == direct


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_a_split_too_large_for_the_gpu_trains_from_the_host_through_pinned_buffers(mapped):
    device = torch.device("cuda")
    engine.keep_on(mapped, device, budget=0)  # nothing fits: stays on the host
    assert mapped.images.device.type == "cpu" and mapped.staging == {}
    batch = engine.gather(mapped, "images", torch.tensor([3, 1]), device)
    assert batch.device.type == "cuda" and mapped.staging["images"][0].is_pinned()
    assert torch.equal(batch.cpu(), mapped.images[[3, 1]])


def resident_kib(path) -> int:
    """This process's resident KiB of the mapping of ``path`` (from /proc/self/smaps)."""
    total, inside = 0, False
    for line in open("/proc/self/smaps"):
        if "-" in line.split(" ")[0] and len(line.split()) >= 5:
            inside = line.rstrip().endswith(str(path))
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total


def test_an_epoch_from_the_map_leaves_its_pages_out_of_the_run_s_memory(tmp_path, monkeypatch):
    monkeypatch.setenv("REGOLITH_CACHE_DIR", str(tmp_path / "cache"))
    split = data.load_split(make_split(tmp_path / "train_dr", frames=24, size=256))
    images_npy = next((tmp_path / "cache").glob("*.images.npy"))
    expected = torch.from_numpy(split.maps["images"].copy())
    cpu = torch.device("cpu")
    order = torch.randperm(24, generator=torch.Generator().manual_seed(0))
    for index in engine.batches(order, 4, drop_last=False):
        assert torch.equal(engine.gather(split, "images", index, cpu), expected[index])
    for start in range(0, 24, 5):
        assert torch.equal(engine.gather(split, "images", slice(start, start + 5), cpu), expected[start:start + 5])
    # 24 frames of 192 KiB (4.5 MiB) were read. What stays mapped in: the page each frame shares with the
    # next, and what the kernel's fault-around (64 KiB around each fault) mapped back of released rows.
    assert resident_kib(images_npy) <= images_npy.stat().st_size // 1024 // 4
    expected.add_(0)
    assert torch.equal(split.images[:2], expected[:2])  # released pages map back in with the same bytes
