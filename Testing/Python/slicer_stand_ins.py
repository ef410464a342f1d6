"""Stand-ins for the parts of 3D Slicer that only the application has, for tests run in a subprocess.

The module file ``SemanticInterpolation.py`` imports ``slicer.ScriptedLoadableModule``,
``slicer.i18n``, ``slicer.parameterNodeWrapper``, ``slicer.util.VTKObservationMixin``, ``qt`` and
``ctk``. ``slicer-core`` has MRML and ``slicer.util`` but none of those, so the tests that import
the module file install these minimal stand-ins first (in a fresh interpreter, so nothing leaks into
the pytest process)::

    import sys; sys.path.insert(0, TESTING_DIR)
    import slicer_stand_ins
    slicer = slicer_stand_ins.install()          # real slicer-core when installed (mrml=True)...
    slicer = slicer_stand_ins.install(mrml=False)  # ...or a bare fake 'slicer' package
    SI = slicer_stand_ins.load_module_file(MODULE_FILE)

Only the Qt/application parts are faked; scenes, nodes and ``slicer.util`` array helpers stay the
real slicer-core ones. Tests that need richer Qt stand-ins (widgets, QTimer, QProcess) replace the
empty ``qt``/``ctk`` modules after :func:`install`.
"""

from __future__ import annotations

import importlib.util
import sys
import types
import unittest
from pathlib import Path


def module(name: str, **attributes) -> types.ModuleType:
    """A new module ``name`` with ``attributes``, registered in ``sys.modules``."""
    created = types.ModuleType(name)
    created.__dict__.update(attributes)
    sys.modules[name] = created
    return created


class ScriptedLoadableModule:
    def __init__(self, parent):
        self.parent = parent


class ScriptedLoadableModuleWidget:
    def __init__(self, parent=None):
        self.parent = parent


class ScriptedLoadableModuleLogic:
    def __init__(self, parent=None):
        super().__init__()
        self.moduleName = type(self).__name__[:-5]


class ScriptedLoadableModuleTest(unittest.TestCase):
    def delayDisplay(self, message, msec=0):
        print("delayDisplay:", message)


class VTKObservationMixin:
    def __init__(self):
        pass

    def addObserver(self, *arguments):
        pass

    def removeObserver(self, *arguments):
        pass


def within_range(low, high):
    """What ``WithinRange(low, high)`` stands for in an annotation (the wrapper is a plain class here)."""
    return ("WithinRange", low, high)


def install(mrml: bool = True) -> types.ModuleType:
    """Install the stand-ins; returns the ``slicer`` module.

    ``mrml=True``: on top of the real slicer-core package (exits the interpreter with "NO MRML" on
    stdout when the installed ``slicer`` has no MRML classes, for the caller to skip).
    ``mrml=False``: a bare fake ``slicer`` package (only the names the module file uses at import).
    """
    if mrml:
        import slicer
        import slicer.util

        if not hasattr(slicer, "vtkMRMLScene"):
            print("NO MRML")
            sys.exit(0)
    else:
        class vtkMRMLScalarVolumeNode:  # noqa: N801 - the MRML class name
            pass

        slicer = module("slicer", vtkMRMLScalarVolumeNode=vtkMRMLScalarVolumeNode)
        slicer.__path__ = []
        slicer.util = module("slicer.util")
    slicer.i18n = module("slicer.i18n", tr=lambda text: text, translate=lambda context, text: text)
    slicer.ScriptedLoadableModule = module(
        "slicer.ScriptedLoadableModule", ScriptedLoadableModule=ScriptedLoadableModule,
        ScriptedLoadableModuleWidget=ScriptedLoadableModuleWidget, ScriptedLoadableModuleTest=ScriptedLoadableModuleTest,
        ScriptedLoadableModuleLogic=ScriptedLoadableModuleLogic)
    slicer.util.VTKObservationMixin = VTKObservationMixin
    slicer.parameterNodeWrapper = module("slicer.parameterNodeWrapper", parameterNodeWrapper=lambda cls: cls,
                                         WithinRange=within_range)
    module("qt")
    module("ctk")
    return slicer


def load_module_file(path: str | Path) -> types.ModuleType:
    """Import the Slicer module file at ``path`` as ``SemanticInterpolation`` (as Slicer does)."""
    spec = importlib.util.spec_from_file_location("SemanticInterpolation", str(path))
    loaded = importlib.util.module_from_spec(spec)
    sys.modules["SemanticInterpolation"] = loaded
    spec.loader.exec_module(loaded)
    return loaded
