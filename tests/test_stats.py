"""The one bootstrap and the t-interval: degenerate samples give exact intervals, and every caller uses one count."""

import numpy as np
import pytest
import scipy.stats

from regolith import ablation, photoset, stats


def mean_difference(x, y, axis):
    return (x - y).mean(axis=axis)


def test_a_constant_difference_is_a_zero_width_interval_at_that_value():
    a = np.array([0.5, 0.75, 1.0, 0.625])
    low, high = stats.bootstrap((a, a - 0.25), mean_difference, paired=True)  # exact in binary
    assert low == high == pytest.approx(0.25)


def test_the_paired_interval_of_identical_samples_is_zero():
    a = np.random.default_rng(0).random(30)
    assert stats.bootstrap((a, a.copy()), mean_difference, paired=True) == (0.0, 0.0)


def test_the_bootstrap_is_seeded_and_needs_two_rows():
    a = np.random.default_rng(0).random(12)
    mean = lambda x, axis: x.mean(axis=axis)  # noqa: E731
    low, high = stats.bootstrap((a,), mean)
    assert low < a.mean() < high and stats.bootstrap((a,), mean) == (low, high)
    assert stats.bootstrap((a,), mean, seed=1) != (low, high)
    assert stats.bootstrap((a[:1],), mean) is None


def test_frames_and_photos_resample_with_the_one_count_and_level(monkeypatch):
    calls = []

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return bootstrap(*args, **kwargs)
    bootstrap = scipy.stats.bootstrap
    monkeypatch.setattr(scipy.stats, "bootstrap", spy)
    photoset.set_statistics([0.2, 0.4, 0.5])
    photoset.paired_difference([0.2, 0.4, 0.5], [0.1, 0.4, 0.3])
    confusion = np.zeros((300, 3, 3))
    confusion[:, 1, 1], confusion[:, 1, 0] = np.arange(300) % 7 + 1, 2
    interval = ablation.paired_bootstrap(confusion, confusion[::-1].copy())
    assert interval["resamples"] == stats.RESAMPLES == 9999
    assert len(calls) == 3 and all(call["n_resamples"] == stats.RESAMPLES and call["confidence_level"] == 0.95
                                   and call["batch"] == stats.BATCH for call in calls)


def test_seed_interval_is_a_t_interval():
    interval = stats.seed_interval([0.1, 0.2, 0.3])
    half = 4.302652729911275 * 0.1 / 3 ** 0.5  # t(0.975, 2 df)
    assert interval["low"] == pytest.approx(0.2 - half) and interval["high"] == pytest.approx(0.2 + half)
    assert interval["includes_zero"] and interval["seeds"] == 3
    assert stats.seed_interval([0.1]) is None
