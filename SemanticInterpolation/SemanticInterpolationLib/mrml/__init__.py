"""All MRML glue (needs VTK/MRML, never Qt or ``slicer.app``): the module logic that upsamples volume
nodes and sequences (:mod:`.logic`), the batch script's body (:mod:`.batch`), the Training tab
(:mod:`.training`) and Evaluate tab (:mod:`.evaluation`) logic, and the background worker thread a GUI
polls (:mod:`.background`). Importing this package imports nothing heavy; import a submodule.
"""

from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {"SemanticInterpolationLogic": "logic"}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
