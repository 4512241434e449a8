"""The benchmark (benchmarks/bench.py) at tiny settings: every field of bench.json, and the same answers from both
paths on the CPU."""

import json

import numpy as np
import pytest
import torch

from conftest import make_split
from benchmarks import bench
from regolith import data, engine, metrics, model as segformer

TINY = ["--size", "32", "--batch", "2", "--frames", "4", "--val-frames", "3", "--steps", "3", "--warmup", "1",
        "--repeats", "2", "--workers", "0", "--iou-frames", "4", "--iou-size", "32"]


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    """Two tiny repeats on the CPU: 3 steps of 2 frames cross an epoch boundary, so the reseeded order is tested too.

    Worker processes are left out to keep the test short; the sampler draws the order in the main
    process whatever the worker count, so they do not change what is compared.
    """
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    threads = torch.get_num_threads()
    # One thread: both paths still run the same kernels in the same process, and on a 2-core box shared
    # with other jobs a descheduled second OpenMP thread stalls every op (once 120 s here, 5-8 s with one).
    torch.set_num_threads(1)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(engine, "pick_device", lambda: torch.device("cpu"))
            bench.main([*TINY, "--out", str(out)])
    finally:
        torch.set_num_threads(threads)
    return json.loads(out.read_text())


def test_bench_json_has_every_field(result):
    assert {"config", "machine", "versions", "peak_memory_kind", "project", "baseline", "ratio", "agreement",
            "iou_timing", "mlflow"} <= set(result)
    for path in ("project", "baseline"):
        assert set(bench.PATH_FIELDS) <= set(result[path]), path
        assert set(result[path]["metrics"]) == {"train_loss", "val_loss", "iou_regolith", "iou_rock", "iou_sky", "miou"}
        assert result[path]["trained_images"] == 6  # 3 steps of 2
        assert result[path]["train_images_per_s"] > 0 and result[path]["inference_images_per_s"] > 0
        assert result[path]["peak_memory_mb"] > 0 and 0 <= result[path]["data_share"] <= 1
    assert result["project"]["load_s"] > 0 and result["project"]["precision"] == "fp32"
    assert {"train_wait_s", "eval_wait_s"} <= set(result["baseline"]["data_detail"])
    assert result["project"]["compile_s"] is None
    # The study's epoch, scaled from the per-image times: 1,500 training and 300 validation images.
    repeats = result["project"]["per_repeat"]
    for train_rate, inference_rate, study_s in zip(repeats["train_images_per_s"], repeats["inference_images_per_s"],
                                                   repeats["study_epoch_s"]):
        assert study_s == pytest.approx(1500 / train_rate + 300 / inference_rate)
    assert set(result["ratio"]) == {"train", "inference", "epoch"} and all(v > 0 for v in result["ratio"].values())
    assert all(len(values) == 2 for values in result["ratio_per_repeat"].values())
    assert set(result["ratio_best"]) == {"train", "inference", "epoch"}
    assert result["mlflow"]["send_epochs_s"] > 0 and result["mlflow"]["share_of_epoch"] > 0
    assert result["config"]["device"] == "cpu" and result["versions"]["torch"] == torch.__version__


def test_optimized_path_gives_the_baseline_metrics_on_cpu(result):
    """Issue 6: on the CPU the optimized path gives the same metrics as before, within the stated tolerance."""
    a, b = result["project"]["metrics"], result["baseline"]["metrics"]
    tolerance = bench.AGREEMENT
    for key in ("train_loss", "val_loss"):
        assert a[key] == pytest.approx(b[key], rel=tolerance["loss_rel"], abs=0), key
    for key in ("iou_regolith", "iou_rock", "iou_sky", "miou"):
        assert a[key] == pytest.approx(b[key], rel=0, abs=tolerance["iou_abs"]), key
    assert result["agreement"]["checked"] and result["agreement"]["within"]


def test_timed_iou_paths_give_equal_answers(result):
    """The speed comparison compares equal answers: the same counts, so float64 IoU is identical."""
    iou = result["iou_timing"]
    assert iou["iou"]["ours"] == iou["iou"]["numpy"]
    assert set(iou["seconds"]) == {"ours", "numpy"} and iou["speedup_vs_numpy"] > 0
    assert all(len(times) == 2 for times in iou["seconds_per_repeat"].values())


def test_histogram_iou_counts_as_the_confusion_matrix_with_ignored_pixels():
    target = np.array([[[0, 0, 1, 255], [2, 2, 1, 1]], [[255, 255, 0, 1], [2, 0, 0, 2]]], dtype=np.uint8)
    pred = np.array([[[0, 1, 1, 2], [2, 0, 1, 0]], [[1, 2, 0, 1], [2, 2, 0, 2]]], dtype=np.uint8)
    histogram = bench.HistogramIoU()
    histogram.add_batch(pred, target)
    # By hand, over the 13 labelled pixels: regolith 3 right of 5 true and 5 predicted (union 7),
    # rock 3 of 4 and 4 (union 5), sky 3 of 4 and 4 (union 5).
    assert histogram.iou().tolist() == pytest.approx([3 / 7, 3 / 5, 3 / 5])
    ours = metrics.iou_per_class(metrics.confusion_matrix(torch.from_numpy(pred), torch.from_numpy(target)))
    assert ours.tolist() == histogram.iou().tolist()


def test_baseline_pixels_are_bit_identical_to_device_normalization(tmp_path):
    split_dir = make_split(tmp_path / "split", frames=3)
    decoded = segformer.normalize(data.load_split(split_dir).images)
    frames = bench.PngFrames(split_dir, 0)
    for index in range(len(frames)):
        pixels, labels = frames[index]
        assert torch.equal(pixels, decoded[index])
        assert labels.dtype == torch.int64


def test_frame_order_is_the_same_for_both_paths():
    dataset = list(range(5))
    args = bench.build_parser().parse_args(["--batch", "2", "--workers", "0", "--seed", "3"])
    loader = bench.baseline_loader(dataset, args, shuffle=True, drop_last=False)
    seen = []
    for epoch in range(2):
        loader.sampler.generator.manual_seed(bench.order_seed(args.seed, epoch))
        seen.append(torch.cat(list(loader)).tolist())
    expected = [order.tolist() for _, order in bench.epoch_orders(5, 2, 6, args.seed, drop_last=False)]
    assert seen == expected


def test_under_mlflow_run_the_bench_run_holds_its_figures_and_bench_json(result, store, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient
    client = MlflowClient()
    launcher = client.create_run("0")  # what `mlflow run -e bench` opens
    monkeypatch.setenv("MLFLOW_RUN_ID", launcher.info.run_id)
    out = tmp_path / "bench.json"
    out.write_text(json.dumps(result))
    bench.record(result, out)
    run = client.get_run(launcher.info.run_id)
    assert run.data.metrics["bench/ratio/train"] == pytest.approx(result["ratio"]["train"])
    assert run.data.metrics["bench/project/epoch_s"] == pytest.approx(result["project"]["epoch_s"])
    assert run.data.tags["regolith.kind"] == "bench" and run.info.run_name == "bench"
    assert run.data.tags["regolith.cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert [f.path for f in client.list_artifacts(launcher.info.run_id, "bench")] == ["bench/bench.json"]
