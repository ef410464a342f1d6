"""What can be checked of the Slicer module without the Slicer application.

The module file, its tab helpers (SemanticInterpolationTabs), the batch script and the .ui are
parsed (ast, XML); names used by the code are checked against the .ui and the parameter node; the
widget must stay thin and each tab helper must own its part; the CMake files must list every file
of the library and tab packages (computed from the folders now, so files added later are caught);
and the module file is imported once with stand-ins for Slicer's Qt-based modules to check that
importing it (and the tab package) imports neither torch nor SemanticInterpolationLib.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[2]
MODULE_DIR = REPOSITORY / "SemanticInterpolation"
MODULE_FILE = MODULE_DIR / "SemanticInterpolation.py"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "SemanticInterpolation.ui"
BATCH_SCRIPT = MODULE_DIR / "Resources" / "Scripts" / "upsample_folder.py"
LIBRARY_DIR = MODULE_DIR / "SemanticInterpolationLib"
TABS_DIR = MODULE_DIR / "SemanticInterpolationTabs"
#: the tab helper files: {file name: class it must define} (common.py and __init__.py define no tab)
TAB_CLASSES = {"upsample.py": "UpsampleTab", "training.py": "TrainingTab", "evaluate.py": "EvaluateTab"}
TAB_FILES = sorted(TABS_DIR.glob("*.py"))
#: the module file and the tab files: everything that is GUI code of the module
GUI_FILES = [MODULE_FILE, *TAB_FILES]
MODULE_CMAKE = MODULE_DIR / "CMakeLists.txt"
EXTENSION_CMAKE = REPOSITORY / "CMakeLists.txt"
S4EXT = REPOSITORY / "SemanticInterpolation.s4ext"
ICON = MODULE_DIR / "Resources" / "Icons" / "SemanticInterpolation.png"

#: Widget classes the parameterNodeWrapper connects (exact type) for each annotation kind.
CONNECTABLE = {"bool": {"QCheckBox", "ctkCheckBox", "QPushButton"}, "int": {"QSpinBox", "QSlider", "ctkSliderWidget"},
               "float": {"QDoubleSpinBox", "ctkDoubleSpinBox", "ctkSliderWidget", "qMRMLSliderWidget"},
               "enum": {"QComboBox", "ctkComboBox"}, "node": {"qMRMLNodeComboBox"}, "str": {"QLineEdit", "QLabel"}}


@pytest.fixture(scope="module")
def moduleTree() -> ast.Module:
    return ast.parse(MODULE_FILE.read_text(encoding="utf-8"), filename=str(MODULE_FILE))


@pytest.fixture(scope="module")
def guiTrees() -> dict[Path, ast.Module]:
    return {path: ast.parse(path.read_text(encoding="utf-8"), filename=str(path)) for path in GUI_FILES}


def guiSource() -> str:
    return "\n".join(path.read_text(encoding="utf-8") for path in GUI_FILES)


def classesOf(tree: ast.Module) -> dict[str, ast.ClassDef]:
    return {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}


def methodsOf(classNode: ast.ClassDef) -> set[str]:
    return {n.name for n in classNode.body if isinstance(n, ast.FunctionDef)}


@pytest.fixture(scope="module")
def uiWidgets() -> dict[str, ElementTree.Element]:
    root = ElementTree.parse(UI_FILE).getroot()
    return {w.get("name"): w for w in root.iter("widget")}


def slicerParameterNames(uiWidgets) -> dict[str, str]:
    """{parameter name: widget name} from the SlicerParameterName dynamic properties."""
    names = {}
    for name, widget in uiWidgets.items():
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                names[prop.findtext("string")] = name
    return names


def annotationKind(annotation: str, enums: set[str]) -> str:
    """"node", "enum", "int", "float", "bool" or "str" of an annotation's source (``Annotated[T, ...]`` -> T)."""
    match = re.fullmatch(r"Annotated\[\s*([\w.]+)\s*,.*\]", annotation, re.S)
    base = match.group(1) if match else annotation
    if "vtkMRML" in base:
        return "node"
    if base in enums:
        return "enum"
    return base if base in ("int", "float", "bool") else "str"


def withinRange(annotation: str):
    match = re.search(r"WithinRange\(\s*([-\d.e]+)\s*,\s*([-\d.e]+)\s*\)", annotation)
    return (float(match.group(1)), float(match.group(2))) if match else None


def parameterNodeDefaults(moduleTree) -> dict[str, str]:
    """{field: default value source} of the @parameterNodeWrapper class (fields with a default)."""
    for node in moduleTree.body:
        if isinstance(node, ast.ClassDef) and any(
                isinstance(d, ast.Name) and d.id == "parameterNodeWrapper" for d in node.decorator_list):
            return {s.target.id: ast.unparse(s.value) for s in node.body if isinstance(s, ast.AnnAssign) and s.value}
    raise AssertionError("no @parameterNodeWrapper class in the module file")


def parameterNodeFields(moduleTree) -> dict[str, str]:
    """{field: annotation source} of the @parameterNodeWrapper class."""
    for node in moduleTree.body:
        if isinstance(node, ast.ClassDef) and any(
                isinstance(d, ast.Name) and d.id == "parameterNodeWrapper" for d in node.decorator_list):
            return {s.target.id: ast.unparse(s.annotation) for s in node.body if isinstance(s, ast.AnnAssign)}
    raise AssertionError("no @parameterNodeWrapper class in the module file")


# ------------------------------------------------------------------------------------------ parsing
@pytest.mark.parametrize("path", [*GUI_FILES, BATCH_SCRIPT, LIBRARY_DIR / "mrml" / "logic.py",
                                  LIBRARY_DIR / "mrml" / "batch.py", LIBRARY_DIR / "mrml" / "training.py",
                                  LIBRARY_DIR / "mrml" / "evaluation.py"],
                         ids=lambda p: p.relative_to(MODULE_DIR).as_posix())
def test_python_files_parse(path):
    ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def test_tab_package_has_one_file_per_tab():
    assert TABS_DIR.is_dir() and (TABS_DIR / "__init__.py").is_file()
    assert set(TAB_CLASSES) <= {path.name for path in TAB_FILES}


@pytest.mark.parametrize("path", GUI_FILES, ids=lambda p: p.name)
def test_module_file_runs_on_python_3_9(path, guiTrees):
    """Slicer 5.2-5.6 ship Python 3.9: no ``X | Y`` in evaluated annotations, no match statements."""
    source = path.read_text(encoding="utf-8")
    assert "from __future__ import annotations" not in source, "parameterNodeWrapper needs real annotations"
    for node in ast.walk(guiTrees[path]):
        annotations = []
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            annotations += [a.annotation for a in node.args.args + node.args.kwonlyargs if a.annotation]
            annotations += [node.returns] if node.returns else []
        if isinstance(node, ast.AnnAssign):
            annotations.append(node.annotation)
        for annotation in annotations:
            assert not any(isinstance(n, ast.BinOp) and isinstance(n.op, ast.BitOr) for n in ast.walk(annotation)), \
                f"line {annotation.lineno}: use Optional/Union, Python 3.9 cannot evaluate 'X | Y'"
        assert not isinstance(node, getattr(ast, "Match", ())), "match statements need Python 3.10"


def test_module_file_follows_the_scripted_module_template(moduleTree):
    classes = classesOf(moduleTree)
    for name, base in [("SemanticInterpolation", "ScriptedLoadableModule"),
                       ("SemanticInterpolationWidget", "ScriptedLoadableModuleWidget"),
                       ("SemanticInterpolationTest", "ScriptedLoadableModuleTest")]:
        assert name in classes, f"class {name} missing"
        assert base in [ast.unparse(b) for b in classes[name].bases]
    functions = {node.name for node in moduleTree.body if isinstance(node, ast.FunctionDef)}
    assert {"getLogicClass", "__getattr__", "ensurePythonDependencies"} <= functions
    widgetMethods = methodsOf(classes["SemanticInterpolationWidget"])
    assert {"setup", "cleanup", "enter", "exit", "onSceneStartClose", "onSceneEndClose", "initializeParameterNode",
            "setParameterNode", "_checkCanApply", "logic", "getLogic"} <= widgetMethods
    source = MODULE_FILE.read_text(encoding="utf-8")
    assert "class SemanticInterpolationLogic(LibraryLogic, ScriptedLoadableModuleLogic)" in source
    for words in ("Sander", "de Vos", "Isgum", "Autoencoding low-resolution MRI", "Medical Image Analysis", "2022"):
        assert words in source, f"the acknowledgement must cite the ASI paper ({words!r} missing)"
    assert "self.parent.categories" in source and "Filtering" in source


def test_widget_is_thin_and_hands_each_tab_to_its_helper(moduleTree):
    """The widget loads the .ui, creates the three tab helpers and delegates; the tabs' code is in their files."""
    widget = classesOf(moduleTree)["SemanticInterpolationWidget"]
    source = ast.get_source_segment(MODULE_FILE.read_text(encoding="utf-8"), widget)
    for tabClass, attribute in (("UpsampleTab", "upsampleTab"), ("TrainingTab", "trainingTab"),
                                ("EvaluateTab", "evaluateTab")):
        assert f"self.{attribute} = {tabClass}(self.ui," in source, f"setup must create {tabClass} with self.ui"
    assert widget.end_lineno - widget.lineno < 200, "the widget should stay thin: tab code goes to SemanticInterpolationTabs"
    tabWords = ("Upsample", "Training", "Evaluat", "poll", "finish", "Chart")
    misplaced = sorted(name for name in methodsOf(widget) if any(word in name for word in tabWords))
    assert not misplaced, f"tab methods in the widget (move them to their tab helper): {misplaced}"
    assert "slicer.util.loadUI(self.resourcePath(\"UI/SemanticInterpolation.ui\"))" in source
    assert "SemanticInterpolationTabs" in MODULE_FILE.read_text(encoding="utf-8")


@pytest.mark.parametrize("fileName,className", sorted(TAB_CLASSES.items()))
def test_each_tab_helper_connects_its_widgets_and_has_its_own_update_poll_finish(fileName, className, guiTrees):
    tree = guiTrees[TABS_DIR / fileName]
    classes = classesOf(tree)
    assert className in classes, f"{fileName} must define {className}"
    tab = classes[className]
    assert {"__init__", "updateGui", "poll", "finish", "onSceneStartClose", "cleanup"} <= methodsOf(tab)
    init = next(n for n in tab.body if isinstance(n, ast.FunctionDef) and n.name == "__init__")
    arguments = [a.arg for a in init.args.args]
    assert arguments[:3] == ["self", "ui", "getParameterNode"], "ui and the parameter node come as arguments"
    connects = [n for n in ast.walk(init) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
                and n.func.attr == "connect"]
    assert len(connects) >= 3, f"{className} connects its own widgets' signals in its constructor"
    assert "makeTimer(" in ast.unparse(init), f"{className} owns the timer that calls its poll()"


@pytest.mark.parametrize("path", TAB_FILES, ids=lambda p: p.name)
def test_tab_files_get_what_they_need_as_arguments(path, guiTrees):
    """No reaching into the module file: what a tab needs from it (logic, dependency installers) is passed in."""
    for node in ast.walk(guiTrees[path]):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        else:
            continue
        assert "SemanticInterpolation" not in names, f"{path.name}:{node.lineno} imports the module file"
        assert "__main__" not in names
    assert "global " not in path.read_text(encoding="utf-8")


@pytest.mark.parametrize("path", GUI_FILES, ids=lambda p: p.name)
def test_module_file_imports_no_torch_and_no_library_at_import_time(path, guiTrees):
    """Slicer imports the module (and so the tab package) at startup, before torch may be installed."""
    for node in guiTrees[path].body:  # only module-level statements run at import
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        else:
            continue
        for name in names:
            assert not name.startswith(("torch", "SemanticInterpolationLib", "numpy")), \
                f"line {node.lineno}: 'import {name}' at module level; import it where it is used"


def test_self_test_runs_every_test_method(moduleTree):
    testClass = next(n for n in moduleTree.body if isinstance(n, ast.ClassDef) and n.name == "SemanticInterpolationTest")
    methods = {n.name: n for n in testClass.body if isinstance(n, ast.FunctionDef)}
    called = {node.func.attr for node in ast.walk(methods["runTest"])
              if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)}
    tests = {name for name in methods if name.startswith("test_")}
    assert tests and tests <= called, f"runTest does not call {sorted(tests - called)}"
    source = ast.unparse(testClass)
    assert 'device="cpu"' in source or "device='cpu'" in source, "the self-test must run on the CPU"


# ------------------------------------------------------------------------------------------ .ui and parameter node
def usedUiNames(tree: ast.Module) -> set[str]:
    """X of every ``self.ui.X`` and ``ui.X`` (a local ``ui = self.ui`` or the constructor argument)."""
    used = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        value = node.value
        if isinstance(value, ast.Attribute) and value.attr == "ui" and isinstance(value.value, ast.Name) \
                and value.value.id == "self":
            used.add(node.attr)
        elif isinstance(value, ast.Name) and value.id == "ui":
            used.add(node.attr)
    return used


def test_every_ui_widget_the_code_uses_exists(guiTrees, uiWidgets):
    for path, tree in guiTrees.items():
        used = usedUiNames(tree)
        missing = sorted(used - set(uiWidgets))
        assert not missing, f"{path.name}: ui.{missing} not in {UI_FILE.name}"
    for fileName in TAB_CLASSES:
        assert usedUiNames(guiTrees[TABS_DIR / fileName]), f"{fileName} uses no ui.X at all?"


def test_each_tab_uses_only_its_own_tab_of_the_ui(guiTrees):
    """The Upsample, Train and Evaluate helpers touch the widgets of their own QTabWidget page only."""
    root = ElementTree.parse(UI_FILE).getroot()
    pages = {page.get("name"): {w.get("name") for w in page.iter("widget")}
             for page in root.iter("widget") if page.get("name") in ("upsampleTab", "trainingTab", "evaluateTab")}
    for fileName, page in (("upsample.py", "upsampleTab"), ("training.py", "trainingTab"), ("evaluate.py", "evaluateTab")):
        outside = sorted(usedUiNames(guiTrees[TABS_DIR / fileName]) - pages[page])
        assert not outside, f"{fileName} uses widgets of another tab: {outside}"


def test_ui_is_a_qmrmlwidget_with_a_tab_for_each_mode(uiWidgets):
    root = ElementTree.parse(UI_FILE).getroot()
    top = root.find("widget")
    assert top.get("class") == "qMRMLWidget" and top.get("name") == "SemanticInterpolation"
    tabs = [w for w in uiWidgets.values() if w.get("class") == "QTabWidget"]
    assert len(tabs) == 1, "a QTabWidget leaves room for the Training tab and Evaluate section"
    titles = [child.find("attribute/string").text for child in tabs[0].findall("widget")]
    assert titles == ["Upsample", "Train", "Evaluate"]
    for name in ("inputVolumeSelector", "upsamplingFactorSpinBox", "checkpointPathLineEdit", "computeDeviceComboBox",
                 "deviceInfoLabel", "keepAcquiredSlicesCheckBox", "outputVolumeSelector", "upsampleButton",
                 "cancelButton", "progressBar"):
        assert name in uiWidgets, name
    assert uiWidgets["checkpointPathLineEdit"].get("class") == "ctkPathLineEdit"


def test_custom_widgets_are_declared_and_node_selectors_get_the_scene(uiWidgets):
    root = ElementTree.parse(UI_FILE).getroot()
    declared = {c.findtext("class") for c in root.iter("customwidget")}
    used = {w.get("class") for w in uiWidgets.values()}
    custom = {c for c in used if c.startswith(("ctk", "qMRML", "qSlicer"))}
    assert custom <= declared, f"undeclared custom widgets: {sorted(custom - declared)}"
    receivers = {c.findtext("receiver") for c in root.iter("connection")
                 if c.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"}
    selectors = {name for name, w in uiWidgets.items() if w.get("class") == "qMRMLNodeComboBox"}
    assert selectors <= receivers, f"these selectors never get the scene: {sorted(selectors - receivers)}"


def test_parameter_names_match_the_ui_and_the_wrapper(moduleTree, uiWidgets):
    fields = parameterNodeFields(moduleTree)
    bound = slicerParameterNames(uiWidgets)
    assert set(bound) <= set(fields), f"SlicerParameterName without a parameter: {sorted(set(bound) - set(fields))}"
    source = guiSource()
    for name in set(fields) - set(bound):  # synchronised by hand, so the code must use it
        assert re.search(rf"\.{name}\b", source), f"parameter {name} is neither in the .ui nor used by the code"
    enums = {node.name for node in moduleTree.body if isinstance(node, ast.ClassDef)
             and any(ast.unparse(b) in ("enum.Enum", "Enum") for b in node.bases)}
    for parameter, widgetName in bound.items():
        annotation = fields[parameter]
        kind = annotationKind(annotation, enums)
        widgetClass = uiWidgets[widgetName].get("class")
        assert widgetClass in CONNECTABLE[kind], \
            f"{widgetName} ({widgetClass}) cannot be connected to {parameter}: {annotation}"


def _numberProperties(widget) -> dict[str, float]:
    values = {}
    for prop in widget.findall("property"):
        for tag in ("number", "double"):
            if prop.find(tag) is not None:
                values[prop.get("name")] = float(prop.findtext(tag))
    return values


def test_ui_values_and_limits_agree_with_the_wrapper(moduleTree, uiWidgets):
    """Spin boxes start at the wrapper's default and have its WithinRange limits; check boxes and line edits too."""
    fields, defaults = parameterNodeFields(moduleTree), parameterNodeDefaults(moduleTree)
    checked = 0
    for parameter, widgetName in slicerParameterNames(uiWidgets).items():
        widget = uiWidgets[widgetName]
        numbers = _numberProperties(widget)
        limits = withinRange(fields[parameter])
        if limits is not None:
            assert (numbers.get("minimum"), numbers.get("maximum")) == limits, f"{widgetName} limits != {limits}"
        if parameter not in defaults:
            continue
        default = ast.literal_eval(defaults[parameter]) if not defaults[parameter].startswith(
            ("ComputeDevice", "SynthesisLoss", "SynthesisMode", "TrainingModelType", "AugmentationMode")) else None
        if isinstance(default, bool):
            shown = {p.get("name"): p.findtext("bool") for p in widget.findall("property")}.get("checked", "false")
            assert shown == ("true" if default else "false"), f"{widgetName} checked != {default}"
        elif isinstance(default, (int, float)):
            assert numbers.get("value") == float(default), f"{widgetName} value {numbers.get('value')} != {default}"
        elif isinstance(default, str) and widget.get("class") == "QLineEdit":
            assert {p.get("name"): p.findtext("string") for p in widget.findall("property")}.get("text") == default
        else:
            continue
        checked += 1
    assert checked >= 10


def test_training_and_evaluation_choices_match_the_library(moduleTree, uiWidgets):
    from SemanticInterpolationLib.mrml.evaluation import EVALUATION_METHODS
    from SemanticInterpolationLib.training import SYNTHESIS_LOSSES
    from SemanticInterpolationLib.upsampling import METHODS

    enums = {node.name: node for node in moduleTree.body if isinstance(node, ast.ClassDef)}
    losses = {ast.literal_eval(s.value) for s in enums["SynthesisLoss"].body if isinstance(s, ast.Assign)}
    assert losses == set(SYNTHESIS_LOSSES)
    from SemanticInterpolationLib.engine import SYNTHESIS_MODES
    modes = {ast.literal_eval(s.value) for s in enums["SynthesisMode"].body if isinstance(s, ast.Assign)}
    assert modes == {"auto", *SYNTHESIS_MODES}
    assert uiWidgets["synthesisModeComboBox"].get("class") == "QComboBox"
    from SemanticInterpolationLib.engine.test_time_augmentation import TTA_MODES
    augmentations = {ast.literal_eval(s.value) for s in enums["AugmentationMode"].body if isinstance(s, ast.Assign)}
    assert augmentations == {"auto", *TTA_MODES}
    assert uiWidgets["testTimeAugmentationComboBox"].get("class") == "QComboBox"
    from SemanticInterpolationLib.models.registry import model_type_names
    types = [ast.literal_eval(s.value) for s in enums["TrainingModelType"].body if isinstance(s, ast.Assign)]
    assert types[0] == "auto" and set(types) == {"auto", *model_type_names()}, "auto first, then every model type"
    assert uiWidgets["trainingModelTypeComboBox"].get("class") == "QComboBox"
    assert parameterNodeDefaults(moduleTree)["trainingModelType"] == "TrainingModelType.AUTO"
    assert set(EVALUATION_METHODS) == set(METHODS)
    for method, box in (("asi", "evaluateASICheckBox"), ("linear", "evaluateLinearCheckBox"),
                        ("bspline", "evaluateBSplineCheckBox"), ("lanczos", "evaluateLanczosCheckBox")):
        assert uiWidgets[box].get("class") == "QCheckBox", box
        assert f'("{method}", parameters.' in (TABS_DIR / "evaluate.py").read_text(encoding="utf-8"), method
    assert uiWidgets["trainingVolumesSelector"].get("class") == "qMRMLCheckableNodeComboBox"
    assert uiWidgets["evaluationTableView"].get("class") == "qMRMLTableView"
    for edit in ("trainingInitPathLineEdit", "trainingOutputPathLineEdit", "evaluationOutputFolderLineEdit"):
        assert uiWidgets[edit].get("class") == "ctkPathLineEdit", edit
    training = (TABS_DIR / "training.py").read_text(encoding="utf-8")
    assert "ctk.ctkPathLineEdit.Files | ctk.ctkPathLineEdit.Writable" in training  # the output: a "save as" dialog
    assert "qt.QProcess()" in training and "mrml_training.prepareTraining(" in training
    assert "TrainingPlot(" in training and "ShowChartInLayout" in training
    evaluate = (TABS_DIR / "evaluate.py").read_text(encoding="utf-8")
    assert "BackgroundEvaluation(" in evaluate and "finishEvaluation(" in evaluate
    assert "modelType=parameters.trainingModelType.value" in training


def test_adaptation_widgets_are_bound_and_reach_the_logic(moduleTree, uiWidgets):
    """Advanced > Adapt to this scan and its time budget: parameter node fields bound in the .ui, in the
    Upsample tab's Advanced section, passed to the logic as ``adapt=``; the model label is on the Model section."""
    fields, defaults = parameterNodeFields(moduleTree), parameterNodeDefaults(moduleTree)
    bound = slicerParameterNames(uiWidgets)
    assert fields["adaptToScan"] == "bool" and defaults["adaptToScan"] == "False"
    assert fields["adaptSeconds"].startswith("Annotated[int, WithinRange(1,") and defaults["adaptSeconds"] == "120"
    assert bound["adaptToScan"] == "adaptToScanCheckBox" and bound["adaptSeconds"] == "adaptSecondsSpinBox"
    assert uiWidgets["adaptToScanCheckBox"].get("class") == "QCheckBox"
    assert uiWidgets["adaptSecondsSpinBox"].get("class") == "QSpinBox"
    root = ElementTree.parse(UI_FILE).getroot()
    sections = {w.get("name"): {c.get("name") for c in w.iter("widget")} for w in root.iter("widget")
                if w.get("class") == "ctkCollapsibleButton"}
    assert {"adaptToScanCheckBox", "adaptSecondsSpinBox"} <= sections["advancedCollapsibleButton"]
    assert "checkpointModelLabel" in sections["modelCollapsibleButton"]
    assert "trainingModelTypeComboBox" in sections["trainingModelCollapsibleButton"]
    upsample = (TABS_DIR / "upsample.py").read_text(encoding="utf-8")
    assert "adapt=adapt" in upsample and "run.adaptationSummary" in upsample
    assert "describeCheckpoint(" in upsample and 'find_spec("torch")' in upsample


def test_factor_limits_agree_between_ui_wrapper_and_engine(moduleTree, uiWidgets):
    from SemanticInterpolationLib.engine import MAX_FACTOR

    spin = uiWidgets["upsamplingFactorSpinBox"]
    values = {p.get("name"): int(p.findtext("number")) for p in spin.findall("property") if p.find("number") is not None}
    assert values["minimum"] == 2 and values["maximum"] == MAX_FACTOR
    assert f"WithinRange(2, {MAX_FACTOR})" in parameterNodeFields(moduleTree)["upsamplingFactor"]


# ------------------------------------------------------------------------------------------ CMake, s4ext, icon
def cmakeList(text: str, variable: str) -> list[str]:
    """The items of ``set(variable ...)`` and of every later ``list(APPEND variable ...)``."""
    match = re.search(rf"set\({variable}\s+(.*?)\)", text, re.S)
    assert match, f"{variable} not set"
    items = match.group(1).split()
    for appended in re.finditer(rf"list\(APPEND {variable}\s+(.*?)\)", text, re.S):
        items += appended.group(1).split()
    return [item.strip() for item in items if item.strip()]


def packageFiles(folder: Path) -> list[str]:
    return sorted(p.relative_to(MODULE_DIR).as_posix() for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


def test_module_cmakelists_lists_every_library_file_and_resource():
    text = MODULE_CMAKE.read_text(encoding="utf-8")
    scripts = [s.replace("${MODULE_NAME}", "SemanticInterpolation") for s in cmakeList(text, "MODULE_PYTHON_SCRIPTS")]
    for folder in (LIBRARY_DIR, TABS_DIR):
        missing = sorted(set(packageFiles(folder)) - set(scripts))
        assert not missing, f"{MODULE_CMAKE} misses {missing}: the Slicer build would not install them"
    assert {f"SemanticInterpolationTabs/{name}" for name in ("__init__.py", *TAB_CLASSES)} <= set(scripts)
    assert len(scripts) == len(set(scripts)), "a file is listed twice"
    assert "SemanticInterpolation.py" in scripts
    resources = [r.replace("${MODULE_NAME}", "SemanticInterpolation") for r in cmakeList(text, "MODULE_PYTHON_RESOURCES")]
    for path in scripts + resources:
        conditional = f"if(EXISTS ${{CMAKE_CURRENT_SOURCE_DIR}}/{path})" in text  # listed only when present
        assert conditional or (MODULE_DIR / path).is_file(), f"CMakeLists lists {path}, which does not exist"
    assert "slicerMacroBuildScriptedModule(" in text
    assert "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in text


def test_cmake_installs_sample_and_model_where_the_library_looks():
    """The top-level Resources/SampleData (and Resources/Models) go to <module folder>/Resources/..., which
    find_sample() and find_default_checkpoint() search in an installed extension."""
    from SemanticInterpolationLib.models.checkpoint import DEFAULT_CHECKPOINT_NAME, default_checkpoint_candidates
    from SemanticInterpolationLib.bundled.sampledata import SAMPLE, sample_data_folders

    text = MODULE_CMAKE.read_text(encoding="utf-8")
    data = cmakeList(text, "MODULE_DATA_FILES")
    assert f"SampleData/{SAMPLE.file_name}" in data and f"SampleData/{SAMPLE.notice}" in data
    assert f"list(APPEND MODULE_DATA_FILES Models/{DEFAULT_CHECKPOINT_NAME})" in text
    top = re.search(r"set\(MODULE_TOP_LEVEL_RESOURCES_DIR \$\{CMAKE_CURRENT_SOURCE_DIR\}/(\S+)\)", text).group(1)
    assert (MODULE_DIR / top).resolve() == REPOSITORY / "Resources"
    for path in data:
        assert (REPOSITORY / "Resources" / path).is_file(), path
    assert "DESTINATION ${Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR}/Resources/${data_dir}" in text
    assert "${CMAKE_BINARY_DIR}/${Slicer_QTSCRIPTEDMODULES_LIB_DIR}/Resources/${data_file}" in text
    # <module folder> is where SemanticInterpolation.py and SemanticInterpolationLib/ are installed together
    assert MODULE_DIR / "Resources" / "SampleData" in [p.resolve() for p in sample_data_folders()]
    assert MODULE_DIR / "Resources" / "Models" / DEFAULT_CHECKPOINT_NAME in \
        [p.resolve() for p in default_checkpoint_candidates()]


def test_extension_cmakelists_and_s4ext_describe_the_extension():
    text = EXTENSION_CMAKE.read_text(encoding="utf-8")
    for key in ("EXTENSION_HOMEPAGE", "EXTENSION_CATEGORY", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION",
                "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS"):
        assert re.search(rf'set\({key} "[^"]+"\)', text), key
    assert re.search(r'set\(EXTENSION_DEPENDS "PyTorch"\)', text)
    assert "add_subdirectory(SemanticInterpolation)" in text
    assert "find_package(Slicer REQUIRED)" in text and "Slicer_EXTENSION_CPACK" in text
    entries = {}
    for line in S4EXT.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition(" ")
            entries[key] = value.strip()
    assert entries["scm"] == "git" and entries["depends"] == "PyTorch"
    for key in ("scmurl", "homepage", "category", "iconurl", "description", "contributors"):
        assert entries.get(key), key


def test_icon_is_a_128_pixel_png():
    data = ICON.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (128, 128)


# ------------------------------------------------------------------------------------------ import with stand-ins
TESTING_DIR = Path(__file__).resolve().parent
#: first lines of the subprocess scripts: Slicer's application-only parts as stand-ins (see slicer_stand_ins.py)
STAND_INS_IMPORT = f"import sys\nsys.path.insert(0, {str(TESTING_DIR)!r})\nimport slicer_stand_ins\n"


def test_importing_the_module_file_imports_neither_torch_nor_the_library():
    code = STAND_INS_IMPORT + textwrap.dedent(f'''
        slicer = slicer_stand_ins.install(mrml=False)
        SI = slicer_stand_ins.load_module_file({str(MODULE_FILE)!r})
        print("torch imported:", "torch" in sys.modules)
        print("library imported:", any(m.startswith("SemanticInterpolationLib") for m in sys.modules))
        import SemanticInterpolationTabs
        print("tabs from module folder:", SemanticInterpolationTabs.__file__.startswith({str(TABS_DIR)!r}))
        print("tab classes:", [c.__name__ for c in (SI.UpsampleTab, SI.TrainingTab, SI.EvaluateTab)],
              SI.UpsampleTab is SemanticInterpolationTabs.UpsampleTab)

        class Parent: pass
        parent = Parent()
        SI.SemanticInterpolation(parent)
        print("title:", parent.title)
        print("categories:", parent.categories)
        print("labels:", [d.label() for d in SI.ComputeDevice])
        print("checkpoint:", SI.checkpointArgument(""), SI.checkpointArgument("."), SI.checkpointArgument("/m.pt"))
        print("requirements:", SI._readRequirements(SI._requirementsFile()))
        print("loss labels:", [d.label() for d in SI.SynthesisLoss])
        print("synthesis labels:", [d.label() for d in SI.SynthesisMode])
        print("model type labels:", [d.label() for d in SI.TrainingModelType])
        sample = SI.sampleDataSourceArguments()  # imports the light sampledata module only
        print("torch imported after sample:", "torch" in sys.modules)
        import hashlib, urllib.request
        with urllib.request.urlopen(sample["uris"]) as handle:  # what the Sample Data module downloads
            digest = hashlib.sha256(handle.read()).hexdigest()
        print("sample checksum ok:", sample["checksums"] == "SHA256:" + digest)
        print("sample:", sample["category"], sample["sampleName"], sample["fileNames"], sample["nodeNames"],
              sample["uris"].startswith("file:"), sample["loadFileType"])

        Logic = SI.SemanticInterpolationLogic  # module __getattr__ creates the class
        from SemanticInterpolationLib.mrml.logic import SemanticInterpolationLogic as LibraryLogic
        logic = Logic(batchSize=3)
        print("mro ok:", isinstance(logic, LibraryLogic) and isinstance(logic, SI.ScriptedLoadableModuleLogic))
        print("moduleName:", logic.moduleName, "batchSize:", logic.batchSize)
        print("same class:", SI.getLogicClass() is Logic)
    ''')
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "torch imported: False" in out and "library imported: False" in out, out
    assert "tabs from module folder: True" in out
    assert "tab classes: ['UpsampleTab', 'TrainingTab', 'EvaluateTab'] True" in out
    assert "title: Semantic Interpolation" in out
    assert "Filtering" in out
    assert "labels: ['Automatic (GPU if available)', 'CPU', 'GPU (CUDA)']" in out
    assert "synthesis labels: [\"The model's recommendation\", 'Plain (the paper: decoded latent mix)'" in out
    assert "checkpoint: None None /m.pt" in out
    assert "requirements: []" in out
    assert "LPIPS (the paper's; needs lpips and torchvision)" in out
    assert "model type labels: [\"auto (checkpoint's type)\", \"asi (the paper's autoencoder)\", " in out
    assert "torch imported after sample: False" in out
    assert "sample checksum ok: True" in out
    assert "sample: Semantic Interpolation AnisotropicBrainT1 brain1_image.nrrd AnisotropicBrainT1 True VolumeFile" in out
    assert "mro ok: True" in out and "moduleName: SemanticInterpolation batchSize: 3" in out
    assert "same class: True" in out


def test_batch_script_documents_its_usage_and_exit_codes():
    source = BATCH_SCRIPT.read_text(encoding="utf-8")
    assert "--no-main-window --python-script upsample_folder.py" in source
    for words in ("--input", "--output", "--factor", "--checkpoint", "--device", "Exit code"):
        assert words in source
    tree = ast.parse(source)
    calls = {ast.unparse(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    assert {"slicer.util.exit", "sys.exit"} <= calls, "the script must end with a non-zero exit code on failure"


def test_self_test_logic_parts_run_with_slicer_core():
    """Run the module's self-test methods that need no widget, with slicer-core MRML and Qt-free stand-ins.

    Only the Qt/application parts are faked (i18n, ScriptedLoadableModule base classes, the
    parameter node wrapper, slicer.app, temporary folder); scenes, nodes, slicer.util array
    helpers and the Sequences logic are the real slicer-core ones. test_GuiRun needs the widget: it runs
    in test_slicer_module_tabs.py, on the widget built there from stand-ins.
    """
    pytest.importorskip("slicer", reason="slicer-core is not installed: cannot run the self-test logic")
    code = STAND_INS_IMPORT + textwrap.dedent(f'''
        import tempfile, types
        slicer = slicer_stand_ins.install(mrml=True)
        slicer.mrmlScene = slicer.vtkMRMLScene()
        sequencesLogic = slicer.vtkSlicerSequencesLogic()
        sequencesLogic.SetMRMLScene(slicer.mrmlScene)
        slicer.modules = types.SimpleNamespace(sequences=types.SimpleNamespace(logic=lambda: sequencesLogic))
        options = types.SimpleNamespace(noMainWindow=True)
        slicer.app = types.SimpleNamespace(testingEnabled=lambda: True, commandOptions=lambda: options)
        slicer.util.tempDirectory = lambda key="tmp", **kwargs: tempfile.mkdtemp(prefix=key)

        SI = slicer_stand_ins.load_module_file({str(MODULE_FILE)!r})

        test = SI.SemanticInterpolationTest("test_UpsampleSmallVolume")
        for name in ("test_UpsampleSmallVolume", "test_BadInputCreatesNoNode", "test_Sequence", "test_AdaptToScan",
                     "test_TrainAndEvaluateLogic"):
            test.setUp()
            getattr(test, name)()
            print("passed:", name)
    ''')
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    if "NO MRML" in result.stdout:
        pytest.skip("the 'slicer' package here has no MRML classes (install slicer-core)")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for name in ("test_UpsampleSmallVolume", "test_BadInputCreatesNoNode", "test_Sequence", "test_AdaptToScan",
                 "test_TrainAndEvaluateLogic"):
        assert f"passed: {name}" in result.stdout, result.stdout
