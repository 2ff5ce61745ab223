"""The paired bootstrap over questions: intervals on every mean a leaderboard row shows.

All rows of a task answer the same questions, so one resample of the questions is applied to every
row at once (paired): the resampled means of two rows move together, and the interval on their
difference is as narrow as the correlation between them allows. Each resample draws n questions
with replacement; it is stored as counts (how often each question was drawn), so that the means of
every per-question array are one matrix product, ``counts @ values.T / n``, vectorised over rows and
metrics. The resamples are made in chunks, so memory stays near ``chunk x n`` whatever the count
(10^5 questions x 2,000 resamples as one index matrix would be 200M indices).

Intervals are percentile intervals of the resampled statistic (Efron's percentile bootstrap) at
``level`` (0.95 by default). Everything is seeded: the same seed, question count and resample count
give the same counts, hence the same intervals. Plain numpy, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np

RESAMPLES = 2000
LEVEL = 0.95
#: resampled question counts held at once (chunk x n float64): 40 MB at the default
CHUNK_ELEMENTS = 5_000_000


def resample_counts(
    n: int, resamples: int = RESAMPLES, seed: int = 0, chunk_elements: int = CHUNK_ELEMENTS
) -> Iterator[np.ndarray]:
    """The bootstrap resamples of ``n`` questions, chunk by chunk: (c, n) float64 arrays whose row b
    counts how often each question was drawn in resample b (each row sums to n). Seeded: the same
    (n, resamples, seed) give the same counts whatever the chunk size; resample b is
    ``rng.integers(0, n, n)``, the b-th draw of ``default_rng(seed)`` (as ``analysis.bootstrap_auc``)."""
    if n < 1 or resamples < 1:
        raise ValueError(f"a bootstrap needs n >= 1 and resamples >= 1, got n={n}, resamples={resamples}")
    rng = np.random.default_rng(seed)
    per_chunk = max(1, min(resamples, chunk_elements // n))
    done = 0
    while done < resamples:
        c = min(per_chunk, resamples - done)
        counts = np.empty((c, n))
        for b in range(c):  # one resample at a time: its bincount stays in cache (7x faster at 10^5)
            counts[b] = np.bincount(rng.integers(0, n, n), minlength=n)
        yield counts
        done += c


def resampled_means(
    values: np.ndarray, resamples: int = RESAMPLES, seed: int = 0, chunk_elements: int = CHUNK_ELEMENTS
) -> np.ndarray:
    """(B, K) means of each of the K per-question arrays ``values`` (K, n) in each of B paired
    resamples of the n questions (the same resamples for all K)."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"values must have shape (series, questions), got {values.shape}")
    if not np.isfinite(values).all():
        raise ValueError("values must be finite (a missing per-question value has no mean)")
    n = values.shape[1]
    # float counts times float values: BLAS (an integer @ float product is not, about 20x slower);
    # chunks of many resamples read the values once per chunk, not once per resample
    columns = np.ascontiguousarray(values.T)
    parts = [counts @ columns for counts in resample_counts(n, resamples, seed, chunk_elements)]
    return np.concatenate(parts, axis=0) / n


def percentile_interval(samples: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """The central ``level`` interval of bootstrap samples (percentile method)."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.percentile(np.asarray(samples, dtype=np.float64), [tail, 100.0 - tail])
    return float(low), float(high)


@dataclass(frozen=True)
class PairedMeans:
    """The point means and the B paired resampled means of named per-question series of one task
    (a series: one row's one metric, e.g. ``("Tandem", "accuracy")``)."""

    names: tuple[tuple[str, str], ...]
    point: np.ndarray  # (K,)
    samples: np.ndarray  # (B, K)
    questions: int
    resamples: int
    seed: int

    def column(self, row: str, metric: str) -> tuple[float, np.ndarray]:
        """(point mean, resampled means) of one series."""
        k = self.names.index((row, metric))
        return float(self.point[k]), self.samples[:, k]

    def has(self, row: str, metric: str) -> bool:
        return (row, metric) in self.names

    def interval(self, row: str, metric: str, level: float = LEVEL) -> tuple[float, float]:
        return percentile_interval(self.column(row, metric)[1], level)


def paired_means(
    series: Mapping[tuple[str, str], np.ndarray],
    resamples: int = RESAMPLES,
    seed: int = 0,
    chunk_elements: int = CHUNK_ELEMENTS,
) -> PairedMeans:
    """Resample the questions once for every series of ``series`` ((row, metric) -> (n,) array, all of
    the same questions in the same order)."""
    names = tuple(series)
    if not names:
        raise ValueError("paired_means needs at least one series")
    values = np.stack([np.asarray(series[k], dtype=np.float64) for k in names])
    return PairedMeans(
        names=names,
        point=values.mean(axis=1),
        samples=resampled_means(values, resamples, seed, chunk_elements),
        questions=int(values.shape[1]),
        resamples=resamples,
        seed=seed,
    )
