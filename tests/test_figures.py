"""The pictures: photo panels and contact sheets of sane size, thumbnails that scale, overlays, per-epoch images."""

import numpy as np
import torch
from PIL import Image

from regolith import ROCK, figures, photos

SKY = 2


def fitted_entries(count, size=64):
    rng = np.random.default_rng(1)
    entries = []
    for index in range(count):
        height, width = (40, 120) if index % 3 == 0 else (120, 50) if index % 3 == 1 else (90, 90)
        image, valid = photos.fit(rng.integers(60, 200, (height, width, 3), dtype=np.uint8), size)
        prediction = torch.from_numpy(rng.integers(0, 3, (size, size)))
        prediction[: size // 2] = SKY if index % 2 else ROCK
        entries.append((f"AS11-40-{5850 + index}_a_rather_long_file_name.jpg", image, valid, prediction,
                        photos.class_shares(prediction, valid)["rock"]))
    return entries


def test_photo_panel_and_contact_sheet_are_sane_pngs(tmp_path):
    name, image, valid, prediction, _ = fitted_entries(1)[0]
    figures.photo_panel(name, image, valid, [(label, p, photos.class_shares(p, valid))
                                             for label, p in (("dr_750", prediction), ("nodr_750", 2 - prediction))],
                        tmp_path / "panel.png")
    with Image.open(tmp_path / "panel.png") as panel:
        assert 800 < panel.width < 4000 and panel.height < 1000
    for count in (5, 35):
        figures.contact_sheet(fitted_entries(count), tmp_path / f"sheet{count}.png", f"{count} photos")
        with Image.open(tmp_path / f"sheet{count}.png") as sheet:
            assert sheet.width < 4000 and sheet.height < 4000


def test_sheet_layout_shrinks_thumbnails_beyond_thirty():
    assert figures.sheet_layout(3) == (3, 2.2)
    assert figures.sheet_layout(30) == (6, 2.2)
    columns, thumb = figures.sheet_layout(31)
    assert columns == 6 and thumb < 2.2
    for count in (100, 400):
        columns, thumb = figures.sheet_layout(count)
        assert columns * thumb <= 13.3


def test_overlay_paints_rock_loud_and_padding_neutral():
    image, valid = photos.fit(np.full((20, 80, 3), 100, np.uint8), 40)
    prediction = torch.full(valid.shape, ROCK)
    out = figures.overlay(image, valid, prediction)
    assert {tuple(c) for c in out[~valid.numpy()]} <= {figures.PAD_COLOUR, figures.PAD_HATCH}
    photo_pixel = out[valid.numpy()][0].astype(int)
    assert photo_pixel[0] > 150 and photo_pixel[2] < 60  # orange rock over grey ground


