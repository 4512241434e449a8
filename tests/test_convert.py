"""convert: labelled sets with colour masks into splits that load, and every way a conversion is refused."""

import json
import re

import numpy as np
import pytest
from PIL import Image

from regolith import Refused, convert, data


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
    report = convert.convert(src, tmp_path / "split", "alrl")
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
    convert.main([str(tmp_path / "set"), str(tmp_path / "split"), "--colors", str(table),
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


def _colour_twice(src):
    # Duplicate keys in a JSON object: json.loads alone keeps the last, so rock silently became sky.
    (src / "map.json").write_text('{"#000000": "regolith", "#00ff00": "rock", "#ff0000": "sky", "#00ff00": "sky"}')
    return "map.json: colour '#00ff00' is given two classes ('rock', then 'sky')", {"colors": str(src / "map.json")}


def _tolerance_nan(src):
    return "--tolerance nan: expected 0", {"tolerance": float("nan")}


def _list_as_class(src):
    (src / "map.json").write_text(json.dumps({"#000000": ["rock"]}))
    return "map.json: class ['rock'] for colour '#000000' is not one of", {"colors": str(src / "map.json")}


def _deeply_nested(src):
    (src / "map.json").write_text("[" * 100_000 + "]" * 100_000)
    return "map.json: nested too deeply to be a colour table", {"colors": str(src / "map.json")}


def _dst_under_a_file(src):
    (src / "a_file").write_text("x")
    return "split: under", {"dst": src / "a_file" / "deeper" / "split"}


def _dst_a_link(src):
    (src.parent / "empty").mkdir()
    (src.parent / "split").symlink_to(src.parent / "empty")
    return "split: a symbolic link (to ", {}


def _dst_not_empty(src):
    (src.parent / "split").mkdir()
    (src.parent / "split" / "keep.txt").write_text("mine")
    return "split: exists and is not empty", {}


BAD_CONVERSIONS = {"unpaired": _unpaired, "size_mismatch": _size_mismatch, "mixed_sizes": _mixed_sizes,
                   "unreadable": _unreadable, "same_number": _same_number, "unknown_map": _unknown_map,
                   "bad_json": _bad_json, "bad_class": _bad_class, "bad_colour": _bad_colour,
                   "dst_not_empty": _dst_not_empty, "colour_twice": _colour_twice,
                   "tolerance_nan": _tolerance_nan, "list_as_class": _list_as_class,
                   "deeply_nested": _deeply_nested, "dst_under_a_file": _dst_under_a_file, "dst_a_link": _dst_a_link}


@pytest.mark.parametrize("case", sorted(BAD_CONVERSIONS))
def test_bad_conversion_is_refused_naming_the_fault_and_writes_nothing(tmp_path, case):
    src = alrl_set(tmp_path / "alrl")
    expected, options = BAD_CONVERSIONS[case](src)
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(Refused, match=re.escape(expected)):
        convert.convert(src, **{"dst": tmp_path / "split", "colors": "alrl", **options})
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no split, no leftover partial folder
    if case == "dst_not_empty":
        assert (tmp_path / "split" / "keep.txt").read_text() == "mine"


def test_main_refuses_a_missing_source_with_status_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_status:
        convert.main([str(tmp_path / "nowhere"), str(tmp_path / "split"), "--colors", "alrl"])
    assert exit_status.value.code == 2
    assert "nowhere: no such directory" in capsys.readouterr().err


def test_a_256_colour_table_converts_a_frame_in_bounded_memory():
    import tracemalloc
    rng = np.random.default_rng(0)
    palette = [tuple(int(v) for v in rgb) for rgb in rng.integers(0, 256, (256, 3))]
    table = {rgb: i % 3 for i, rgb in enumerate(dict.fromkeys(palette))}
    colours = rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)  # 16384 pixels, nearly all distinct
    colours[:8, :8] = palette[0]
    tracemalloc.start()
    try:
        labels, unnamed = convert.colours_to_labels(colours, table, 20.0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (labels[:8, :8] == table[palette[0]]).all()
    flat = colours.reshape(-1, 3).astype(np.float32)
    distance = np.linalg.norm(flat[:, None] - np.array(list(table), np.float32), axis=-1)  # the plain reference
    expected = np.where(distance.min(1) <= 20, np.array(list(table.values()))[distance.argmin(1)], 255)
    assert (labels.ravel() == expected).all() and sum(unnamed.values()) == (distance.min(1) > 20).sum()
    # Every pixel against every colour at once held 16384 x 256 x 3 float32 differences (50 MB).
    assert peak < 20e6, f"peak {peak / 1e6:.0f} MB"


def test_a_small_conversion_does_not_wait_on_torch():
    """convert needs PIL and numpy only: importing torch took most of a 4-frame conversion's 8-14 s."""
    import subprocess
    import sys
    done = subprocess.run([sys.executable, "-c", "import sys, regolith.convert; print('torch' in sys.modules)"],
                          capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "False", done.stderr
