"""Reading splits: order, frames, digest, class weights, a refusal for each bad input; converting colour masks."""

import math
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


# ---- convert: colour masks -> a split ----

def test_main_still_checks_a_split_and_refuses_with_status_2(tmp_path, capsys):
    data.main([str(make_split(tmp_path / "train_dr", frames=3))])
    assert "3 frames of 32x32, digest" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_status:
        data.main([str(tmp_path / "nowhere")])
    assert exit_status.value.code == 2
    assert "nowhere: no such directory" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_status:  # the old spelling of the conversion says where it went
        data.main(["convert", str(tmp_path / "nowhere"), str(tmp_path / "split"), "--colors", "alrl"])
    assert exit_status.value.code == 2 and "python -m regolith.convert" in capsys.readouterr().err
