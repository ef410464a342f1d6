"""Stand-ins for the parts of 3D Slicer that only the application has, for tests run in a subprocess.

The module file ``SemanticInterpolation.py`` imports ``slicer.ScriptedLoadableModule``,
``slicer.i18n``, ``slicer.parameterNodeWrapper``, ``slicer.util.VTKObservationMixin``, ``qt`` and
``ctk``. ``slicer-core`` has MRML and ``slicer.util`` (with VTKObservationMixin) but not the others,
so the tests that import the module file install these minimal stand-ins first (in a fresh
interpreter, so nothing leaks into the pytest process)::

    import sys; sys.path.insert(0, TESTING_DIR)
    import slicer_stand_ins
    slicer = slicer_stand_ins.install()          # real slicer-core when installed (mrml=True)...
    slicer = slicer_stand_ins.install(mrml=False)  # ...or a bare fake 'slicer' package
    SI = slicer_stand_ins.load_module_file(MODULE_FILE)

Only the Qt/application parts are faked; scenes, nodes, ``slicer.util`` array helpers and
``slicer.util.VTKObservationMixin`` stay the real slicer-core ones (with ``mrml=True``). The parameter
node wrapper stand-in keeps its values in the real vtkMRMLScriptedModuleNode, as Slicer's does, so
setting a parameter modifies the node and the widget's observer runs. :func:`load_module_file` puts
the module folder on ``sys.path`` as Slicer does (SemanticInterpolationTabs is imported from there).
Tests that need richer Qt stand-ins (widgets, QTimer, QProcess) replace the empty ``qt``/``ctk``
modules after :func:`install`.
"""

from __future__ import annotations

import enum
import importlib.util
import os
import sys
import types
import typing
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
    """Like Slicer's: ``parent`` is the module panel (``layout()``, ``isEntered``); ``resourcePath``
    is relative to the folder of the module file; setup, enter, exit, cleanup and onReload do nothing."""

    def __init__(self, parent=None):
        self.parent = parent
        self.moduleName = type(self).__name__[:-len("Widget")]
        self.layout = parent.layout() if parent is not None and hasattr(parent, "layout") else None

    def resourcePath(self, filename):
        moduleFile = sys.modules[type(self).__module__].__file__
        return os.path.join(os.path.dirname(moduleFile), "Resources", filename)

    def setup(self):
        pass

    def cleanup(self):
        pass

    def enter(self):
        pass

    def exit(self):
        pass

    def onReload(self):
        pass


class ScriptedLoadableModuleLogic:
    def __init__(self, parent=None):
        super().__init__()
        self.moduleName = type(self).__name__[:-5]

    def getParameterNode(self):
        """The module's singleton vtkMRMLScriptedModuleNode in ``slicer.mrmlScene``, created on first call
        (what Slicer's ScriptedLoadableModuleLogic.getParameterNode does)."""
        import slicer

        scene = slicer.mrmlScene
        node = scene.GetSingletonNode(self.moduleName, "vtkMRMLScriptedModuleNode")
        if node is not None:
            return node
        node = slicer.vtkMRMLScriptedModuleNode()
        node.SetSingletonTag(self.moduleName)
        node.SetName(scene.GenerateUniqueName(self.moduleName))
        node.SetAttribute("ModuleName", self.moduleName)
        return scene.AddNode(node)


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
    """What ``WithinRange(low, high)`` stands for in an annotation (the stand-in wrapper does not check it)."""
    return ("WithinRange", low, high)


def _is_node_type(kind) -> bool:
    return isinstance(kind, type) and kind.__name__.startswith("vtkMRML")


def _write_parameter(raw, name, kind, value) -> None:
    if _is_node_type(kind):
        raw.SetNodeReferenceID(name, value.GetID() if value is not None else None)
    elif isinstance(kind, type) and issubclass(kind, enum.Enum):
        raw.SetParameter(name, kind(value).name)
    else:
        raw.SetParameter(name, str(value))


def _read_parameter(raw, name, kind):
    if _is_node_type(kind):
        return raw.GetNodeReference(name)
    text = raw.GetParameter(name)
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return kind[text]
    if kind is bool:
        return text == "True"
    return kind(text)


def _parameter_property(name, kind):
    def read(self):
        return _read_parameter(self.parameterNode, name, kind)

    def write(self, value):
        raw = self.parameterNode
        wasModifying = raw.StartModify()  # one Modified event per write, as Slicer's wrapper does
        try:
            _write_parameter(raw, name, kind, value)
        finally:
            raw.EndModify(wasModifying)

    return property(read, write)


def parameter_node_wrapper(cls):
    """Stand-in for ``slicer.parameterNodeWrapper.parameterNodeWrapper``.

    Like Slicer's: one typed property per annotated field, stored in the wrapped
    vtkMRMLScriptedModuleNode (``parameterNode``): node fields as node references named after the
    field, enums by name, the rest as text; defaults are written on construction when missing;
    ``AddObserver``/``RemoveObserver``/``Modified`` go to the node. ``connectGui`` only hands out a
    tag (no widget binding: the stand-in widgets are not Qt widgets); ``connectedGuis`` lists them.
    """
    fields = {}
    for name, hint in typing.get_type_hints(cls, include_extras=True).items():
        kind = typing.get_args(hint)[0] if typing.get_origin(hint) is typing.Annotated else hint
        fields[name] = (kind, getattr(cls, name, None))
        setattr(cls, name, _parameter_property(name, kind))

    def __init__(self, parameterNode):
        self.parameterNode = parameterNode
        self.connectedGuis = {}
        names = set(parameterNode.GetParameterNames())
        for name, (kind, default) in fields.items():
            if not _is_node_type(kind) and name not in names:
                _write_parameter(parameterNode, name, kind, default)

    def connectGui(self, gui):
        tag = max(self.connectedGuis, default=-1) + 1
        self.connectedGuis[tag] = gui
        return tag

    def disconnectGui(self, tag):
        self.connectedGuis.pop(tag, None)

    cls.__init__ = __init__
    cls.allParameters = dict(fields)
    cls.connectGui = connectGui
    cls.disconnectGui = disconnectGui
    cls.AddObserver = lambda self, event, callback, priority=0.0: self.parameterNode.AddObserver(event, callback,
                                                                                                 priority)
    cls.RemoveObserver = lambda self, tag: self.parameterNode.RemoveObserver(tag)
    cls.Modified = lambda self: self.parameterNode.Modified()
    return cls


def install(mrml: bool = True) -> types.ModuleType:
    """Install the stand-ins; returns the ``slicer`` module.

    ``mrml=True``: on top of the real slicer-core package (exits the interpreter with "NO MRML" on
    stdout when the installed ``slicer`` has no MRML classes, for the caller to skip).
    ``mrml=False``: a bare fake ``slicer`` package (only the names the module file uses at import).
    """
    if mrml:
        import slicer
        import slicer.util  # its VTKObservationMixin is the real one

        if not hasattr(slicer, "vtkMRMLScene"):
            print("NO MRML")
            sys.exit(0)
    else:
        class vtkMRMLScalarVolumeNode:  # noqa: N801 - the MRML class name
            pass

        slicer = module("slicer", vtkMRMLScalarVolumeNode=vtkMRMLScalarVolumeNode)
        slicer.__path__ = []
        slicer.util = module("slicer.util", VTKObservationMixin=VTKObservationMixin)
    slicer.i18n = module("slicer.i18n", tr=lambda text: text, translate=lambda context, text: text)
    slicer.ScriptedLoadableModule = module(
        "slicer.ScriptedLoadableModule", ScriptedLoadableModule=ScriptedLoadableModule,
        ScriptedLoadableModuleWidget=ScriptedLoadableModuleWidget, ScriptedLoadableModuleTest=ScriptedLoadableModuleTest,
        ScriptedLoadableModuleLogic=ScriptedLoadableModuleLogic)
    if not hasattr(slicer.util, "VTKObservationMixin"):
        slicer.util.VTKObservationMixin = VTKObservationMixin
    slicer.parameterNodeWrapper = module("slicer.parameterNodeWrapper", parameterNodeWrapper=parameter_node_wrapper,
                                         WithinRange=within_range)
    module("qt")
    module("ctk")
    return slicer


def load_module_file(path: str | Path) -> types.ModuleType:
    """Import the Slicer module file at ``path`` as ``SemanticInterpolation`` (as Slicer does).

    Like Slicer, first put the module's folder on ``sys.path``: the module file imports its
    SemanticInterpolationTabs package from there.
    """
    folder = str(Path(path).resolve().parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location("SemanticInterpolation", str(path))
    loaded = importlib.util.module_from_spec(spec)
    sys.modules["SemanticInterpolation"] = loaded
    spec.loader.exec_module(loaded)
    return loaded
