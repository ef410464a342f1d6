"""GUI code of the Semantic Interpolation module's tabs, one helper class per tab.

:class:`UpsampleTab` (upsample.py), :class:`TrainingTab` (training.py) and :class:`EvaluateTab`
(evaluate.py) each get the module widget's ``ui``, a function returning the current parameter node
wrapper and what else they need as constructor arguments; each connects its own widgets' signals
and has its own ``updateGui``, ``poll`` (timer slot) and ``finish`` methods, plus ``onSceneStartClose``
and ``cleanup``, which the widget calls. common.py holds the small shared helpers.

Slicer puts the module folder on ``sys.path``, so this package is importable next to
SemanticInterpolation.py. Like the module file, importing it imports neither torch nor
SemanticInterpolationLib (they are imported inside the methods that need them).
"""

import importlib
import sys

from .common import TabHelper
from .evaluate import EvaluateTab
from .training import TrainingTab
from .upsample import UpsampleTab

__all__ = ["EvaluateTab", "TabHelper", "TrainingTab", "UpsampleTab", "reloadModules"]

_SUBMODULES = ("common", "upsample", "training", "evaluate")


def reloadModules() -> None:
    """Re-read the tab files (developer mode "Reload": Slicer itself reloads only the module file)."""
    for name in _SUBMODULES:
        importlib.reload(sys.modules[f"{__name__}.{name}"])
    importlib.reload(sys.modules[__name__])
