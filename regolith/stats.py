"""Every interval regolith reports: one percentile bootstrap (paired or not) and the t-interval over seeds.

One resample count and one confidence level serve them all, so an interval over validation
frames (``ablation``), over photos (``photos``) and over seeds mean the same thing and can sit in
one table. Pure: numpy and scipy, no MLflow. Seeded: the same samples give the same interval.
"""

import numpy as np
import scipy.stats

CONFIDENCE = 0.95
RESAMPLES = 9999  # scipy's default: at 95% the interval's ends are well-defined quantiles (the 250th of 10,000)
# Resamples drawn and scored per vectorized call. Without it scipy draws all 9999 at once: over 300 validation
# frames of 9 confusion counts that is 9999 x 300 x 9 float64 per side, about 0.4 GB for a paired delta;
# 1000 at a time keeps it near 45 MB, and photos (a few dozen numbers each) never notice.
BATCH = 1000


def bootstrap(samples: tuple, statistic, seed: int = 0, paired: bool = False) -> tuple | None:
    """(low, high): the percentile-bootstrap interval of ``statistic`` over the samples' first axis.

    ``samples`` holds one array (or several of the same length where ``paired``), rows along
    axis 0; ``statistic(*resampled, axis)`` reduces along ``axis``, where scipy puts the rows
    (the last axis), so it scores a whole batch of resamples at once. Paired: each resample
    draws the same rows from every sample, so what they share (a hard frame, a dark photo)
    cancels out of the spread. None with fewer than two rows: one has no spread to resample.
    """
    if len(samples[0]) < 2:
        return None
    # random_state rather than rng: scipy took rng only from 1.15, and the project allows 1.10.
    result = scipy.stats.bootstrap(samples, statistic, paired=paired, vectorized=True, axis=0,
                                   confidence_level=CONFIDENCE, n_resamples=RESAMPLES, batch=BATCH,
                                   method="percentile", random_state=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def seed_interval(deltas: list) -> dict | None:
    """The t-interval of the mean per-seed delta (``scipy.stats.ttest_1samp``); None with fewer than two seeds."""
    if len(deltas) < 2:
        return None
    interval = scipy.stats.ttest_1samp(deltas, 0.0).confidence_interval(CONFIDENCE)
    low, high = float(interval.low), float(interval.high)
    return {"low": low, "high": high, "seeds": len(deltas), "includes_zero": bool(low <= 0 <= high)}


def bootstrap_sums(groups: tuple, statistic, seed: int = 0) -> list | None:
    """[(low, high) or None per column]: the percentile bootstrap of statistics that depend on rows only through sums.

    ``groups`` holds arrays of rows x D (a curve's validation frames, its photos); every resample
    draws each group's rows with replacement, independently of the other groups (frames and photos
    are different samples) but the same rows for all of a group's columns, which hold every model
    compared: paired. A resample is a row multiplicity vector, so its sums are one matrix product
    (300 frames of a thousand bins each would not fit as resampled copies). ``statistic(*sums)``
    maps each group's R x D resampled sums to R x K values; NaN (a share not reached) is left out,
    and a column finite in under half the resamples has no interval. None with a group under two rows.
    """
    groups = [np.asarray(group, dtype=float) for group in groups]
    if any(len(group) < 2 for group in groups):
        return None
    rng = np.random.default_rng(seed)
    values = []
    for start in range(0, RESAMPLES, BATCH):
        size = min(BATCH, RESAMPLES - start)
        sums = [rng.multinomial(len(g), np.full(len(g), 1 / len(g)), size=size).astype(float) @ g for g in groups]
        values.append(np.asarray(statistic(*sums), dtype=float).reshape(size, -1))
    values = np.concatenate(values)
    tail = (1 - CONFIDENCE) / 2
    intervals = []
    for column in values.T:
        finite = column[np.isfinite(column)]
        intervals.append(tuple(float(q) for q in np.quantile(finite, [tail, 1 - tail]))
                         if len(finite) >= len(column) / 2 else None)
    return intervals
