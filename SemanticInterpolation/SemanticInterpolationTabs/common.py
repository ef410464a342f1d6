"""Small helpers shared by the tab helpers and the module file.

Nothing here imports torch or SemanticInterpolationLib at import time (Slicer imports the module
file, and with it this package, at startup; torch may not be installed yet).
"""

import importlib.util
import logging
from pathlib import Path
from typing import Callable, Optional

import qt

import slicer

#: Milliseconds between two looks at a running upsampling or evaluation (progress bar, end of the run).
POLL_INTERVAL_MS = 100
#: Milliseconds between two reads of the training log (progress, chart).
TRAINING_POLL_INTERVAL_MS = 1000


def checkpointArgument(path) -> Optional[str]:
    """The logic's ``checkpoint`` argument for a path from the GUI: None (default model) when empty."""
    text = str(path or "").strip()
    return None if text in ("", ".") else text


def sliceAxis(spacing) -> int:
    """Index (0, 1, 2 = i, j, k) of the slice axis: the largest spacing, the last one of equal ones."""
    from SemanticInterpolationLib.volumes.geometry import choose_slice_axis  # light: no torch

    return choose_slice_axis(spacing)


def findDefaultCheckpoint():
    """The bundled default checkpoint, or None (also while torch is not installed yet)."""
    if importlib.util.find_spec("torch") is None:
        return None
    try:
        from SemanticInterpolationLib.models.checkpoint import find_default_checkpoint  # imports torch
    except Exception as error:  # a broken torch install must not break the module GUI
        logging.warning("Semantic Interpolation: cannot look for the default checkpoint: %s", error)
        return None
    return find_default_checkpoint()


def defaultTrainingOutput() -> Path:
    """``<Slicer's default scene folder>/asi-finetuned.pt``: a writable place users know."""
    folder = None
    app = getattr(slicer, "app", None)
    if app is not None and hasattr(app, "defaultScenePath"):
        folder = app.defaultScenePath
    return Path(folder or Path.home()) / "asi-finetuned.pt"


def makeTimer(intervalMs: int, slot: Callable[[], None]):
    """A stopped ``qt.QTimer`` that calls ``slot`` every ``intervalMs`` milliseconds once started."""
    timer = qt.QTimer()
    timer.setInterval(intervalMs)
    timer.connect("timeout()", slot)
    return timer


class TabHelper:
    """What every tab helper gets from the module widget.

    ``ui``: the widget's ``self.ui`` (``slicer.util.childWidgetVariables`` of the .ui);
    ``getParameterNode``: returns the widget's current parameter node wrapper, or None (the widget
    replaces it on scene close and module reload, so the tab never keeps one);
    ``refresh``: asks the widget to update every tab's GUI (a tab that starts or ends a run calls it,
    because the other tabs show what is running).
    """

    def __init__(self, ui, getParameterNode: Callable[[], object], refresh: Callable[[], None]) -> None:
        self.ui = ui
        self._getParameterNode = getParameterNode
        self._refresh = refresh

    @property
    def parameterNode(self):
        """The module's parameter node wrapper (SemanticInterpolationParameterNode), or None."""
        return self._getParameterNode()

    def rawParameterNode(self):
        """The vtkMRMLScriptedModuleNode behind the parameter node wrapper (for node reference lists)."""
        parameters = self.parameterNode
        return parameters.parameterNode if parameters else None

    def updateGui(self) -> None:
        """Parameter node and run state -> this tab's widgets (called on every parameter node change)."""

    def onSceneStartClose(self) -> None:
        """The scene is about to close: forget (or cancel) what belongs to it."""

    def cleanup(self) -> None:
        """The application closes: stop timers, end what runs in the background."""
