"""The original study's numbers, as data, with their source: what compare sets measured results beside.

Source: the study's write-up and result files (shared/reference/03-training.txt for v2, whose
numbers users compare against; shared/reference/original-system.md, "Results by generation of
the rendered data", for all three generations). Best validation rock-IoU on the 300-frame
unseen-domain split ``test_photoreal``, one seed, SegFormer-B0 from ``nvidia/mit-b0``.
"""

SOURCE = ("the original study (chaoticcuriosity-io/regolith): shared/reference/03-training.txt and "
          "shared/reference/original-system.md, results by generation of the rendered data")

# generation -> variant -> best validation rock-IoU
ROCK_IOU = {
    "v1": {"nodr_750": 0.689, "dr_750": 0.788, "dr_1500": 0.815},  # crude rocks
    "v2": {"nodr_750": 0.8025, "dr_750": 0.8486, "dr_1500": 0.8521},  # photoreal rocks (chapter 03)
    "v3": {"nodr_750": 0.8593, "dr_750": 0.8675, "dr_1500": 0.8870},  # realistic ground (chapter 07)
}
# The study reports the gains to 3 decimals (v2: +0.046 DR, +0.004 more data): the differences of these.
# Per frame, dr_1500 against nodr_750 (v2): frames dr_1500 scored higher on, of 300, and the mean gain.
PER_FRAME_V2 = {"variant": "dr_1500", "baseline": "nodr_750", "wins": 267, "frames": 300, "mean_gain": 0.0765}
# The share of real Apollo photos' pixels that dr_1500 called rock (the "rock flood"), and the photos it was over.
REAL_ROCK_SHARE = {"v1": (0.52, 7), "v2": (0.83, 7), "v3": (0.357, 21)}

DEFAULT = "v2"  # the write-up users compare against
VARIANTS = ("nodr_750", "dr_750", "dr_1500")  # the study's size-matched ablation


def generation_for(experiment: str) -> str:
    """The study generation an experiment is set beside: its own name where that is one (v1, v2, v3), else v2."""
    return experiment if experiment in ROCK_IOU else DEFAULT
