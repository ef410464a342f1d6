"""Upsample every volume of a folder (or a list of files) with Semantic Interpolation (ASI) in 3D Slicer.

Usage (the ``--`` separates Slicer's options from the script's)::

    Slicer --no-splash --no-main-window --python-script upsample_folder.py -- \\
        --input /data/scans [more files or folders] --output /data/upsampled --factor 4 \\
        [--checkpoint /models/asi.pt] [--device auto|cpu|cuda] [--format nrrd] [--overwrite] \\
        [--adapt SECONDS [--adapt-steps N] [--seed S]] [--recursive] [--shard I/N] [--summary results.csv]

Each input ``<name><ext>`` is written as ``<output>/<name>_asi_x<factor><ext>`` (with ``--recursive``
below the same sub-folder as its input). Inputs may also be ``.txt``/``.csv`` lists of files. Progress
is printed per file. A result that exists and reads back complete is skipped (a rerun resumes).
Exit code: 0 all done (or skipped because the result exists), 1 some files failed, 2 bad arguments
or no input files. ``--help`` lists every option. The batch is the same implementation as
``semantic-interpolation upsample-batch`` (``SemanticInterpolationLib.cohort``).

``--adapt SECONDS`` (pair-unet checkpoints) first adapts the model to each scan for at most that long;
the adapted model is used only when it predicts the scan's held-out acquired slices better, the report
(held-out PSNR/SSIM before, after, linear and B-spline; kept or declined) is printed per file, and each
scan starts again from the checkpoint's weights. An asi checkpoint with ``--adapt`` is a bad argument
(exit code 2); a scan with fewer than 4 slices fails alone (exit code 1).

The work is done by ``SemanticInterpolationLib.mrml.batch`` with the module logic
(``SemanticInterpolationLogic``), so the model is loaded once for all files. It also runs in
plain Python with the ``slicer-core`` package: ``python upsample_folder.py --input ...``.
"""

import os
import sys


def _makeLibraryImportable() -> None:
    """Add the folder that holds SemanticInterpolationLib to sys.path when it is not importable yet."""
    try:
        import SemanticInterpolationLib  # noqa: F401
    except ImportError:
        # installed extension: <qt-scripted-modules>/Resources/Scripts/this file;
        # source checkout: SemanticInterpolation/Resources/Scripts/this file
        here = os.path.dirname(os.path.abspath(__file__))
        sys.path.insert(0, os.path.normpath(os.path.join(here, "..", "..")))


def _slicerApplication():
    """``slicer.app`` when running inside the Slicer application, else None."""
    try:
        import slicer
    except ImportError:
        return None
    return getattr(slicer, "app", None)


def _ensureDependencies() -> None:
    """Inside Slicer: install torch (PyTorch extension) without prompting if it is missing."""
    try:
        import SemanticInterpolation  # the Slicer module file (on sys.path inside Slicer)
    except ImportError:
        return
    SemanticInterpolation.ensurePythonDependencies(askConfirmation=False)


def run(argv) -> int:
    """Run the batch on ``argv`` (the script's arguments) and return the exit code."""
    app = _slicerApplication()
    if app is not None:
        try:
            _ensureDependencies()
        except Exception as error:  # e.g. the PyTorch extension is not installed
            print(f"error: {error}", flush=True)
            return 2
    _makeLibraryImportable()
    from SemanticInterpolationLib.mrml import batch as mrml_batch

    scene = None
    if app is not None:
        import slicer

        scene = slicer.mrmlScene
    return mrml_batch.main(argv, scene=scene)


def _exit(code: int) -> None:
    app = _slicerApplication()
    if app is not None:
        import slicer

        slicer.util.exit(code)  # lets Slicer shut down cleanly with this exit code
    else:
        sys.exit(code)


if __name__ == "__main__" or _slicerApplication() is not None:  # Slicer may not run it as __main__
    _exit(run(sys.argv[1:]))
