# Shared by the ablation recipes (sourced, not run): how one training run of a recipe is started.
#
# Under `mlflow run -e ablation` or `-e sweep` a recipe runs inside that entry point's own run
# (MLFLOW_RUN_ID): compare records into it, and each training run is a new run of the same
# experiment (MLFLOW_EXPERIMENT_ID; `mlflow run` refuses one given by both name and id), nested
# under it. With SKIP_FINISHED=1 (a sweep), the (variant, seed) pairs the store already holds as
# FINISHED runs are skipped, so re-running an interrupted sweep finishes only what is missing. With
# REAL_IMAGES (a folder of real photographs), each run watches them while it trains and its checkpoint
# is measured on them after (python -m regolith.photos).
if [ -n "${MLFLOW_EXPERIMENT_ID:-}" ]; then unset MLFLOW_EXPERIMENT_NAME; fi
FINISHED=" $(if [ "${SKIP_FINISHED:-0}" = 1 ]; then python -m regolith.sweep | tr '\n' ' '; fi) "

train_run() {  # VARIANT SEED [mlflow run options...]
  local variant=$1 seed=$2
  shift 2
  if [[ "$FINISHED" == *" $variant:$seed "* ]]; then
    echo "skip $variant seed $seed: already FINISHED in the store"
    return
  fi
  local log run_id
  log=$(mktemp)
  env -u MLFLOW_RUN_ID mlflow run . --env-manager local -P parent="${MLFLOW_RUN_ID:-}" \
    --run-name "$variant" -P seed="$seed" -P real_images="${REAL_IMAGES:-}" "$@" 2>&1 | tee "$log"
  run_id=$(sed -n "s/.*=== Run (ID '\([0-9a-f]*\)') succeeded ===.*/\1/p" "$log")
  rm -f "$log"
  # The fresh inference pass: it verifies the checkpoint reproduces validation, and its per-frame
  # confusion matrices give compare the bootstrap intervals over validation frames.
  env -u MLFLOW_RUN_ID python -m regolith.evaluate --run "$run_id"
  # The rock flood: the checkpoint on real photographs, per photo, so compare has an interval over photos.
  if [ -n "${REAL_IMAGES:-}" ]; then
    env -u MLFLOW_RUN_ID python -m regolith.photos --run "$run_id" --images "$REAL_IMAGES"
  fi
}
