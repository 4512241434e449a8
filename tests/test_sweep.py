"""The seed sweep end to end through `mlflow run -e sweep`: one parent, every (variant, seed), resumable."""

import os
import subprocess

from mlflow.tracking import MlflowClient

from conftest import copy_project, make_demo_layout, save_legacy_encoder
from regolith import sweep


def test_finished_pairs_counts_only_finished_training_runs():
    def row(kind, status, variant="dr_8", seed="0"):
        return {"status": status, "tags": {"regolith.kind": kind, "regolith.variant": variant, "regolith.seed": seed}}
    rows = [row("train", "FINISHED"), row("train", "FINISHED", seed="1"), row("train", "FAILED", seed="2"),
            row("train", "KILLED", "nodr_8"), row("compare", "FINISHED", "ablation"), row("train", "RUNNING", seed="3")]
    assert sweep.finished_pairs(rows) == ["dr_8:0", "dr_8:1"]


def test_sweep_nests_every_variant_and_seed_and_a_rerun_finishes_only_what_is_missing(store, tmp_path):
    data = make_demo_layout(tmp_path / "demo")
    encoder = tmp_path / "tiny-mit"
    save_legacy_encoder(encoder)
    project = copy_project(tmp_path / "project")
    cmd = ["mlflow", "run", str(project), "--env-manager", "local", "-e", "sweep", "--experiment-name", "sweep",
           "-P", f"data={data}", "-P", "seeds=2", "-P", "recipe=demo", "-P", "epochs=1",
           "-P", f"pretrained={encoder}"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
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
    assert again.stdout.count("already FINISHED in the store") == 5
    rerun = [r for r in client.search_runs([experiment], "tags.`regolith.kind` = 'train'")
             if r.info.run_id not in {t.info.run_id for t in training}]
    assert [(r.info.run_name, r.data.tags["regolith.seed"]) for r in rerun] == [("dr_80", "1")]
    assert rerun[0].data.tags["mlflow.parentRunId"] == parent.info.run_id
