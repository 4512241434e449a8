"""The pictures: photo panels and contact sheets of sane size, thumbnails that scale, overlays, per-epoch images,
and the ablation's charts."""

import sys

import numpy as np
import torch
from PIL import Image

from regolith import ROCK, ablation, figures, names, photoset

SKY = 2


def fitted_entries(count, size=64):
    rng = np.random.default_rng(1)
    entries = []
    for index in range(count):
        height, width = (40, 120) if index % 3 == 0 else (120, 50) if index % 3 == 1 else (90, 90)
        image, valid = photoset.fit(rng.integers(60, 200, (height, width, 3), dtype=np.uint8), size)
        prediction = torch.from_numpy(rng.integers(0, 3, (size, size)))
        prediction[: size // 2] = SKY if index % 2 else ROCK
        entries.append((f"AS11-40-{5850 + index}_a_rather_long_file_name.jpg", image, valid, prediction,
                        photoset.class_shares(prediction, valid)["rock"]))
    return entries


def test_photo_panel_and_contact_sheet_are_sane_pngs(tmp_path):
    name, image, valid, prediction, _ = fitted_entries(1)[0]
    figures.photo_panel(name, image, valid, [(label, p, photoset.class_shares(p, valid))
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
    image, valid = photoset.fit(np.full((20, 80, 3), 100, np.uint8), 40)
    prediction = torch.full(valid.shape, ROCK)
    out = figures.overlay(image, valid, prediction)
    assert {tuple(c) for c in out[~valid.numpy()]} <= {figures.PAD_COLOUR, figures.PAD_HATCH}
    photo_pixel = out[valid.numpy()][0].astype(int)
    assert photo_pixel[0] > 150 and photo_pixel[2] < 60  # orange rock over grey ground


def ablation_runs(baseline_shift=0.0):
    """The study's three variants, two seeds each, as ablation.select_runs returns them; seeds differ unevenly."""
    runs = []
    for dr, frames, rock in ((False, 750, 0.80), (True, 750, 0.85), (True, 1500, 0.86)):
        for seed in (0, 1):
            spread = seed * 0.004 * (1 + dr) * frames / 750
            runs.append({"run_id": f"{names.variant(dr, frames)}-{seed}", "run_name": names.variant(dr, frames),
                         "start_time": 0, "dr": dr, "frames": frames, "seed": seed,
                         "variant": names.variant(dr, frames), "best_epoch": 2, "spread": spread,
                         "iou_rock": rock + spread + (0 if dr else baseline_shift), "iou_regolith": 0.9,
                         "iou_sky": 0.95, "miou": 0.85, "settings": {}})
    return runs


def test_the_ablation_charts_draw_without_pyplot(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)  # any pyplot import in the charts now fails
    runs = ablation_runs()
    real = {run["run_id"]: {"digest": "abc", "rock": [share + 10 * run["spread"] for share in
                                                      (0.2 + 0.3 * run["dr"], 0.4, 0.5 + run["frames"] / 5000)]}
            for run in runs}
    results = ablation.ablation_results(runs, "v2", real=real)
    curves = {run["run_id"]: [(1, run["iou_rock"] - 0.1), (2, run["iou_rock"]), (3, run["iou_rock"] - 0.02)]
              for run in runs}
    figures.plot_ablation(results, curves, tmp_path / "ablation.png")
    with Image.open(tmp_path / "ablation.png") as image:
        assert image.size == (3600, 896)  # four panels: the real photos' one too
    generations = ablation.generations_results([ablation.ablation_results(ablation_runs(shift), generation)
                                                for generation, shift in (("v1", -0.1), ("v2", 0.0))])
    figures.plot_generations(generations, tmp_path / "generations.png")
    with Image.open(tmp_path / "generations.png") as image:
        assert image.size == (2250, 870)
