"""The seed sweep end to end through `mlflow run -e sweep`: one parent, every (variant, seed), resumable."""

import os
import subprocess

import pytest
from mlflow.tracking import MlflowClient

from conftest import REPO, copy_project, make_datasets, make_demo_layout, save_legacy_encoder
from regolith import sweep


def test_a_pair_is_done_only_when_its_latest_finished_run_recorded_what_the_sweep_would_run():
    expected = {"frames": "80", "epochs": "20", "lr": "6e-4", "seed": "0", "regolith.dataset_digest": "aa",
                "regolith.val_digest": "bb", "mlflow.source.git.commit": "c1"}

    def row(run_id, status="FINISHED", start=1, **changed):
        recorded = {**expected, **changed}
        return {"run_id": run_id, "status": status, "start_time": start,
                "params": {k: v for k, v in recorded.items() if "." not in k},
                "tags": {"regolith.kind": "train", "regolith.variant": "dr_80", "regolith.seed": "0",
                         **{k: v for k, v in recorded.items() if "." in k}}}
    run = {"variant": "dr_80", "seed": 0}
    assert sweep.why_train(run, None, expected) == "no FINISHED run of it in the store"
    assert sweep.why_train(run, row("r1", lr="0.0006"), expected) is None  # the same number, logged otherwise
    # mlflow run logs a string parameter shell-quoted: '' for an empty one
    assert sweep.why_train(run, row("r1", real_images="''"), {**expected, "real_images": ""}) is None
    for changed, says in [({"epochs": "1"}, "epochs ('1' there, '20' here)"),
                          ({"regolith.dataset_digest": "zz"}, "regolith.dataset_digest"),
                          ({"mlflow.source.git.commit": "c0"}, "mlflow.source.git.commit")]:
        assert says in sweep.why_train(run, row("r2", **changed), expected)
    # The latest FINISHED run is the one compare counts, so it is the one checked.
    latest = sweep.latest_finished([row("old", start=1), row("new", start=2, epochs="1"),
                                    row("failed", status="FAILED", start=3)])
    assert latest["dr_80:0"]["run_id"] == "new"


def test_sweep_nests_every_variant_and_seed_and_a_rerun_finishes_only_what_is_missing(store, tmp_path):
    data = make_demo_layout(tmp_path / "demo")
    encoder = tmp_path / "tiny-mit"
    save_legacy_encoder(encoder)
    project = copy_project(tmp_path / "project")
    cmd = ["mlflow", "run", str(project), "--env-manager", "local", "-e", "sweep", "--experiment-name", "sweep",
           "-P", f"data={data}", "-P", "seeds=2", "-P", "recipe=demo", "-P", "epochs=1",
           "-P", f"pretrained={encoder}"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]

    client = MlflowClient()
    experiment = client.get_experiment_by_name("sweep").experiment_id
    (parent,) = client.search_runs([experiment], "attributes.run_name = 'ablation'")
    training = client.search_runs([experiment], "tags.`regolith.kind` = 'train'")
    pairs = sorted((r.info.run_name, r.data.tags["regolith.seed"]) for r in training)
    assert pairs == [(v, s) for v in ("dr_160", "dr_80", "nodr_80") for s in ("0", "1")]
    assert {r.data.tags["mlflow.parentRunId"] for r in training} == {parent.info.run_id}
    assert parent.data.metrics["dr_delta/seed_interval_low"] <= parent.data.metrics["dr_delta/seed_interval_high"]
    # Each run was verified by a fresh inference pass, whose per-frame confusions give the frame interval.
    assert all(r.data.tags.get("verify/check", "").startswith("pass") for r in training)
    assert parent.data.metrics["size_delta/frame_interval_low"] <= parent.data.metrics["size_delta/frame_interval_high"]

    # An interrupted sweep: one pair lost. Resuming into the same parent trains only that pair.
    lost = next(r for r in training if (r.info.run_name, r.data.tags["regolith.seed"]) == ("dr_80", "1"))
    client.delete_run(lost.info.run_id)
    again = subprocess.run(cmd[:3] + ["--run-id", parent.info.run_id] + cmd[3:], env=env, capture_output=True,
                           text=True, timeout=600)
    assert again.returncode == 0, again.stdout[-4000:] + again.stderr[-4000:]
    assert again.stdout.count("already FINISHED in the store with the same settings") == 5, again.stdout[-4000:]
    assert "train dr_80 seed 1: no FINISHED run of it in the store" in again.stdout
    rerun = [r for r in client.search_runs([experiment], "tags.`regolith.kind` = 'train'")
             if r.info.run_id not in {t.info.run_id for t in training}]
    assert [(r.info.run_name, r.data.tags["regolith.seed"]) for r in rerun] == [("dr_80", "1")]
    assert rerun[0].data.tags["mlflow.parentRunId"] == parent.info.run_id


def _folders(root):
    """The recipe's folders, empty: enough for what is refused before anything runs."""
    for split in ("train_nodr", "train_dr", "test_photoreal"):
        (root / split).mkdir(parents=True)
    return root


def _refusal(capsys, argv):
    with pytest.raises(SystemExit) as stopped:
        sweep.main(argv)
    return stopped.value.code, capsys.readouterr().err


def test_every_recipe_argument_is_checked_as_its_type(tmp_path, capsys):
    data = _folders(tmp_path / "demo")
    for argv, says in [([str(data), "--recipe", "demo", "--seeds", "abc"], "seed='abc'"),
                       ([str(data), "--recipe", "demo", "--count", "abc"], "seeds (a count)='abc'"),
                       ([str(data), "--recipe", "demo", "--count", "SECONDS[$(id)]"], "a whole number"),
                       ([str(data), "--recipe", "demo", "--count", "0"], "at least 1"),
                       ([str(data), "--recipe", "demo", "--epochs", "1e9x"], "epochs="),
                       ([str(data), "--recipe", "../../tmp/x"], "recipe="),
                       ([str(tmp_path / "nowhere"), "--recipe", "demo"], "is not a folder"),
                       ([str(data), "--recipe", "demo", "--real-images", str(tmp_path / "none")], "real_images=")]:
        code, err = _refusal(capsys, argv)
        assert code == 2 and says in err, (argv, err)
    plan = sweep.check_args(sweep.build_parser().parse_args([str(data), "--recipe", "demo", "--count", "2.0",
                                                             "--epochs", "3"]))
    assert [(r["variant"], r["seed"], r["params"]["epochs"]) for r in plan["runs"][:4]] == [
        ("nodr_80", 0, "3"), ("dr_80", 0, "3"), ("dr_160", 0, "3"), ("nodr_80", 1, "3")]


def test_the_augment_recipe_trains_dr_750_with_each_augmentation_and_compares_each_with_hflip(tmp_path):
    data = _folders(tmp_path / "rendered")
    plan = sweep.check_args(sweep.build_parser().parse_args([str(data), "--recipe", "augment", "--seeds", "0 1"]))
    assert [(r["variant"], r["params"]["augment"], r["params"]["frames"]) for r in plan["runs"][:5]] == [
        ("dr_750", "hflip", "750"), ("dr_750+gray", "hflip,gray", "750"),
        ("dr_750+photometric", "hflip,photometric", "750"), ("dr_750+noise", "hflip,noise", "750"),
        ("dr_750+blur", "hflip,blur", "750")]
    assert len(plan["runs"]) == 10 and {r["params"]["pretrained"] for r in plan["runs"]} == {"nvidia/mit-b0"}
    assert plan["deltas"][0] == "regolith.augment=hflip:regolith.augment=hflip,gray" and len(plan["deltas"]) == 4
    done = subprocess.run(["bash", str(REPO / "experiments" / "ablation_augment.sh"), str(data), "-P", "x=1"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 2 and "unrecognized arguments: -P x=1" in done.stderr, done.stderr


def test_the_bash_recipe_refuses_an_argument_it_does_not_know(tmp_path):
    data = _folders(tmp_path / "demo")
    done = subprocess.run(["bash", str(REPO / "experiments" / "ablation_demo.sh"), str(data), "-P", "seeds=0 1"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 2 and "unrecognized arguments: -P seeds=0 1" in done.stderr, done.stderr


def test_a_shell_payload_in_seeds_runs_nothing_and_is_refused_in_the_run(store, tmp_path):
    data = _folders(tmp_path / "demo")
    project = copy_project(tmp_path / "project")
    pwned = tmp_path / "PWNED"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    for seeds in (f"SECONDS[$(id > {pwned})]", "abc"):
        done = subprocess.run(["mlflow", "run", str(project), "--env-manager", "local", "-e", "sweep",
                               "--experiment-name", "hostile", "-P", f"data={data}", "-P", f"seeds={seeds}",
                               "-P", "recipe=demo"], env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode != 0 and not pwned.exists(), done.stderr[-3000:]
        assert "expected a whole number" in done.stderr
    client = MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name("hostile").experiment_id])
    assert len(runs) == 2 and {r.info.status for r in runs} == {"FAILED"}
    assert all("expected a whole number" in r.data.tags["regolith.error"] for r in runs)


def test_the_augment_recipe_end_to_end_through_mlflow_run(store, tmp_path):
    # The recipe as written (dr_750 five ways, then compare with its four --delta), one epoch of 32 px frames.
    data = make_datasets(tmp_path / "rendered", train_frames=750, val_frames=4)
    encoder = tmp_path / "tiny-mit"
    save_legacy_encoder(encoder)
    cmd = ["mlflow", "run", str(copy_project(tmp_path / "project")), "--env-manager", "local", "-e", "ablation",
           "--experiment-name", "levers", "-P", f"data={data}", "-P", "recipe=augment", "-P", "epochs=1",
           "-P", f"pretrained={encoder}"]
    done = subprocess.run(cmd, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True,
                          timeout=1500)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    client = MlflowClient()
    experiment = client.get_experiment_by_name("levers").experiment_id
    training = client.search_runs([experiment], "tags.`regolith.kind` = 'train'")
    assert sorted((r.info.run_name, r.data.tags["regolith.augment"]) for r in training) == [
        ("dr_750", "hflip"), ("dr_750+blur", "hflip,blur"), ("dr_750+gray", "hflip,gray"),
        ("dr_750+noise", "hflip,noise"), ("dr_750+photometric", "hflip,photometric")]
    (parent,) = client.search_runs([experiment], "attributes.run_name = 'ablation'")
    for number, choice in enumerate(sweep.AUGMENTS, 1):  # each lever against plain hflip, paired over frames
        assert parent.data.tags[f"regolith.delta_{number}"] == (f"regolith.augment=hflip,{choice} vs "
                                                                f"regolith.augment=hflip")
        assert parent.data.metrics[f"delta_{number}/frame_interval_low"] <= parent.data.metrics[
            f"delta_{number}/frame_interval_high"]
    assert "no DR or size delta here" in done.stdout  # the recipe has no nodr variant: the levers answer alone
