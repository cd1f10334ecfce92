"""The long-tail profile and symmetric noise against PROTOCOL.md's formulas."""

import math

import numpy as np
import pytest

from ltsweep.data import long_tail_counts, long_tail_indices, symmetric_noise


def test_cifar10_gamma100_smallest_class_is_50():
    counts = long_tail_counts(5000, 10, 100)
    assert counts[0] == 5000 and counts[-1] == 50
    assert counts == [math.floor(5000 * 100 ** (-c / 9) + 1e-9) for c in range(10)]
    assert sum(counts) == 12406  # the CIFAR-10 gamma=100 training set size used in the literature


def test_cifar100_gamma10_smallest_class_is_50():
    counts = long_tail_counts(500, 100, 10)
    assert counts[0] == 500 and counts[-1] == 50
    assert all(a >= b for a, b in zip(counts, counts[1:], strict=False))


def test_gamma_one_keeps_everything_and_gamma_below_one_is_refused():
    assert long_tail_counts(5000, 10, 1) == [5000] * 10
    with pytest.raises(ValueError, match="gamma"):
        long_tail_counts(5000, 10, 0.5)


def test_subset_has_the_profile_and_is_seeded():
    labels = np.repeat(np.arange(10), 200)
    idx = long_tail_indices(labels, 10, 50, seed=3)
    assert np.bincount(labels[idx], minlength=10).tolist() == long_tail_counts(200, 10, 50)
    assert np.array_equal(idx, long_tail_indices(labels, 10, 50, seed=3))
    assert not np.array_equal(idx, long_tail_indices(labels, 10, 50, seed=4))


@pytest.mark.parametrize("rate", [0.0, 0.2, 0.5, 0.9])
def test_symmetric_noise_rate_matches_formula(rate):
    clean = np.repeat(np.arange(10), 5000)
    noisy = symmetric_noise(clean, 10, rate, seed=0)
    # exactly round(rate * n) samples are re-drawn; each keeps its label with probability 1/C
    expected = rate * 9 / 10
    assert abs(noisy.actual_rate - expected) < 0.01
    assert np.array_equal(noisy.changed, noisy.labels != clean)
    # the re-drawn labels are uniform over all classes
    if rate > 0:
        drawn = noisy.labels[noisy.changed]
        freq = np.bincount(drawn, minlength=10) / len(drawn)
        assert np.all(np.abs(freq - 0.1) < 0.02)


def test_noise_is_seed_deterministic_and_nested():
    clean = np.repeat(np.arange(10), 300)
    a = symmetric_noise(clean, 10, 0.4, seed=7)
    assert np.array_equal(a.labels, symmetric_noise(clean, 10, 0.4, seed=7).labels)
    assert not np.array_equal(a.labels, symmetric_noise(clean, 10, 0.4, seed=8).labels)
    # a higher rate changes a superset of the samples of a lower rate (same seed)
    b = symmetric_noise(clean, 10, 0.8, seed=7)
    assert np.all(b.changed[a.changed])


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5])
def test_noise_outside_unit_interval_is_refused(rate):
    with pytest.raises(ValueError, match="noise rate"):
        symmetric_noise(np.zeros(10, dtype=int), 10, rate, seed=0)
