"""Evaluation of through-plane upsampling on fine-slice volumes, as in the ASI journal paper.

Remove slices from a fine-slice volume (optionally simulating thick slices), upsample back with
ASI and the conventional baselines through :func:`~SemanticInterpolationLib.upsampling.upsample_image`,
score the synthesized slices against the removed real ones (SSIM, PSNR, VIF), test ASI against
each baseline (one-sided Wilcoxon signed-rank), and report (CSV, Markdown, box plots, montage).

Needs scipy (filters, Wilcoxon) and matplotlib (figures): ``pip install semantic-interpolation[eval]``;
:func:`require_dependencies` says which are missing. Qt-free: the Slicer module fills its table
node from :func:`summary_table` and shows the PNGs of :func:`write_report`.

Example::

    from SemanticInterpolationLib.evaluation import EvaluationSettings, run_evaluation, write_report
    result = run_evaluation({"t1": image}, EvaluationSettings(factors=(2, 4), methods=("bspline", "linear")))
    write_report(result, "evaluation")
"""

from __future__ import annotations

import importlib.util

from ..errors import InputError


def require_dependencies(plots: bool = True) -> None:
    """Raise :class:`InputError` naming the missing packages (scipy; matplotlib when ``plots``)."""
    needed = ["scipy"] + (["matplotlib"] if plots else [])
    missing = [name for name in needed if importlib.util.find_spec(name) is None]
    if missing:
        raise InputError(
            f"the evaluation needs {' and '.join(missing)}: install with "
            f"'pip install {' '.join(missing)}' (or 'pip install semantic-interpolation[eval]'; in Slicer: "
            f"slicer.util.pip_install('{' '.join(missing)}'))"
        )


from .metrics import psnr, score_slices, ssim, vif  # noqa: E402
from .report import summary_records, summary_table, write_report  # noqa: E402
from .runner import (DEFAULT_FACTORS, EvaluationResult, EvaluationSettings, parse_factors,  # noqa: E402
                     parse_methods, run_evaluation)
from .simulate import simulate_thick_slices  # noqa: E402
from .statistics import one_sided_wilcoxon  # noqa: E402

__all__ = [
    "DEFAULT_FACTORS", "EvaluationResult", "EvaluationSettings", "one_sided_wilcoxon", "parse_factors",
    "parse_methods", "psnr", "require_dependencies", "run_evaluation", "score_slices", "simulate_thick_slices",
    "ssim", "summary_records", "summary_table", "vif", "write_report",
]
