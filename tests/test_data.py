"""Reading splits: order, frames, digest, class weights, a refusal for each bad input; converting colour masks."""

import json
import math
import re
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from conftest import make_split, simple_frame, write_frame
from regolith import Refused, data


def test_class_weights_from_hand_made_masks(tmp_path):
    # 3 frames of 4x5 = 60 pixels: 40 regolith, 6 rock, 10 sky, 4 ignored.
    masks = [np.zeros((4, 5), np.uint8) for _ in range(3)]
    masks[0][0, :] = 2
    masks[1][0, :] = 2
    masks[0][1, :2] = 1
    masks[2][3, :4] = 1
    masks[2][0, :4] = 255
    for i, mask in enumerate(masks):
        write_frame(tmp_path, i, np.full((4, 5, 3), 100), mask)
    split = data.load_split(tmp_path)
    assert split.pixel_counts == [40, 6, 10]
    shares = data.pixel_shares(split.pixel_counts)
    assert shares == [40 / 56, 6 / 56, 10 / 56]
    weights = data.class_weights(split.pixel_counts)
    inverse = [56 / 40, 56 / 6, 56 / 10]
    expected = [3 * w / sum(inverse) for w in inverse]
    assert weights == pytest.approx(expected, rel=1e-12)
    assert math.isclose(sum(weights), 3.0)
    assert weights[1] > weights[2] > weights[0]  # the rarer the class, the heavier


def test_frames_are_read_in_index_order_and_frames_cuts_the_first_n(tmp_path):
    rng = np.random.default_rng(0)
    for i in (10, 2, 1000, 7):  # written out of order, with a 5+ digit index among them
        rgb, mask = simple_frame(rng)
        rgb[0, 0] = i % 256  # tag each frame so order can be checked
        write_frame(tmp_path, i, rgb, mask)
    split = data.load_split(tmp_path)
    assert split.names == ["00002", "00007", "00010", "01000"]
    assert split.images[:, 0, 0, 0].tolist() == [2, 7, 10, 1000 % 256]
    first_two = data.load_split(tmp_path, frames=2)
    assert first_two.names == ["00002", "00007"] and first_two.frames == 2
    assert first_two.digest != split.digest
    assert split.images.shape == (4, 3, 32, 32) and split.masks.shape == (4, 32, 32)


def test_digest_covers_names_and_bytes(tmp_path):
    a = make_split(tmp_path / "a", frames=3)
    b = make_split(tmp_path / "b", frames=3)
    assert data.load_split(a).digest == data.load_split(b).digest  # same content, other folder
    image = np.array(Image.open(b / "rgb" / "rgb_00001.png"))
    image[5, 5] ^= 1
    Image.fromarray(image).save(b / "rgb" / "rgb_00001.png")
    assert data.load_split(a).digest != data.load_split(b).digest


def test_normalize_uses_imagenet_statistics():
    images = np.zeros((1, 3, 2, 2), np.uint8)
    images[0, 1] = 255
    out = data.normalize(__import__("torch").from_numpy(images))
    assert out[0, 0, 0, 0].item() == pytest.approx(-0.485 / 0.229)
    assert out[0, 1, 0, 0].item() == pytest.approx((1 - 0.456) / 0.224)


# Each bad split is built from a good one; the error must name the offending file or value.
def _missing(split):
    return split / "nowhere", "no such directory"


def _empty(split):
    for path in list(split.glob("*/*.png")):
        path.unlink()
    return split, "empty"


def _unpaired(split):
    (split / "mask" / "mask_00003.png").unlink()
    return split, "rgb_00003.png"


def _unreadable(split):
    (split / "rgb" / "rgb_00002.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    return split, "rgb_00002.png: unreadable PNG"


def _bad_label(split):
    mask = np.array(Image.open(split / "mask" / "mask_00001.png"))
    mask[0, 0] = 7
    Image.fromarray(mask).save(split / "mask" / "mask_00001.png")
    return split, "mask_00001.png: mask values [7]"


def _size_mismatch(split):
    Image.new("L", (16, 32)).save(split / "mask" / "mask_00004.png")
    return split, "mask_00004.png: mask is 16x32"


def _no_rock(split):
    for path in split.glob("mask/*.png"):
        mask = np.array(Image.open(path))
        mask[mask == 1] = 0
        Image.fromarray(mask).save(path)
    return split, "class rock has zero pixels"


def _rgb_mask(split):
    Image.new("RGB", (32, 32)).save(split / "mask" / "mask_00000.png")
    return split, "mask_00000.png: expected an 8-bit single-channel mask, found PIL mode RGB"


def _broken_link(split):
    (split / "rgb" / "rgb_00002.png").unlink()
    (split / "rgb" / "rgb_00002.png").symlink_to(split / "elsewhere.png")
    return split, f"rgb_00002.png: broken symbolic link -> {split / 'elsewhere.png'}"


def _rgb_16bit(split):
    """A 16-bit RGB PNG (PIL cannot write one, and reads it as 8-bit RGB, keeping the high bytes)."""
    height, width = 32, 32
    rows = b"".join(b"\0" + np.full((width, 3), 0x80FF, ">u2").tobytes() for _ in range(height))

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    (split / "rgb" / "rgb_00001.png").write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
    return split, "rgb_00001.png: expected an 8-bit RGB image, found a 16-bit PNG"


BAD_SPLITS = {"missing": _missing, "empty": _empty, "unpaired": _unpaired, "unreadable": _unreadable,
              "bad_label": _bad_label, "size_mismatch": _size_mismatch, "no_rock": _no_rock,
              "rgb_mask": _rgb_mask, "broken_link": _broken_link, "rgb_16bit": _rgb_16bit}


@pytest.mark.parametrize("case", sorted(BAD_SPLITS))
def test_bad_split_is_refused_naming_the_fault(tmp_path, case):
    split, expected = BAD_SPLITS[case](make_split(tmp_path / "train_dr", frames=6))
    with pytest.raises(Refused, match=expected.replace("[", r"\[").replace("]", r"\]")):
        data.load_split(split)


def test_frames_larger_than_split_is_refused(tmp_path):
    split = make_split(tmp_path / "train_dr", frames=4)
    with pytest.raises(Refused, match="frames=5 is larger than split .* which has 4 frames"):
        data.load_split(split, frames=5)


def test_a_second_load_reads_the_decoded_split_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("REGOLITH_CACHE_DIR", str(tmp_path / "cache"))
    split_dir = make_split(tmp_path / "train_dr", frames=3)
    first = data.load_split(split_dir)
    cached = tmp_path / "cache" / f"{first.digest}.npz"
    assert cached.exists()
    # Mark the cached pixels: if the second load shows the mark, it decoded no PNG.
    images = first.images.numpy().copy()
    images[0, 0, 0, 0] = 77
    np.savez(cached, images=images, masks=first.masks.numpy())
    second = data.load_split(split_dir)
    assert second.images[0, 0, 0, 0] == 77 and second.digest == first.digest
    # A torn cache file is only a miss: the split is decoded again, correctly.
    cached.write_bytes(b"torn")
    third = data.load_split(split_dir)
    assert (third.images == first.images).all() and (third.masks == first.masks).all()


# ---- convert: colour masks -> a split ----

BLACK, GREEN, BLUE, RED = (0, 0, 0), (0, 255, 0), (0, 0, 255), (255, 0, 0)


def colour_mask(height=24, width=32):
    """Red sky, black ground, a green and a blue rock, a dark-red band no colour map names, one JPEG-ish green."""
    mask = np.zeros((height, width, 3), np.uint8)
    mask[:8] = RED
    mask[8] = (128, 0, 0)  # as far from red as from black: unnamed
    mask[12:16, 4:10] = GREEN
    mask[18:22, 20:28] = BLUE
    mask[10, 10] = (10, 250, 5)  # green, moved by compression
    return mask


def alrl_set(root, frames=3, size=(24, 32)):
    rng = np.random.default_rng(0)
    (root / "images" / "render").mkdir(parents=True)
    (root / "images" / "clean").mkdir(parents=True)
    for i in range(1, frames + 1):
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(
            root / "images" / "render" / f"render{i:04d}.png")
        Image.fromarray(colour_mask(*size)).save(root / "images" / "clean" / f"clean{i:04d}.png")
    (root / "images" / "clean" / "Thumbs.db").write_bytes(b"\0")  # not an image: ignored
    return root


def test_convert_colour_masks_to_a_split_that_loads(tmp_path):
    src = alrl_set(tmp_path / "alrl")
    report = data.convert(src, tmp_path / "split", "alrl")
    split = data.load_split(tmp_path / "split")
    assert split.names == ["00001", "00002", "00003"]
    mask = split.masks[0].numpy()
    assert (mask[:8] == 2).all() and (mask[8] == 255).all()
    assert (mask[12:16, 4:10] == 1).all() and (mask[18:22, 20:28] == 1).all()
    assert mask[10, 10] == 1  # nearest colour within the tolerance
    assert set(np.unique(mask).tolist()) == {0, 1, 2, 255}
    source = np.asarray(Image.open(src / "images" / "render" / "render0002.png"))
    assert (split.images[1].permute(1, 2, 0).numpy() == source).all()
    assert report["frames"] == 3 and report["unnamed_pixels"] == 3 * 32
    assert report["unnamed_colours"] == {"#800000": 3 * 32}
    assert report["class_pixels"]["rock"] == 3 * (24 + 32 + 1)
    assert json.loads((tmp_path / "split" / "convert.json").read_text())["colour_map"] == "alrl"


def test_convert_with_a_json_map_patterns_and_exact_colours(tmp_path, capsys):
    real = tmp_path / "set" / "real_moon_images"
    real.mkdir(parents=True)
    for name in ("PCAM1", "PCAM2", "TCAM1"):  # one folder, two cameras: a pattern picks one
        Image.fromarray(np.full((24, 32, 3), 90, np.uint8)).save(real / f"{name}.png")
        Image.fromarray(colour_mask()).save(real / f"g_{name}.png")
    table = tmp_path / "colours.json"
    table.write_text(json.dumps([[[0, 0, 0], "regolith"], ["#00FF00", "rock"], ["#0000ff", "rock"],
                                 ["#ff0000", "sky"], [[128, 0, 0], "ignore"]]))
    data.main(["convert", str(tmp_path / "set"), str(tmp_path / "split"), "--colors", str(table),
               "--images", "real_moon_images/PCAM*.png", "--masks", "real_moon_images/g_PCAM*.png",
               "--tolerance", "0"])
    printed = capsys.readouterr().out
    assert "2 frames of 32x24" in printed and "unnamed colours -> 255: 2 pixels" in printed
    assert "#0afa05 (2)" in printed  # exact matching leaves the compressed green unnamed
    mask = data.load_split(tmp_path / "split").masks[0].numpy()
    assert mask[10, 10] == 255 and (mask[8] == 255).all()


def _unpaired(src):
    (src / "images" / "clean" / "clean0002.png").unlink()
    return "render0002.png", {}


def _size_mismatch(src):
    Image.new("RGB", (30, 24)).save(src / "images" / "clean" / "clean0003.png")
    return "clean0003.png: mask is 30x24 but its image render0003.png is 32x24", {}


def _mixed_sizes(src):
    Image.new("RGB", (40, 20)).save(src / "images" / "render" / "render0003.png")
    Image.new("RGB", (40, 20)).save(src / "images" / "clean" / "clean0003.png")
    return "render0003.png: 40x20 but render0001.png is 32x24; a split has one frame size", {}


def _unreadable(src):
    (src / "images" / "clean" / "clean0002.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    return "clean0002.png: unreadable", {}


def _same_number(src):
    Image.new("RGB", (32, 24)).save(src / "images" / "render" / "render_b0002.png")
    return "image number 2 also used by", {}


def _unknown_map(src):
    return "--colors alrl2: neither a built-in colour map (alrl) nor a file", {"colors": "alrl2"}


def _bad_json(src):
    (src / "map.json").write_text("{'#000000': 'regolith'")
    return "map.json: not readable JSON", {"colors": str(src / "map.json")}


def _bad_class(src):
    (src / "map.json").write_text(json.dumps({"#000000": "ground"}))
    return "map.json: class 'ground' for colour '#000000' is not one of regolith, rock, sky, ignore", \
        {"colors": str(src / "map.json")}


def _bad_colour(src):
    (src / "map.json").write_text(json.dumps([[[0, 300, 0], "rock"]]))
    return "map.json: colour [0, 300, 0] is neither", {"colors": str(src / "map.json")}


def _dst_not_empty(src):
    (src.parent / "split").mkdir()
    (src.parent / "split" / "keep.txt").write_text("mine")
    return "split: exists and is not empty", {}


BAD_CONVERSIONS = {"unpaired": _unpaired, "size_mismatch": _size_mismatch, "mixed_sizes": _mixed_sizes,
                   "unreadable": _unreadable, "same_number": _same_number, "unknown_map": _unknown_map,
                   "bad_json": _bad_json, "bad_class": _bad_class, "bad_colour": _bad_colour,
                   "dst_not_empty": _dst_not_empty}


@pytest.mark.parametrize("case", sorted(BAD_CONVERSIONS))
def test_bad_conversion_is_refused_naming_the_fault_and_writes_nothing(tmp_path, case):
    src = alrl_set(tmp_path / "alrl")
    expected, options = BAD_CONVERSIONS[case](src)
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(Refused, match=re.escape(expected)):
        data.convert(src, tmp_path / "split", **{"colors": "alrl", **options})
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no split, no leftover partial folder
    if case == "dst_not_empty":
        assert (tmp_path / "split" / "keep.txt").read_text() == "mine"


def test_main_still_checks_a_split_and_refuses_with_status_2(tmp_path, capsys):
    data.main([str(make_split(tmp_path / "train_dr", frames=3))])
    assert "3 frames of 32x32, digest" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_status:
        data.main(["convert", str(tmp_path / "nowhere"), str(tmp_path / "split"), "--colors", "alrl"])
    assert exit_status.value.code == 2
    assert "nowhere: no such directory" in capsys.readouterr().err
