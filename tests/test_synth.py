"""Procedural stand-in splits: layout, label set, determinism, and the differences between splits; the photographic frames."""

import hashlib

import numpy as np
import pytest
from PIL import Image

from regolith import synth

LABELS = {synth.REGOLITH, synth.ROCK, synth.SKY, synth.IGNORE}


def read_split(split_dir):
    """(rgb arrays, mask arrays) of a written split, in index order."""
    rgb_paths = sorted((split_dir / "rgb").glob("rgb_*.png"))
    rgbs = [np.asarray(Image.open(path)) for path in rgb_paths]
    masks = [np.asarray(Image.open(split_dir / "mask" / path.name.replace("rgb", "mask")))
             for path in rgb_paths]
    return rgbs, masks


def rock_component_sizes(mask):
    """Pixel counts of the 4-connected rock regions, by min-label propagation (no scipy)."""
    rock = mask == synth.ROCK
    unset = np.iinfo(np.int64).max
    labels = np.where(rock, np.arange(rock.size).reshape(rock.shape), unset)
    while True:
        padded = np.pad(labels, 1, constant_values=unset)
        smallest = np.minimum.reduce([padded[1:-1, 1:-1], padded[:-2, 1:-1], padded[2:, 1:-1],
                                      padded[1:-1, :-2], padded[1:-1, 2:]])
        spread = np.where(rock, smallest, unset)
        if np.array_equal(spread, labels):
            return np.unique(labels[rock], return_counts=True)[1]
        labels = spread


def regolith_brightness(rgb, mask):
    return rgb[mask == synth.REGOLITH].mean()


@pytest.fixture(scope="module")
def sixteen_frames(tmp_path_factory):
    """16 full-size frames of each split, written once for the statistical tests."""
    root = tmp_path_factory.mktemp("synth")
    for kind in synth.SPLITS:
        synth.write_split(root, kind, 16, 128, 0)
    return {kind: read_split(root / kind) for kind in synth.SPLITS}


def test_each_split_has_the_rendered_layout_and_naming(tmp_path):
    for kind in synth.SPLITS:
        synth.write_split(tmp_path, kind, 3, 48, 0)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(synth.SPLITS)
    for kind in synth.SPLITS:
        split = tmp_path / kind
        assert sorted(p.name for p in split.iterdir()) == ["mask", "rgb"]
        assert sorted(p.name for p in (split / "rgb").iterdir()) == [
            "rgb_00000.png", "rgb_00001.png", "rgb_00002.png"]
        assert sorted(p.name for p in (split / "mask").iterdir()) == [
            "mask_00000.png", "mask_00001.png", "mask_00002.png"]


def test_images_are_rgb_masks_are_labels_of_the_same_size(tmp_path):
    for kind in synth.SPLITS:
        synth.write_split(tmp_path, kind, 6, 64, 0)
        seen = set()
        for rgb_path in sorted((tmp_path / kind / "rgb").iterdir()):
            mask_path = tmp_path / kind / "mask" / rgb_path.name.replace("rgb", "mask")
            with Image.open(rgb_path) as image, Image.open(mask_path) as mask_image:
                assert (image.mode, mask_image.mode) == ("RGB", "L")
                assert image.size == mask_image.size == (64, 64)
                mask = np.asarray(mask_image)
            values = set(np.unique(mask).tolist())
            assert values <= LABELS, f"{mask_path} holds labels outside {LABELS}"
            assert synth.ROCK in values, f"{mask_path} has no rock pixel"
            seen |= values
        assert seen == LABELS, f"{kind} lacks labels {LABELS - seen}"


def test_same_seed_gives_identical_files_and_another_seed_does_not(tmp_path):
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        synth.write_split(tmp_path / name, "train_dr", 3, 48, seed)
    for index in range(3):
        relative = f"train_dr/rgb/rgb_{index:05d}.png"
        mask_relative = f"train_dr/mask/mask_{index:05d}.png"
        assert (tmp_path / "a" / relative).read_bytes() == (tmp_path / "b" / relative).read_bytes()
        assert (tmp_path / "a" / mask_relative).read_bytes() == (tmp_path / "b" / mask_relative).read_bytes()
        assert (tmp_path / "a" / relative).read_bytes() != (tmp_path / "c" / relative).read_bytes()


def test_a_frame_does_not_depend_on_how_many_frames_are_written(tmp_path):
    synth.write_split(tmp_path / "few", "train_nodr", 2, 48, 0)
    synth.write_split(tmp_path / "many", "train_nodr", 5, 48, 0)
    for index in range(2):
        for relative in (f"train_nodr/rgb/rgb_{index:05d}.png", f"train_nodr/mask/mask_{index:05d}.png"):
            assert (tmp_path / "few" / relative).read_bytes() == (tmp_path / "many" / relative).read_bytes()


def test_splits_draw_from_different_streams():
    dr_rgb, dr_mask = synth.render_frame(0, "train_dr", 0, 48)
    nodr_rgb, nodr_mask = synth.render_frame(0, "train_nodr", 0, 48)
    assert not np.array_equal(dr_mask, nodr_mask)
    assert not np.array_equal(dr_rgb, nodr_rgb)


def test_rewriting_with_fewer_frames_removes_the_extra_ones(tmp_path):
    synth.write_split(tmp_path, "test_photoreal", 4, 32, 0)
    synth.write_split(tmp_path, "test_photoreal", 2, 32, 0)
    assert sorted(p.name for p in (tmp_path / "test_photoreal" / "rgb").iterdir()) == [
        "rgb_00000.png", "rgb_00001.png"]
    assert sorted(p.name for p in (tmp_path / "test_photoreal" / "mask").iterdir()) == [
        "mask_00000.png", "mask_00001.png"]


def test_photoreal_is_brighter_with_fewer_bigger_rocks(sixteen_frames):
    def summary(kind):
        rgbs, masks = sixteen_frames[kind]
        brightness = np.mean([regolith_brightness(rgb, mask) for rgb, mask in zip(rgbs, masks)])
        components = [rock_component_sizes(mask) for mask in masks]
        rocks_per_frame = np.mean([len(sizes) for sizes in components])
        pixels_per_rock = sum(sizes.sum() for sizes in components) / sum(len(sizes) for sizes in components)
        return brightness, rocks_per_frame, pixels_per_rock

    dr_brightness, dr_rocks, dr_rock_pixels = summary("train_dr")
    test_brightness, test_rocks, test_rock_pixels = summary("test_photoreal")
    assert test_brightness > 1.3 * dr_brightness
    assert test_rocks < 0.6 * dr_rocks
    assert test_rock_pixels > 2 * dr_rock_pixels


def test_fixed_appearance_varies_much_less_than_randomized(sixteen_frames):
    def brightness_spread(kind):
        rgbs, masks = sixteen_frames[kind]
        return np.std([regolith_brightness(rgb, mask) for rgb, mask in zip(rgbs, masks)])

    assert brightness_spread("train_nodr") < 0.4 * brightness_spread("train_dr")


def test_train_splits_have_a_few_percent_rock(sixteen_frames):
    for kind in ("train_dr", "train_nodr"):
        rock_share = np.mean([(mask == synth.ROCK).mean() for mask in sixteen_frames[kind][1]])
        assert 0.01 < rock_share < 0.1, f"{kind} rock share {rock_share:.3f}"


def test_main_writes_every_split_and_reports_it(tmp_path, capsys):
    synth.main([str(tmp_path), "--size", "32", "--dr-frames", "2", "--nodr-frames", "1", "--test-frames", "1"])
    printed = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in printed] == list(synth.SPLITS)
    assert "2 frames" in printed[0] and "rock pixel share" in printed[0]
    assert len(list((tmp_path / "train_dr" / "rgb").iterdir())) == 2
    assert len(list((tmp_path / "test_photoreal" / "mask").iterdir())) == 1


def test_unknown_split_kind_is_refused(tmp_path):
    with pytest.raises(ValueError, match="train_sim"):
        synth.write_split(tmp_path, "train_sim", 1, 32, 0)


def test_split_frames_are_the_ones_the_demo_was_measured_on():
    # The demo's numbers depend on these exact pixels; the photographic frames added beside the
    # splits must not move them. Digest of the frames as rendered before the photos existed.
    digest = hashlib.sha256()
    for kind in synth.SPLITS:
        for index in range(2):
            rgb, labels = synth.render_frame(0, kind, index, 48)
            digest.update(rgb.tobytes())
            digest.update(labels.tobytes())
    assert digest.hexdigest()[:16] == "611466508a4782dc"


def test_photos_are_rock_free_jpegs_of_other_sizes_some_grayscale(tmp_path):
    written = synth.write_photos(tmp_path, 6, seed=0)
    folder = tmp_path / "photos"
    names = sorted(p.name for p in folder.iterdir())
    assert names == [name for name, _, _ in written] == [f"photo_{i:03d}.jpg" for i in range(6)]
    assert not any(name.startswith(("mask", "rgb")) or name.endswith(".png") for name in names)
    assert not (tmp_path / "photos" / "mask").exists()
    sizes, modes = set(), set()
    for name, size, mode in written:
        with Image.open(folder / name) as image:
            assert image.format == "JPEG"
            assert (image.size, image.mode) == (size, mode)
            pixels = np.asarray(image)
        assert pixels.std() > 5, f"{name} is nearly flat"
        sizes.add(size)
        modes.add(mode)
    assert (128, 128) not in sizes  # the splits' frame size
    assert {"L", "RGB"} <= modes
    assert len({w / h for w, h in sizes}) >= 4  # several aspect ratios, not one size scaled


def test_photos_are_deterministic_by_seed(tmp_path):
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        synth.write_photos(tmp_path / name, 3, seed)
    for index in range(3):
        relative = f"photos/photo_{index:03d}.jpg"
        assert (tmp_path / "a" / relative).read_bytes() == (tmp_path / "b" / relative).read_bytes()
        assert (tmp_path / "a" / relative).read_bytes() != (tmp_path / "c" / relative).read_bytes()
    synth.write_photos(tmp_path / "a", 2, 0)  # fewer: the extra one goes, the others stay the same
    assert sorted(p.name for p in (tmp_path / "a" / "photos").iterdir()) == ["photo_000.jpg", "photo_001.jpg"]
    assert (tmp_path / "a" / "photos/photo_001.jpg").read_bytes() == (tmp_path / "b" / "photos/photo_001.jpg").read_bytes()


def test_main_writes_photos_only_when_asked(tmp_path, capsys):
    synth.main([str(tmp_path / "plain"), "--size", "32", "--dr-frames", "1", "--nodr-frames", "1",
                "--test-frames", "1"])
    assert not (tmp_path / "plain" / "photos").exists()
    capsys.readouterr()
    synth.main([str(tmp_path / "with"), "--size", "32", "--dr-frames", "1", "--nodr-frames", "1",
                "--test-frames", "1", "--photos", "2"])
    printed = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in printed] == [*synth.SPLITS, "photos"]
    assert "2 rock-free JPEG frames" in printed[-1]
    assert sorted(p.name for p in (tmp_path / "with" / "photos").iterdir()) == ["photo_000.jpg", "photo_001.jpg"]
    for kind in synth.SPLITS:  # the splits are the same with or without photos
        for path in (tmp_path / "plain" / kind).rglob("*.png"):
            assert path.read_bytes() == (tmp_path / "with" / path.relative_to(tmp_path / "plain")).read_bytes()
