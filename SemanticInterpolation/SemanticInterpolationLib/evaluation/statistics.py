"""One-sided Wilcoxon signed-rank test of ASI against each baseline (journal paper, section V).

The test is paired per slice: the same removed slice scored for ASI and for the baseline. The
alternative is that ASI scores higher (``scipy.stats.wilcoxon(asi, baseline,
alternative="greater")`` with scipy's defaults: zero differences dropped ("wilcox"), the exact
distribution for small samples without ties, else the normal approximation). Pairs in which
either score is NaN (e.g. VIF of a constant reference slice) or the difference is undefined
(both PSNRs infinite) are left out; the number of pairs used is reported.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class WilcoxonResult:
    """``p_value`` (NaN when there are no usable pairs), ``statistic`` (sum of positive ranks), ``n_pairs``."""

    p_value: float
    statistic: float
    n_pairs: int


def paired_differences(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """``first - second`` for the pairs where the difference is a number (inf allowed, NaN not)."""
    a = np.asarray(first, dtype=np.float64).ravel()
    b = np.asarray(second, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired samples differ in length: {a.size} and {b.size}")
    with np.errstate(invalid="ignore"):
        differences = a - b
    return differences[~np.isnan(differences)]


def one_sided_wilcoxon(asi: np.ndarray, baseline: np.ndarray) -> WilcoxonResult:
    """p-value of the one-sided Wilcoxon signed-rank test "ASI > baseline" on paired per-slice scores."""
    from scipy.stats import wilcoxon

    differences = paired_differences(asi, baseline)
    if differences.size == 0:
        return WilcoxonResult(float("nan"), float("nan"), 0)
    if not np.any(differences != 0):
        return WilcoxonResult(1.0, 0.0, int(differences.size))  # no evidence either way
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = wilcoxon(differences, alternative="greater")
    return WilcoxonResult(float(result.pvalue), float(result.statistic), int(differences.size))
