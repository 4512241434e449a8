#!/usr/bin/env bash
# The augmentation lever (issue 20): v2's dr_750 trained with each augmentation beside the original's
# plain hflip (dr_750+gray, dr_750+photometric, dr_750+noise, dr_750+blur), then compare answers each one
# against hflip (compare --delta regolith.augment=hflip:regolith.augment=hflip,gray ...: by tag rather than
# by variant name, so --pretrained nvidia/mit-b2, whose names end @b2, compares the same way): B - A paired
# by seed, with intervals over validation frames, seeds and, with --real-images, photos. Written for the
# rendered sets: on the demo data the numbers say nothing.
# The recipe's parameters are regolith.sweep's RECIPES["augment"]; this file only passes its arguments on.
#
#   bash experiments/ablation_augment.sh ROOT     # ROOT holds train_dr and test_photoreal
#   bash experiments/ablation_augment.sh ROOT --seeds "0 1 2" [--epochs N] [--pretrained ID] [--real-images DIR]
#   mlflow run . --env-manager local -e ablation -P recipe=augment -P data=ROOT -P seeds="0 1 2" \
#     -P real_images=PHOTOS --experiment-name augment
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" exec python -m regolith.sweep --recipe augment "$@"
