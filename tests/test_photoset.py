"""Real photographs: reading them as found, fitting them to the frame, shares and statistics (pictures: test_figures).

Every photo here is made by the test itself with PIL (or, for 16-bit RGB, a few lines of PNG).
"""

import os
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from regolith import CLASSES, ROCK, Refused, photoset

REGOLITH, SKY = CLASSES.index("regolith"), CLASSES.index("sky")


def save(path, array, mode=None, **options):
    Image.fromarray(np.asarray(array), mode).save(path, **options)
    return path


def png_bytes(width, height, bit_depth, colour_type, rows) -> bytes:
    """A PNG written by hand (PIL writes no 16-bit RGB, no 0x0, no cheap 20000x20000): ``rows`` of raw bytes."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    packer = zlib.compressobj()  # row by row: a huge blank image never sits in memory uncompressed
    body = b"".join(packer.compress(b"\0" + row) for row in rows) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def blank_png(side: int) -> bytes:
    """A side x side 1-bit black PNG: a few kB however large it claims to be."""
    row = bytes((side + 7) // 8)
    return png_bytes(side, side, 1, 0, (row for _ in range(side)))


def png_rgb16(path, array):
    """A 16-bit-per-channel RGB PNG, written by hand: PIL has no mode to write one from."""
    height, width, _ = array.shape
    path.write_bytes(png_bytes(width, height, 16, 2, (array[y].astype(">u2").tobytes() for y in range(height))))
    return path


def read(path):
    rgb, warnings = photoset.read_photo(path)
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
    return rgb, warnings


# ---- modes ----

def test_grayscale_and_cmyk_jpegs_become_rgb(tmp_path):
    gray = np.tile(np.linspace(0, 255, 32).astype(np.uint8), (16, 1))
    rgb, _ = read(save(tmp_path / "gray.jpg", gray, "L", quality=95))
    assert rgb.shape == (16, 32, 3)
    assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()
    assert np.abs(rgb[..., 0].astype(int) - gray).max() <= 4
    Image.new("RGB", (16, 16), (200, 50, 30)).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    with Image.open(tmp_path / "cmyk.jpg") as image:
        assert image.mode == "CMYK"
    rgb, _ = read(tmp_path / "cmyk.jpg")
    assert np.abs(rgb.reshape(-1, 3).mean(0) - (200, 50, 30)).max() < 4  # not inverted, not washed out


def test_sixteen_bit_grayscale_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 1000, 32768, 65535]], np.uint16)
    path = save(tmp_path / "gray16.png", values)
    with Image.open(path) as image:
        assert image.mode == "I;16"
    rgb, _ = read(path)
    # PIL's own convert("L") would give 0, 255, 255, 255: everything above 255 white.
    assert rgb[0, :, 0].tolist() == [0, 4, 128, 255]


def test_sixteen_bit_rgb_png_keeps_its_levels(tmp_path):
    values = np.array([[[65535, 32768, 1000], [0, 256, 512]]], np.uint16)
    rgb, _ = read(png_rgb16(tmp_path / "rgb16.png", values))
    assert rgb[0].tolist() == [[255, 128, 3], [0, 1, 2]]


def test_alpha_is_composited_on_black(tmp_path):
    rgba = np.zeros((1, 3, 4), np.uint8)
    rgba[0] = [(200, 100, 50, 255), (200, 100, 50, 0), (200, 100, 50, 128)]
    rgb, _ = read(save(tmp_path / "rgba.png", rgba, "RGBA"))
    assert rgb[0].tolist() == [[200, 100, 50], [0, 0, 0], [100, 50, 25]]
    la = np.array([[[90, 255], [90, 0]]], np.uint8)
    rgb, _ = read(save(tmp_path / "la.png", la, "LA"))
    assert rgb[0].tolist() == [[90, 90, 90], [0, 0, 0]]
    palette = Image.new("P", (2, 1))
    palette.putpalette([10, 20, 30, 250, 0, 0])
    palette.putpixel((1, 0), 1)
    palette.info["transparency"] = 1
    palette.save(tmp_path / "palette.png")
    rgb, _ = read(tmp_path / "palette.png")
    assert rgb[0].tolist() == [[10, 20, 30], [0, 0, 0]]


def test_exif_orientation_is_followed_and_shares_follow_it(tmp_path):
    # 40 wide, 20 tall, left half white; orientation 6 says: turn 90 degrees clockwise to view.
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :20] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(pixels).save(tmp_path / "turned.jpg", exif=exif, quality=95)
    rgb, _ = read(tmp_path / "turned.jpg")
    assert rgb.shape == (40, 20, 3)
    assert rgb[:18].mean() > 240 and rgb[22:].mean() < 15  # the white half is now on top
    image, valid = photoset.fit(rgb, 40)
    bright_is_rock = torch.where(image.float().mean(0) > 128, ROCK, REGOLITH)
    assert photoset.class_shares(bright_is_rock, valid)["rock"] == pytest.approx(0.5, abs=0.05)
    assert bright_is_rock[:18][valid[:18]].eq(ROCK).all()


# ---- fitting ----

def test_letterbox_keeps_every_pixel_of_a_panorama_and_a_tall_crop(tmp_path):
    panorama = np.full((60, 600, 3), 200, np.uint8)
    image, valid = photoset.fit(panorama, 120)
    assert image.shape == (3, 120, 120) and image.dtype == torch.uint8 and valid.dtype == torch.bool
    rows = valid.any(1).nonzero().flatten()
    assert valid.any(0).all() and len(rows) == 12 and rows[0] == 54  # centred: 54 rows of padding above
    assert (~valid).sum() == 120 * 120 - 120 * 12
    assert image[:, ~valid].eq(0).all() and image[:, valid].eq(200).all()
    tall = np.full((400, 50, 3), 90, np.uint8)
    image, valid = photoset.fit(tall, 120)
    assert valid.any(1).all() and valid.any(0).sum() == 15


def test_cover_crops_the_centre_square(tmp_path):
    panorama = np.zeros((60, 600, 3), np.uint8)
    panorama[:, 270:330] = 255  # only the middle 60 columns are white
    image, valid = photoset.fit(panorama, 30, mode="cover")
    assert valid.all() and image.shape == (3, 30, 30)
    assert image.float().mean() > 200  # the ends are gone


def test_fit_refuses_an_unknown_mode():
    with pytest.raises(Refused, match="'stretch': expected one of letterbox, cover"):
        photoset.fit(np.zeros((4, 4, 3), np.uint8), 8, mode="stretch")


def test_stack_makes_the_batch():
    fitted = [photoset.fit(np.zeros((h, w, 3), np.uint8), 16) for h, w in ((10, 30), (30, 10), (16, 16))]
    images, valid = photoset.stack(fitted)
    assert images.shape == (3, 3, 16, 16) and valid.shape == (3, 16, 16)
    assert valid.sum((1, 2)).tolist() == [16 * 5, 5 * 16, 256]


# ---- shares ----

def test_padding_never_counts_and_shares_sum_to_one():
    _, valid = photoset.fit(np.zeros((60, 600, 3), np.uint8), 120)
    prediction = torch.full(valid.shape, ROCK)
    prediction[valid] = REGOLITH  # a model that calls every bar pixel rock
    assert photoset.class_shares(prediction, valid) == {"regolith": 1.0, "rock": 0.0, "sky": 0.0}
    rng = np.random.default_rng(0)
    prediction = torch.from_numpy(rng.integers(0, 3, valid.shape))
    shares = photoset.class_shares(prediction, valid)
    assert sum(shares.values()) == pytest.approx(1.0)
    assert shares["rock"] == pytest.approx((prediction[valid] == ROCK).float().mean().item())


def test_shares_refuse_mismatched_shapes():
    with pytest.raises(ValueError, match="prediction is"):
        photoset.class_shares(torch.zeros(4, 4, dtype=torch.long), torch.ones(4, 5, dtype=torch.bool))


# ---- reading a folder ----

def test_decoding_bytes_checks_the_size_on_the_header_before_any_pixel():
    with pytest.raises(Refused, match=r"^row 2: a 0x0 PNG has no pixels$"):
        photoset.decode_photo(png_bytes(0, 0, 8, 2, []), "row 2")
    with pytest.raises(Refused, match=r"^row 0: a 8000x8000 PNG \(64 MP\) is over the 50 MP limit; downscale it first"):
        photoset.decode_photo(blank_png(8000), "row 0", max_pixels=50_000_000)
    with pytest.raises(Refused, match=r"^row 0: a 20000x20000 PNG \(400 MP\) is too large to decode \(PIL refuses"):
        photoset.decode_photo(blank_png(20000), "row 0")
    rgb, warnings = photoset.decode_photo(blank_png(300), "row 0", max_pixels=50_000_000)
    assert rgb.shape == (300, 300, 3) and not rgb.any() and warnings == []  # no file name: no suffix to check


def make_folder(tmp_path):
    folder = tmp_path / "apollo"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    save(folder / "b_good.JPG", rng.integers(0, 255, (48, 64, 3), dtype=np.uint8), quality=90)
    save(folder / "a_gray.png", rng.integers(0, 255, (30, 20), dtype=np.uint8), "L")
    save(folder / "c_panorama.jpeg", rng.integers(0, 255, (20, 200, 3), dtype=np.uint8))
    whole = save(tmp_path / "whole.jpg", rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).read_bytes()
    (folder / "d_truncated.jpg").write_bytes(whole[:len(whole) // 2])
    (folder / "d_header_only.jpg").write_bytes(whole[:100])  # cut inside the header: nothing to decode
    (folder / "e_empty.jpg").write_bytes(b"")
    (folder / "f_notes.jpg").write_text("not a photo, just notes\n")
    (folder / "g_scan.tif").write_bytes(b"II*\0")
    (folder / "README.txt").write_text("Apollo 11 surface frames\n")
    (folder / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (folder / "thumbs").mkdir()
    save(folder / "thumbs" / "x.jpg", np.zeros((4, 4, 3), np.uint8))
    return folder


def test_a_folder_as_found_is_read_damage_named_and_left_untouched(tmp_path):
    folder = make_folder(tmp_path)
    before = {p: (p.stat().st_mtime_ns, p.read_bytes() if p.is_file() else None) for p in folder.rglob("*")}
    read_photos, skipped, warnings = photoset.read_photos(folder)
    assert [name for name, _ in read_photos] == ["a_gray.png", "b_good.JPG", "c_panorama.jpeg", "d_truncated.jpg"]
    assert [rgb.shape for _, rgb in read_photos] == [(30, 20, 3), (48, 64, 3), (20, 200, 3), (64, 64, 3)]
    reasons = dict(skipped)
    assert sorted(reasons) == ["d_header_only.jpg", "e_empty.jpg", "f_notes.jpg", "g_scan.tif"]
    assert "a JPEG whose header is cut short" in reasons["d_header_only.jpg"]
    assert "empty file (0 bytes)" in reasons["e_empty.jpg"]
    assert "not an image" in reasons["f_notes.jpg"]
    assert "JPEG or PNG only" in reasons["g_scan.tif"]
    assert len(warnings) == 1 and warnings[0].startswith("d_truncated.jpg: truncated JPEG")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False  # switched on for that one load only
    assert {p: (p.stat().st_mtime_ns, p.read_bytes() if p.is_file() else None) for p in folder.rglob("*")} == before


def test_content_decides_not_the_suffix(tmp_path):
    save(tmp_path / "really_png.jpg", np.full((8, 8, 3), 7, np.uint8), format="PNG")
    Image.new("RGB", (8, 8)).save(tmp_path / "animated.png", format="GIF")
    found, skipped, warnings = photoset.read_photos(tmp_path)
    assert [name for name, _ in found] == ["really_png.jpg"] and found[0][1].max() == 7
    assert warnings == ["really_png.jpg: a PNG file named .jpg; read as PNG"]
    assert skipped == [("animated.png", "a GIF file by its content, expected JPEG or PNG")]


def test_a_folder_without_a_readable_photo_is_refused_naming_it(tmp_path):
    folder = tmp_path / "surveyor"
    folder.mkdir()
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.txt").write_text("x")
    with pytest.raises(Refused, match=r"photo folder .*surveyor: no readable photo .* 1 skipped: "
                                      r"empty.jpg: empty file \(0 bytes\); 1 other entry ignored"):
        photoset.read_photos(folder)
    (folder / "empty.jpg").unlink()
    with pytest.raises(Refused, match="surveyor: no readable photo .*no file with such a suffix"):
        photoset.read_photos(folder)
    with pytest.raises(Refused, match="nowhere: no such directory"):
        photoset.read_photos(tmp_path / "nowhere")


def test_digest_covers_names_and_bytes_not_the_folder(tmp_path):
    a, b = make_folder(tmp_path / "a"), make_folder(tmp_path / "b")
    assert photoset.photo_set_digest(a) == photoset.photo_set_digest(b)
    used = [a / name for name, _ in photoset.read_photos(a)[0]]
    assert photoset.photo_set_digest(used) != photoset.photo_set_digest(a)  # the skipped files are not in it
    assert photoset.photo_set_digest(list(reversed(used))) == photoset.photo_set_digest(used)
    assert len(photoset.photo_set_digest(used)) == 16
    raw = bytearray((b / "b_good.JPG").read_bytes())
    raw[-10] ^= 1
    (b / "b_good.JPG").write_bytes(bytes(raw))
    assert photoset.photo_set_digest(a) != photoset.photo_set_digest(b)


# ---- statistics ----

def test_set_statistics_bracket_the_mean_and_one_photo_has_no_interval():
    shares = [0.91, 0.62, 0.88, 0.47, 0.95, 0.73, 0.80, 0.55]
    summary = photoset.set_statistics(shares)
    assert summary["photos"] == 8 and summary["mean"] == pytest.approx(np.mean(shares))
    assert (summary["min"], summary["max"]) == (0.47, 0.95)
    low, high = summary["interval"]
    assert low < summary["mean"] < high and high - low < 0.3
    assert photoset.set_statistics(shares, seed=0) == summary  # seeded: the same shares, the same interval
    assert photoset.set_statistics([0.83])["interval"] is None


def test_paired_difference_counts_photo_by_photo():
    a = [0.9, 0.8, 0.7, 0.6, 0.5]
    b = [0.5, 0.6, 0.7, 0.7, 0.1]
    summary = photoset.paired_difference(a, b)
    assert summary["mean"] == pytest.approx(np.mean(np.subtract(a, b)))
    assert (summary["a_more"], summary["b_more"], summary["ties"], summary["photos"]) == (3, 1, 1, 5)
    low, high = summary["interval"]
    assert low <= summary["mean"] <= high
    assert photoset.paired_difference([0.4], [0.1])["interval"] is None
    with pytest.raises(ValueError, match="equally long"):
        photoset.paired_difference(a, b[:4])


def test_fitted_photos_go_through_the_model_as_one_batch():
    # The seam the tracked verb will use: fit, stack, logits_at_mask_size, argmax, shares per photo.
    from conftest import tiny_config
    from regolith import model as segformer

    torch.manual_seed(0)
    net = segformer.random_init(tiny_config()).eval()
    rng = np.random.default_rng(0)
    fitted = [photoset.fit(rng.integers(0, 255, shape, dtype=np.uint8), 64) for shape in ((30, 90, 3), (64, 64, 3))]
    images, valid = photoset.stack(fitted)
    with torch.no_grad():
        predictions = segformer.logits_at_mask_size(net, images).argmax(1)
    assert predictions.shape == valid.shape == (2, 64, 64)
    for prediction, photo_valid in zip(predictions, valid):
        assert sum(photoset.class_shares(prediction, photo_valid).values()) == pytest.approx(1.0)


def test_a_photo_name_that_is_not_utf8_is_refused_naming_it(tmp_path):
    folder = tmp_path / "apollo"
    folder.mkdir()
    save(folder / "ok.jpg", np.zeros((8, 8, 3), np.uint8))
    save(Path(os.fsdecode(bytes(folder) + b"/caf\xe9.jpg")), np.zeros((8, 8, 3), np.uint8))  # Latin-1 café
    for read in (photoset.read_photos, lambda f: photoset.prepare(f, 32), photoset.photo_set_digest):
        with pytest.raises(Refused, match=re.escape("the file name 'caf\\xe9.jpg' is not valid UTF-8")):
            read(folder)


def test_prepare_fits_each_photo_as_it_is_read_so_one_full_size_decode_is_held_at_a_time(tmp_path):
    import tracemalloc
    side, count = 1200, 8  # 4.3 MB per decode; all eight held at once would be 35 MB
    ramp = np.broadcast_to(np.linspace(0, 255, side, dtype=np.uint8)[:, None, None], (side, side, 3))
    for i in range(count):
        save(tmp_path / f"big_{i}.jpg", np.ascontiguousarray(ramp), quality=50)
    tracemalloc.start()
    try:
        prepared = photoset.prepare(tmp_path, 32)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert prepared["images"].shape == (count, 3, 32, 32)
    assert peak < 3 * side * side * 3, f"peak {peak / 1e6:.1f} MB"  # a couple of decodes, not all of them


def test_a_30000_square_png_in_a_folder_is_skipped_as_too_large_not_as_damaged(tmp_path):
    (tmp_path / "huge.png").write_bytes(blank_png(30000))
    save(tmp_path / "ok.jpg", np.zeros((8, 8, 3), np.uint8))
    _, skipped, _ = photoset.read_photos(tmp_path)
    assert skipped == [("huge.png", "a 30000x30000 PNG (900 MP) is too large to decode (PIL refuses over 179 MP, "
                                    "against decompression bombs); downscale it first")]
