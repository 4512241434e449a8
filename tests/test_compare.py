"""Compare: pure grouping and deltas on small tables, then real stores whose runs' metrics the tests set,
a real `mlflow server` on loopback, and the `ablation` entry point end to end through `mlflow run`."""

import json
import os
import re
import shutil
import statistics
import subprocess
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
from matplotlib.figure import Figure
from PIL import Image

from conftest import copy_project, free_port, make_demo_layout, save_legacy_encoder, start_server, stop_server
from regolith import Refused, ablation, compare, figures, names

T0 = 1_700_000_000_000  # ms; start times are set so "the latest" is unambiguous


def row(dr, frames, seed, rock, status="FINISHED", kind="train", start=0, run_id=None, epoch=3):
    """A store row as store.read_runs returns it."""
    run_id = run_id or f"{'dr' if dr else 'nodr'}{frames}-s{seed}-{start}-{status}"
    return {"run_id": run_id, "run_name": f"{'dr' if dr else 'nodr'}_{frames}", "status": status,
            "start_time": T0 + start,
            "tags": {"regolith.kind": kind, "regolith.dr": str(dr).lower(), "regolith.frames": str(frames),
                     "regolith.seed": str(seed)},
            "metrics": {"best/iou_rock": rock, "best/iou_regolith": 0.9, "best/iou_sky": 0.95,
                        "best/miou": (rock + 0.9 + 0.95) / 3, "best/epoch": float(epoch)}}


# ---- pure functions on small tables -------------------------------------------------------------

def test_select_keeps_finished_training_runs_latest_per_seed():
    rows = [row(False, 80, 0, 0.5, start=1), row(False, 80, 0, 0.4, start=5),  # the later one counts
            row(False, 80, 0, 0.9, status="FAILED", start=9), row(False, 80, 1, 0.9, status="RUNNING"),
            row(True, 80, 0, 0.9, status="KILLED"), row(True, 80, 0, 0.6, kind="compare"),
            {**row(True, 80, 0, 0.6), "metrics": {}}]  # finished but without best/ metrics
    runs, ignored = ablation.select_runs(rows)
    assert [(r["variant"], r["seed"], r["iou_rock"]) for r in runs] == [("nodr_80", 0, 0.4)]
    assert ignored == {"failed": 1, "killed": 1, "running": 1, "stale": 0, "incomplete": 1, "superseded": 1}


@pytest.mark.parametrize("bad,said", [
    ({"rock": float("nan")}, "best/iou_rock = nan"), ({"rock": float("inf")}, "best/iou_rock = inf"),
    ({"frames": -8}, "tag regolith.frames='-8'"),
])
def test_a_run_with_a_score_that_is_no_iou_or_negative_frames_is_refused_not_averaged(bad, said):
    rows = [row(False, 80, 0, 0.5), row(True, 160, 0, 0.7), row(**{"dr": True, "frames": 80, "seed": 0, "rock": 0.6, **bad})]
    with pytest.raises(Refused, match=re.escape(said)):
        ablation.select_runs(rows)


def test_results_folder_of_an_experiment_named_dotdot_stays_under_results(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for experiment in ("..", ".", "../../x"):
        folder = compare.results_folder("", experiment).resolve()
        assert folder.parent.parent == (tmp_path / "experiments" / "results").resolve(), experiment


def test_matched_count_is_the_largest_both_have_and_size_delta_uses_the_largest_dr():
    runs, _ = ablation.select_runs([row(False, 40, 0, 0.3), row(False, 80, 0, 0.5), row(True, 40, 0, 0.4),
                                   row(True, 80, 0, 0.6), row(True, 160, 0, 0.7), row(False, 320, 0, 0.1)])
    results = ablation.ablation_results(runs, "x")
    assert list(results["variants"]) == ["nodr_40", "nodr_80", "nodr_320", "dr_40", "dr_80", "dr_160"]
    assert (results["dr_delta"]["variant"], results["dr_delta"]["baseline"]) == ("dr_80", "nodr_80")
    assert (results["size_delta"]["variant"], results["size_delta"]["baseline"]) == ("dr_160", "dr_80")
    assert results["dr_delta"]["absolute"] == pytest.approx(0.1)
    assert results["dr_delta"]["relative"] == pytest.approx(0.2)
    assert results["dr_delta"]["absolute_std"] is None  # one seed: no spread to give


def test_delta_pairs_by_seed_and_leaves_out_unpaired_seeds():
    runs, _ = ablation.select_runs([row(False, 8, 0, 0.5), row(False, 8, 1, 0.4), row(False, 8, 2, 0.0),
                                   row(True, 8, 0, 0.6), row(True, 8, 1, 0.6), row(True, 16, 0, 0.7)])
    variants = ablation.summarize_variants(runs)
    entry = ablation.delta(variants, "dr_8", "nodr_8")
    assert entry["seeds"] == [0, 1] and entry["paired"]
    assert entry["absolute"] == pytest.approx(0.15)
    assert entry["absolute_std"] == pytest.approx(statistics.stdev([0.1, 0.2]))
    assert entry["relative"] == pytest.approx((0.2 + 0.5) / 2)
    # seed 2 stays in the variant's own mean and spread
    assert variants["nodr_8"]["iou_rock"]["mean"] == pytest.approx(0.3)
    unpaired = ablation.delta(variants, "dr_16", "nodr_8")
    assert unpaired["seeds"] == [0] and unpaired["absolute"] == pytest.approx(0.2)


def test_relative_delta_is_none_over_a_zero_baseline():
    runs, _ = ablation.select_runs([row(False, 8, 0, 0.0), row(True, 8, 0, 0.3), row(True, 16, 0, 0.4)])
    results = ablation.ablation_results(runs, "x")
    assert results["dr_delta"]["absolute"] == pytest.approx(0.3) and results["dr_delta"]["relative"] is None
    assert "n/a" in compare.format_table(results)


def test_runs_that_differ_in_recipe_or_validation_split_are_flagged():
    rows = [row(False, 8, 0, 0.5), row(True, 8, 0, 0.6), row(True, 16, 0, 0.7)]
    for r, epochs, lr in zip(rows, ["40", "40", "2"], ["6e-5", "0.00006", "6e-5"]):
        r["params"] = {"epochs": epochs, "lr": lr, "pretrained_id": "nvidia/mit-b0@abc"}
        r["tags"].update({"regolith.val_digest": "d1", "regolith.precision": "bf16", "regolith.compiled": "true"})
    rows[0]["tags"]["regolith.precision"] = "fp32"
    runs, _ = ablation.select_runs(rows)
    results = ablation.ablation_results(runs, "x")
    assert results["warnings"] == [
        "the runs compared differ in epochs: 40 (nodr_8 seed 0, dr_8 seed 0); 2 (dr_16 seed 0)",
        "the runs compared differ in regolith.precision: fp32 (nodr_8 seed 0); bf16 (dr_8 seed 0, dr_16 seed 0)"]
    assert "warning: the runs compared differ in epochs" in compare.format_table(results)
    assert results["variants"]["dr_16"]["settings"]["epochs"] == "2"


@pytest.mark.parametrize("rows,needs", [
    ([row(True, 80, 0, 0.6), row(True, 160, 0, 0.7), row(False, 80, 0, 0.5, status="FAILED")],
     "needs a nodr (regolith.dr=false) variant; found FINISHED training runs of: dr_80, dr_160"),
    ([row(False, 80, 0, 0.5), row(True, 80, 0, 0.6)],
     "needs a dr variant with more than the matched 80 frames (e.g. dr_160); "
     "found FINISHED training runs of: nodr_80, dr_80"),
    ([row(False, 750, 0, 0.5), row(True, 1500, 0, 0.6)],
     "needs a dr and a nodr variant with the same frame count (e.g. dr_750 beside nodr_750); "
     "found FINISHED training runs of: nodr_750, dr_1500"),
    ([row(False, 80, 0, 0.5, status="FAILED")],
     "needs a nodr and a dr variant at the same frame count; found FINISHED training runs of: none"),
])
def test_a_missing_group_is_refused_naming_what_is_needed_and_found(rows, needs):
    runs, _ = ablation.select_runs(rows)
    with pytest.raises(Refused) as error:
        ablation.ablation_results(runs, "x")
    assert needs in str(error.value)


# ---- real stores ---------------------------------------------------------------------------------

def log_train_run(client, experiment_id, dr, frames, seed, rock, status="FINISHED", start=0, curve=None):
    """A training run as regolith.train records it, with the metrics the test chooses."""
    variant = f"{'dr' if dr else 'nodr'}_{frames}"
    run = client.create_run(experiment_id, start_time=T0 + start, run_name=variant,
                            tags={"regolith.kind": "train", "regolith.dr": str(dr).lower(),
                                  "regolith.frames": str(frames), "regolith.seed": str(seed),
                                  "regolith.variant": variant})
    curve = curve or [rock - 0.2, rock, rock - 0.05]
    best_epoch = curve.index(max(curve)) + 1
    metrics = [Metric("val/iou_rock", value, T0 + start + epoch, epoch) for epoch, value in enumerate(curve, 1)]
    metrics += [Metric(key, value, T0 + start + 10, 0) for key, value in {
        "best/iou_rock": rock, "best/iou_regolith": 0.9 + seed / 100, "best/iou_sky": 0.97,
        "best/miou": (rock + 0.9 + seed / 100 + 0.97) / 3, "best/epoch": best_epoch,
        "stopped_epoch": len(curve)}.items()]
    client.log_batch(run.info.run_id, metrics=metrics)
    if status != "RUNNING":
        client.set_terminated(run.info.run_id, status, end_time=T0 + start + 20)
    return run.info.run_id


@pytest.fixture(scope="module")
def ablation_template(tmp_path_factory):
    """A store with experiment 'ablation': two seeds per variant, plus runs that must not count.

    Built once and copied into each test's store (creating an MLflow database takes seconds).
    """
    folder = tmp_path_factory.mktemp("ablation-store")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{folder / 'mlflow.db'}")
        patch.chdir(folder)
        client = MlflowClient()
        experiment_id = client.create_experiment("ablation")
        counted = {
            ("nodr_80", 0): log_train_run(client, experiment_id, False, 80, 0, 0.50, start=10),
            ("nodr_80", 1): log_train_run(client, experiment_id, False, 80, 1, 0.54, start=11),
            ("dr_80", 0): log_train_run(client, experiment_id, True, 80, 0, 0.60, start=12),
            ("dr_80", 1): log_train_run(client, experiment_id, True, 80, 1, 0.61, start=13),
            ("dr_160", 0): log_train_run(client, experiment_id, True, 160, 0, 0.62, start=14),
            ("dr_160", 1): log_train_run(client, experiment_id, True, 160, 1, 0.66, start=15),
        }
        log_train_run(client, experiment_id, True, 80, 0, 0.10, start=1)  # superseded by the later seed-0 run
        log_train_run(client, experiment_id, True, 160, 0, 0.99, status="FAILED", start=30)
        log_train_run(client, experiment_id, False, 80, 2, 0.99, status="RUNNING", start=31)
        other = client.create_experiment("elsewhere")
        log_train_run(client, other, False, 80, 0, 0.01, start=40)
        log_train_run(client, other, True, 80, 3, 0.99, start=41)
    return folder / "mlflow.db", counted


@pytest.fixture
def ablation_store(store, tmp_path, ablation_template):
    """This test's store, a copy of the template; returns the ids of the runs that count."""
    template, counted = ablation_template
    shutil.copyfile(template, tmp_path / "mlflow.db")
    return counted


def results_in(folder: Path, stem: str = "ablation") -> dict:
    return json.loads((folder / f"{stem}-results.json").read_text())


def only_folder(root: Path) -> Path:
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    assert len(folders) == 1, folders
    return folders[0]


def test_compare_on_a_store_gives_exact_deltas_and_ignores_what_does_not_count(ablation_store, tmp_path, capsys):
    compare.main(["--experiment", "ablation"])
    results = results_in(only_folder(tmp_path / "experiments/results/ablation"))

    dr, size = results["dr_delta"], results["size_delta"]
    assert (dr["variant"], dr["baseline"], size["variant"], size["baseline"]) == ("dr_80", "nodr_80",
                                                                                  "dr_160", "dr_80")
    assert dr["absolute"] == pytest.approx(statistics.fmean([0.10, 0.07]), abs=1e-12)
    assert dr["absolute_std"] == pytest.approx(statistics.stdev([0.10, 0.07]), abs=1e-12)
    assert dr["relative"] == pytest.approx(statistics.fmean([0.10 / 0.50, 0.07 / 0.54]), abs=1e-12)
    assert dr["relative_std"] == pytest.approx(statistics.stdev([0.10 / 0.50, 0.07 / 0.54]), abs=1e-12)
    assert size["absolute"] == pytest.approx(statistics.fmean([0.02, 0.05]), abs=1e-12)
    assert size["relative"] == pytest.approx(statistics.fmean([0.02 / 0.60, 0.05 / 0.61]), abs=1e-12)
    assert dr["seeds"] == size["seeds"] == [0, 1]

    variants = results["variants"]
    assert list(variants) == ["nodr_80", "dr_80", "dr_160"]
    for (variant, seed), run_id in ablation_store.items():
        assert variants[variant]["run_ids"][variants[variant]["seeds"].index(seed)] == run_id
    nodr = variants["nodr_80"]
    assert (nodr["dr"], nodr["frames"], nodr["seeds"], nodr["best_epoch"]) == (False, 80, [0, 1], [2, 2])
    assert nodr["iou_rock"] == {"mean": pytest.approx(0.52), "std": pytest.approx(statistics.stdev([0.5, 0.54]))}
    assert nodr["iou_regolith"]["mean"] == pytest.approx(0.905)
    assert set(nodr) >= {"iou_sky", "miou", "run_ids"}
    assert results["ignored"] == {"failed": 1, "killed": 0, "running": 1, "stale": 0, "incomplete": 0, "superseded": 1}

    printed = capsys.readouterr().out
    assert "DR delta  : dr_80 - nodr_80 = +0.0850 ± 0.0212 rock-IoU" in printed
    assert "size delta: dr_160 - dr_80 = +0.0350 ± 0.0212 rock-IoU" in printed
    assert "nodr_80  no   80      0,1       0.5200 ± 0.0283" in printed


def test_the_figure_is_a_report_sized_png(ablation_store, tmp_path):
    compare.main(["--experiment", "ablation", "--out", str(tmp_path / "report")])
    figure = only_folder(tmp_path / "report") / "ablation.png"
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(figure) as image:
        image.verify()
    with Image.open(figure) as image:
        width, height = image.size
    assert width >= 2000 and 600 <= height <= width
    assert figure.stat().st_size > 50_000  # three panels of real content, not a blank canvas


def test_the_compare_run_is_logged_beside_the_runs_and_reruns_never_overwrite(ablation_store, tmp_path):
    compare.main(["--experiment", "ablation"])
    compare.main(["--experiment", "ablation"])  # its first compare run must not count as a training run

    client = MlflowClient()
    experiment_id = client.get_experiment_by_name("ablation").experiment_id
    runs = client.search_runs([experiment_id], "tags.`regolith.kind` = 'compare'",
                              order_by=["attributes.start_time ASC"])
    assert len(runs) == 2
    run = runs[-1]
    assert run.info.run_name == "ablation" and run.info.status == "FINISHED"
    assert set(run.data.tags["regolith.source_runs"].split(",")) == set(ablation_store.values())
    assert run.data.tags["regolith.source.dr_160"] == f"{ablation_store['dr_160', 0]},{ablation_store['dr_160', 1]}"
    assert run.data.metrics["dr_delta/absolute"] == pytest.approx(0.085)
    assert run.data.metrics["size_delta/absolute"] == pytest.approx(0.035)
    assert run.data.metrics["dr_80/iou_rock"] == pytest.approx(0.605)
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {
        "ablation-results.json", "ablation.png", "ablation.txt"}
    # The UI's view of the experiment: model training, the table grouped by kind with every training run
    # charted on its own (nested runs would hide under their parent), val/iou_rock first.
    tags = client.get_experiment(experiment_id).tags
    view = json.loads(tags["mlflow.sharedViewState.training"])
    assert view["groupBy"]["groupByKeys"] == [{"mode": "tag", "groupByData": "regolith.kind"}]
    assert view["useGroupedValuesInCharts"] is False and view["chartsSearchFilter"] == "val/iou_rock"
    assert view["orderByKey"] == "metrics.`val/iou_rock`" and view["orderByAsc"] is False
    assert tags["mlflow.experimentKind"] == "custom_model_development"

    folders = sorted((tmp_path / "experiments/results/ablation").iterdir())
    assert len(folders) == 2  # a second compare writes beside the first, never over it
    first, second = (results_in(folder) for folder in folders)
    assert first["compare_run_id"] == runs[0].info.run_id and second["compare_run_id"] == run.info.run_id
    logged = json.loads(Path(mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id, artifact_path="ablation-results.json", dst_path=str(tmp_path / "dl"))).read_text())
    assert logged == second
    assert {k: v for k, v in first.items() if k not in ("compare_run_id", "created")} == \
        {k: v for k, v in second.items() if k not in ("compare_run_id", "created")}


def test_a_missing_group_fails_without_a_compare_run(store, tmp_path, capsys):
    client = MlflowClient()
    experiment_id = client.create_experiment("half")
    log_train_run(client, experiment_id, False, 80, 0, 0.5)
    log_train_run(client, experiment_id, True, 80, 0, 0.6)
    log_train_run(client, experiment_id, True, 160, 0, 0.7, status="FAILED")
    with pytest.raises(SystemExit) as exit_:
        compare.main(["--experiment", "half"])
    error = capsys.readouterr().err
    assert exit_.value.code == 2
    assert "needs a dr variant with more than the matched 80 frames (e.g. dr_160)" in error
    assert "found FINISHED training runs of: nodr_80, dr_80" in error
    assert client.search_runs([experiment_id], "tags.`regolith.kind` = 'compare'") == []
    assert not (tmp_path / "experiments").exists()


def test_an_unknown_experiment_is_refused_listing_the_known_ones(ablation_store, capsys):
    with pytest.raises(SystemExit):
        compare.main(["--experiment", "ablaton"])
    assert re.search(r"experiment 'ablaton': no such experiment .* it has: .*'ablation'", capsys.readouterr().err)


def test_the_default_experiment_is_the_one_training_runs_go_to(ablation_store, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "ablation")
    compare.main([])
    assert results_in(only_folder(tmp_path / "experiments/results/ablation"))["experiment"] == "ablation"


# ---- a real tracking server ----------------------------------------------------------------------

@pytest.fixture
def tracking_server(store, tmp_path):
    """`mlflow server` on loopback over the test's SQLite store, serving artifacts from the temp dir."""
    port = free_port()
    server = start_server(store, tmp_path / "served", port, tmp_path / "server.log")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_server(server)


def test_compare_through_a_tracking_server_gives_the_same_json(ablation_store, tracking_server, tmp_path,
                                                               monkeypatch):
    compare.main(["--experiment", "ablation", "--out", str(tmp_path / "direct")])
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_server)
    compare.main(["--experiment", "ablation", "--out", str(tmp_path / "served")])
    direct, served = (results_in(only_folder(tmp_path / name)) for name in ("direct", "served"))
    volatile = ("compare_run_id", "created")
    assert {k: v for k, v in served.items() if k not in volatile} == \
        {k: v for k, v in direct.items() if k not in volatile}
    assert served["compare_run_id"] != direct["compare_run_id"]
    runs = MlflowClient().search_runs([MlflowClient().get_experiment_by_name("ablation").experiment_id],
                                      "tags.`regolith.kind` = 'compare'")
    assert len(runs) == 2  # both compare runs are in the one store, read back through the server


# ---- the ablation entry point end to end ---------------------------------------------------------

def test_ablation_entry_point_runs_the_demo_recipe_end_to_end(store, tmp_path):
    """`mlflow run -e ablation` on tiny splits with the demo's frame counts: three training runs, then
    compare recording into the ablation's own run, all in the one experiment."""
    data = make_demo_layout(tmp_path / "demo")
    encoder = tmp_path / "tiny-mit"
    save_legacy_encoder(encoder)
    project = copy_project(tmp_path / "project")
    # An experiment named in the environment as well: the recipe must not pass it twice to mlflow run.
    env = {**os.environ, "MLFLOW_EXPERIMENT_NAME": "e2e", "HF_HUB_OFFLINE": "1"}
    cmd = ["mlflow", "run", str(project), "--env-manager", "local", "-e", "ablation", "--experiment-name", "e2e",
           "-P", f"data={data}", "-P", "recipe=demo", "-P", "epochs=1", "-P", f"pretrained={encoder}"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert "DR delta  : dr_80 - nodr_80" in done.stdout

    client = MlflowClient()
    experiment = client.get_experiment_by_name("e2e")
    runs = {run.info.run_name: run for run in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {"nodr_80", "dr_80", "dr_160", "ablation"}
    assert all(run.info.status == "FINISHED" for run in runs.values())
    ablation = runs["ablation"]
    assert ablation.data.tags["regolith.kind"] == "compare"
    assert ablation.data.tags["mlflow.project.entryPoint"] == "ablation"  # compare recorded into the ablation run
    assert ablation.data.params["recipe"] == "demo"
    assert set(ablation.data.tags["regolith.source_runs"].split(",")) == {
        runs[name].info.run_id for name in ("nodr_80", "dr_80", "dr_160")}
    assert runs["dr_80"].data.tags["regolith.frames"] == "80" and runs["dr_80"].data.tags["regolith.dr"] == "true"
    assert {runs[name].data.tags.get("mlflow.parentRunId") for name in ("nodr_80", "dr_80", "dr_160")} == {
        ablation.info.run_id}  # nested under the ablation in the UI
    results = results_in(only_folder(project / "experiments/results/e2e"))
    assert results["compare_run_id"] == ablation.info.run_id


# ---- confidence intervals (issue 7) ----------------------------------------------------------------

def _frames(rock_tp, rock_fn, rock_fp, other=50):
    """Frames x 3 x 3 confusion counts with the given rock counts per frame."""
    confusion = np.zeros((len(rock_tp), 3, 3))
    confusion[:, 0, 0] = other
    confusion[:, 1, 1], confusion[:, 1, 0], confusion[:, 0, 1] = rock_tp, rock_fn, rock_fp
    return confusion


def test_bootstrap_of_a_model_against_itself_is_zero_and_includes_zero():
    frames = _frames(np.arange(1, 21), np.full(20, 3), np.arange(20) % 4)
    interval = ablation.paired_bootstrap(frames, frames.copy())
    assert interval["low"] == interval["high"] == interval["point"] == 0 and interval["includes_zero"]


def test_bootstrap_over_identical_frames_has_no_spread():
    # Every frame alike: any resample has the same global IoU, so the interval is the point itself.
    better, worse = _frames([8] * 30, [2] * 30, [0] * 30), _frames([5] * 30, [5] * 30, [0] * 30)
    interval = ablation.paired_bootstrap(better, worse)
    assert interval["point"] == pytest.approx(0.8 - 0.5)
    assert interval["low"] == pytest.approx(0.3) and interval["high"] == pytest.approx(0.3)
    assert not interval["includes_zero"]


def test_bootstrap_interval_narrows_with_more_frames_and_pairs_the_resample():
    rng = np.random.default_rng(1)

    def pair(n):
        tp = rng.integers(5, 40, n)
        return _frames(tp, rng.integers(0, 10, n), rng.integers(0, 10, n)), _frames(tp, rng.integers(0, 12, n),
                                                                                      rng.integers(0, 12, n))
    small, large = ablation.paired_bootstrap(*pair(25)), ablation.paired_bootstrap(*pair(400))
    ratio = (small["high"] - small["low"]) / (large["high"] - large["low"])
    assert 2.5 < ratio < 6.5  # about sqrt(400 / 25) = 4
    # Pairing matters: a shared hard frame moves both sides together and cancels in the delta.
    hard = _frames([1, 30, 30, 30], [20, 2, 2, 2], [0, 1, 1, 1])
    assert ablation.paired_bootstrap(hard, hard)["high"] == 0


def test_intervals_appear_in_results_and_table():
    def run(dr, frames, seed, rock, run_id):
        return {"run_id": run_id, "run_name": run_id, "start_time": 0, "dr": dr, "frames": frames, "seed": seed,
                "variant": names.variant(dr, frames), "best_epoch": 1, "iou_rock": rock,
                "iou_regolith": 0.9, "iou_sky": 0.9, "miou": 0.8, "settings": {}}
    runs = [run(False, 8, s, 0.5 + s / 100, f"n{s}") for s in (0, 1)] + \
           [run(True, 8, s, 0.6 + s / 50, f"d{s}") for s in (0, 1)] + [run(True, 16, s, 0.62, f"D{s}") for s in (0, 1)]
    frame_names = [f"{i:05d}" for i in range(10)]
    confusions = {r["run_id"]: {"frames": frame_names, "confusion": _frames(
        np.full(10, int(100 * r["iou_rock"])), np.full(10, 100 - int(100 * r["iou_rock"])), np.zeros(10)).tolist()}
        for r in runs}
    confusions["D1"] = None  # one run without a fresh inference pass: no frame interval for its delta
    results = ablation.ablation_results(runs, "x", confusions)
    frame = results["dr_delta"]["frame_interval"]
    assert frame["frames"] == 10 and frame["point"] == pytest.approx(results["dr_delta"]["absolute"], abs=0.02)
    assert results["dr_delta"]["seed_interval"]["seeds"] == 2
    assert results["size_delta"]["frame_interval"] is None
    table = compare.format_table(results)
    assert "95% CI over 10 validation frames" in table and "95% CI over 2 seeds" in table
    assert "includes zero" in table and "no frame interval" in table


# ---- the study's tables side by side (issue 12) ------------------------------------------------------

STUDY = {"v1": {"nodr_750": 0.689, "dr_750": 0.788, "dr_1500": 0.815},  # shared/reference/original-system.md
         "v2": {"nodr_750": 0.8025, "dr_750": 0.8486, "dr_1500": 0.8521}}


@pytest.fixture
def generations_store(store):
    client = MlflowClient()
    for generation, numbers in STUDY.items():
        experiment_id = client.create_experiment(generation)
        for start, (variant, rock) in enumerate(numbers.items()):
            log_train_run(client, experiment_id, variant.startswith("dr"), int(variant.split("_")[1]), 0, rock,
                          start=start)
    return client


def test_generations_side_by_side_reproduce_the_studys_gains_and_the_baselines_rise(generations_store, tmp_path,
                                                                                      capsys):
    compare.main(["--experiment", "v1", "--experiment", "v2"])
    printed = capsys.readouterr().out
    rows = {line.split()[0]: line for line in printed.splitlines() if line.startswith(("v1 ", "v2 "))}
    # The gains to the digits the study reports: v1 +0.099 / +0.027, v2 +0.046 / +0.004.
    for generation, (dr_gain, size_gain) in {"v1": ("+0.099", "+0.027"), "v2": ("+0.046", "+0.004")}.items():
        cells = rows[generation].split()
        assert cells[7] == dr_gain and cells[8] == size_gain  # measured
        assert cells[-3:] == [dr_gain, "/", size_gain]  # and the study's own column agrees
    assert "no-DR baseline v1 -> v2: 0.6890 -> 0.8025 (+0.1135); DR gain +0.099 -> +0.046" in printed
    results = results_in(only_folder(tmp_path / "experiments/results/v1+v2"), "generations")
    assert [row["experiment"] for row in results["generations"]] == ["v1", "v2"]
    assert results["generations"][0]["dr_delta"]["absolute"] == pytest.approx(0.099)
    assert results["baseline_change"] == pytest.approx(0.8025 - 0.689)
    assert results["dr_gain_change"] == pytest.approx(0.0461 - 0.099)
    figure = only_folder(tmp_path / "experiments/results/v1+v2") / "generations.png"
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and figure.stat().st_size > 30_000
    runs = generations_store.search_runs([generations_store.get_experiment_by_name("v2").experiment_id],
                                         "tags.`regolith.kind` = 'compare'")
    assert [run.info.run_name for run in runs] == ["generations"]  # recorded beside the newest generation
    assert runs[0].data.metrics["v1/dr_delta/absolute"] == pytest.approx(0.099)


def test_an_experiment_name_with_an_unbalanced_quote_is_one_name(store, capsys):
    assert compare.experiment_names(["bob's", "v1 'v 2'"]) == ["bob's", "v1", "v 2"]
    with pytest.raises(SystemExit) as exit_status:
        compare.main(["--experiment", "bob's"])
    assert exit_status.value.code == 2
    assert "experiment \"bob's\": no such experiment" in capsys.readouterr().err


def test_the_mlproject_list_names_each_experiment():
    assert compare.experiment_names(["v1 v2"]) == ["v1", "v2"]
    assert compare.experiment_names(["v1", "'v 2'"]) == ["v1", "v 2"] and compare.experiment_names([]) == []


def test_the_studys_variants_get_its_numbers_beside_them(generations_store, tmp_path, capsys):
    compare.main(["--experiment", "v2"])
    printed = capsys.readouterr().out
    assert "Beside the study (v2," in printed
    assert re.search(r"dr_1500\s+0\.8521\s+0\.8521\s+\+0\.0000", printed)
    assert re.search(r"DR gain\s+\+0\.046\s+\+0\.046\s+\+0\.0000", printed)
    results = results_in(only_folder(tmp_path / "experiments/results/v2"))
    assert results["reference"]["generation"] == "v2"
    assert results["reference"]["variants"]["nodr_750"] == {"study": 0.8025, "measured": 0.8025, "difference": 0.0}


def test_per_frame_wins_and_mean_gain_from_the_fresh_passes():
    def run(dr, frames, run_id, rock):
        return {"run_id": run_id, "run_name": run_id, "start_time": 0, "dr": dr, "frames": frames, "seed": 0,
                "variant": names.variant(dr, frames), "best_epoch": 1, "iou_rock": rock, "iou_regolith": 0.9,
                "iou_sky": 0.9, "miou": 0.8, "settings": {}}
    runs = [run(False, 8, "n", 0.5), run(True, 8, "d", 0.6), run(True, 16, "D", 0.7)]
    frame_names = [f"{i:05d}" for i in range(10)]
    # Rock-IoU per frame tp / (tp + fn): dr_8 is 0.8 on frames 0-6 and 0.2 on 7-9; nodr_8 0.5 everywhere;
    # frame 9 has no rock on either side for dr_16 and nodr_8 (left out of that count).
    tp_d = np.array([8] * 7 + [2] * 3)
    confusions = {"n": _frames(np.full(10, 5), np.full(10, 5), np.zeros(10)),
                  "d": _frames(tp_d, 10 - tp_d, np.zeros(10)),
                  "D": _frames(np.full(10, 9), np.full(10, 1), np.zeros(10))}
    confusions["n"][9, 1] = confusions["D"][9, 1] = 0
    confusions = {run_id: {"frames": frame_names, "confusion": c.tolist()} for run_id, c in confusions.items()}
    results = ablation.ablation_results(runs, "x", confusions)
    dr = results["dr_delta"]["per_frame"]
    assert (dr["wins"], dr["losses"], dr["frames"], dr["of_frames"]) == (7, 2, 9, 10)
    assert dr["mean_gain"] == pytest.approx((7 * 0.3 + 2 * -0.3) / 9)
    overall = results["per_frame_overall"]
    assert (overall["variant"], overall["baseline"], overall["wins"], overall["frames"]) == ("dr_16", "nodr_8", 9, 9)
    table = compare.format_table(results)
    assert "per frame: dr_8 beats nodr_8 on 7 of 9 frames (mean per-frame rock-IoU gain +0.1667" in table
    assert "per frame: dr_16 beats nodr_8 on 9 of 9 frames" in table


def test_the_strict_rule_shows_where_it_differs():
    rows = [row(False, 8, 0, 0.5), row(True, 8, 0, 0.6), row(True, 16, 0, 0.7)]
    runs, _ = ablation.select_runs(rows)
    assert "rock (strict)" not in compare.format_table(ablation.ablation_results(runs, "x"))  # not recorded: no column
    for r, strict in zip(rows, (0.45, 0.58, 0.7)):
        r["metrics"]["best/iou_rock_strict"] = strict
    runs, _ = ablation.select_runs(rows)
    table = compare.format_table(ablation.ablation_results(runs, "x"))
    assert "rock (strict)" in table and re.search(r"nodr_8 .* 0\.5000\s+0\.4500", table)


def test_real_rock_share_per_variant_and_both_deltas_with_an_interval_over_photos():
    def run(dr, frames, run_id, rock, real=None):
        return {"run_id": run_id, "run_name": run_id, "start_time": 0, "dr": dr, "frames": frames, "seed": 0,
                "variant": names.variant(dr, frames), "best_epoch": 1, "iou_rock": rock, "iou_regolith": 0.9,
                "iou_sky": 0.9, "miou": 0.8, "real_rock_share": real, "settings": {}}
    # nodr_8 was measured by regolith.photos on five photos; dr_8 and dr_16 too, on the same set.
    real = {"n": [0.10, 0.20, 0.00, 0.30, 0.10], "d": [0.40, 0.30, 0.50, 0.60, 0.20], "D": [0.50, 0.60, 0.40, 0.70, 0.30]}
    measured = {run_id: {"digest": "abc", "photos": [f"p{i}.jpg" for i in range(5)], "rock": shares}
                for run_id, shares in real.items()}
    runs = [run(False, 8, "n", 0.5), run(True, 8, "d", 0.6, real=0.99), run(True, 16, "D", 0.7)]
    results = ablation.ablation_results(runs, "x", real=measured)
    assert results["variants"]["dr_8"]["real_rock_share"]["mean"] == pytest.approx(0.4)  # the photos' measurement wins
    dr = results["real"]["dr_delta"]
    assert dr["absolute"] == pytest.approx(0.4 - 0.14)
    assert dr["photo_interval"]["photos"] == 5 and dr["photo_interval"]["variant_more"] == 5
    assert not dr["photo_interval"]["includes_zero"]
    assert results["real"]["size_delta"]["absolute"] == pytest.approx(0.1)
    table = compare.format_table(results)
    assert "real rock share" in table and "DR delta  : dr_8 - nodr_8 = +26.0 points real rock share" in table
    # Another photo set on one side (issue 23 1.2): no real delta at all, and the table, JSON and figure say why.
    for changed in ({"digest": "other"}, {"fit": "cover"}, {"tta": "hflip"}):
        mixed = {**measured, "n": {**measured["n"], **changed}}
        refused = ablation.ablation_results(runs, "x", real=mixed)
        assert refused["real"] is None and "different photo sets" in refused["real_refused"]
        assert any(w.startswith("real rock shares not compared") for w in refused["warnings"])
        assert refused["variants"]["nodr_8"]["real_sets"] == [{"digest": "abc", "fit": "letterbox", "tta": "none",
                                                               **changed}]
        json.dumps(refused)  # the JSON carries it
        table = compare.format_table(refused)
        assert "NOT comparable" in table and "points real rock share" not in table
        ax = Figure().add_subplot()
        figures.plot_real(ax, refused, {name: "C0" for name in refused["variants"]})
        assert ax.get_title().startswith("NOT COMPARABLE")
    # A share training saw, on a set it never recorded, is not put beside a measured one.
    unknown = ablation.ablation_results([run(False, 8, "n", 0.5, real=0.1), *runs[1:]], "x",
                                        real={k: v for k, v in measured.items() if k != "n"})
    assert unknown["real"] is None and "was not recorded" in unknown["real_refused"]
    # A variant that was never pointed at real photos: no real deltas at all.
    assert ablation.ablation_results(runs[:1] + [run(True, 8, "d", 0.6)] + runs[2:], "x")["real"] is None


# ---- compare --delta A:B: any two sides (issue 20) -------------------------------------------------

def lever_row(dr, frames, seed, rock, augment="hflip", **kwargs):
    """A store row of a run trained with ``augment``, named as regolith.train names it."""
    base = row(dr, frames, seed, rock, run_id=f"{names.variant(dr, frames, augment)}-s{seed}", **kwargs)
    base["tags"].update({"regolith.variant": names.variant(dr, frames, augment), "regolith.augment": augment})
    base["params"] = {"augment": augment, "epochs": "20"}
    return base


def lever_confusions(runs: list, frames: int = 12) -> dict:
    """Per-frame confusions whose rock-IoU is the run's best rock-IoU on every frame, but for frame 0 of +gray."""
    confusions = {}
    for run in runs:
        tp = np.full(frames, int(100 * run["iou_rock"]))
        if "+gray" in run["variant"]:
            tp[0] = 10  # one frame where gray did badly
        confusions[run["run_id"]] = {"frames": [f"{i:05d}" for i in range(frames)],
                                     "confusion": _frames(tp, 100 - tp, np.zeros(frames)).tolist()}
    return confusions


def test_a_lever_delta_pairs_by_seed_with_intervals_wins_and_the_real_share():
    rows = [lever_row(False, 80, s, 0.50) for s in (0, 1)] + [lever_row(True, 160, s, 0.70) for s in (0, 1)]
    rows += [lever_row(True, 80, 0, 0.60), lever_row(True, 80, 1, 0.62),
             lever_row(True, 80, 0, 0.65, "hflip,gray"), lever_row(True, 80, 1, 0.70, "hflip,gray")]
    runs, ignored = ablation.select_runs(rows)
    assert ignored["superseded"] == 0  # dr_80 and dr_80+gray are two variants, not one run superseding another
    real = {run["run_id"]: {"digest": "abc", "photos": ["a", "b", "c"],
                            "rock": [0.1, 0.2, 0.3] if "+gray" not in run["variant"] else [0.05, 0.1, 0.1]}
            for run in runs}
    asked = ("dr_80:dr_80+gray", "regolith.augment=hflip&regolith.frames=80&regolith.dr=true:augment=gray,hflip")
    results = ablation.ablation_results(runs, "x", lever_confusions(runs), real, asked=asked)
    assert list(results["variants"]) == ["nodr_80", "dr_80", "dr_80+gray", "dr_160"]
    assert results["dr_delta"]["variant"] == "dr_80" and results["warnings"] == []  # built-ins over the plain ones
    by_name, by_filter = results["deltas"]
    assert (by_name["variant"], by_name["baseline"], by_name["seeds"]) == ("dr_80+gray", "dr_80", [0, 1])
    assert by_name["absolute"] == pytest.approx(statistics.fmean([0.05, 0.08]))
    assert by_name["seed_interval"]["seeds"] == 2 and by_name["frame_interval"]["frames"] == 12
    assert (by_name["per_frame"]["wins"], by_name["per_frame"]["losses"]) == (11, 1)
    assert by_name["real"]["absolute"] == pytest.approx(statistics.fmean([0.05, 0.1, 0.1]) - 0.2)
    assert by_name["real"]["photo_interval"]["photos"] == 3
    assert by_name["differences"] == ["the runs compared differ in augment: hflip (dr_80 seed 0, dr_80 seed 1); "
                                      "hflip,gray (dr_80+gray seed 0, dr_80+gray seed 1)"]
    assert by_filter["absolute"] == pytest.approx(by_name["absolute"])  # the same runs, found by their tags
    table = compare.format_table(results)
    assert "delta 1: dr_80+gray - dr_80 = +0.0650 ± 0.0212 rock-IoU" in table
    assert "per frame: dr_80+gray beats dr_80 on 11 of 12 frames" in table
    assert "real: dr_80+gray - dr_80 = -11.7 points real rock share" in table
    assert "note: the runs compared differ in augment" in table


def test_a_lever_delta_is_refused_where_a_side_is_empty_ambiguous_or_malformed():
    runs, _ = ablation.select_runs([lever_row(False, 80, 0, 0.5), lever_row(True, 80, 0, 0.6),
                                    lever_row(True, 80, 0, 0.7, "hflip,gray")])
    for spec, message in (("dr_80:dr_80+noise", "no FINISHED training run matches 'dr_80\\+noise'; variants found"),
                          ("regolith.augment=hflip:dr_80+gray", "matches runs of several variants with the same seed"),
                          ("dr_80", "expected A:B"), ("dr_80:dr_80", "expected A:B")):
        with pytest.raises(Refused, match=message):
            ablation.ablation_results(runs, "x", asked=(spec,))


def test_compare_delta_on_a_store_without_the_studys_pairs(store, tmp_path, capsys):
    client = MlflowClient()
    experiment_id = client.create_experiment("levers")
    ids = {}
    for start, (augment, rock) in enumerate((("hflip", 0.6), ("hflip,gray", 0.66))):
        run_id = log_train_run(client, experiment_id, True, 80, 0, rock, start=start)
        client.set_tag(run_id, "regolith.variant", names.variant(True, 80, augment))
        client.set_tag(run_id, "regolith.augment", augment)
        ids[augment] = run_id
    compare.main(["--experiment", "levers", "--delta", "dr_80:regolith.augment=gray,hflip"])
    printed = capsys.readouterr().out
    assert "no DR or size delta here: experiment 'levers': the DR delta needs a nodr" in printed
    assert "delta 1: regolith.augment=gray,hflip - dr_80 = +0.0600 rock-IoU" in printed
    results = results_in(only_folder(tmp_path / "experiments/results/levers"))
    assert results["dr_delta"] is None and results["deltas"][0]["sides"]["dr_80"]["run_ids"] == [ids["hflip"]]
    compare_run = [r for r in client.search_runs([experiment_id]) if r.data.tags.get("regolith.kind") == "compare"][0]
    assert compare_run.data.metrics["delta_1/absolute"] == pytest.approx(0.06)
    assert compare_run.data.tags["regolith.delta_1"] == "regolith.augment=gray,hflip vs dr_80"
    assert compare_run.data.metrics["dr_80_gray/iou_rock"] == pytest.approx(0.66)  # the variant's name, metric-safe
    assert compare_run.data.tags["regolith.source.dr_80_gray"] == ids["hflip,gray"]
    with pytest.raises(SystemExit):  # a malformed spec: refused before anything is read
        compare.main(["--experiment", "levers", "--delta", "dr_80"])


def test_the_compare_entry_point_takes_delta_as_its_flag():
    import yaml
    entry = yaml.safe_load((Path(__file__).resolve().parents[1] / "MLproject").read_text())["entry_points"]["compare"]
    flags = {action.dest for action in compare.build_parser()._actions} - {"help"}
    assert set(entry["parameters"]) == flags == {"experiment", "delta", "out"}
    assert "--delta {delta}" in entry["command"]
    assert compare.experiment_names(["dr_750:dr_750+gray regolith.augment=hflip:regolith.augment=hflip,blur"]) == [
        "dr_750:dr_750+gray", "regolith.augment=hflip:regolith.augment=hflip,blur"]
