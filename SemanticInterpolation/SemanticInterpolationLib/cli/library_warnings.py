"""Warnings of the libraries (ITK/GDCM's C++ output window, numpy/torch ``warnings``) on the command line.

ITK prints its warnings straight to stderr with C++ source paths (``WARNING: In /.../itkImageSeriesReader.hxx``),
and Python warnings come with file and line: next to the command's own one-line messages they look like
failures. During a command both are routed through the ``SemanticInterpolation`` logger instead: the
checks that matter already say so in one clear line (e.g. an unevenly spaced DICOM series), so library
warnings are logged at debug level and shown with ``-v`` (which also leaves ITK's own output on).
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from typing import Iterator

logger = logging.getLogger("SemanticInterpolation")


def _log_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ARG001
    logger.debug("%s: %s (%s:%s)", category.__name__, message, filename, lineno)


@contextlib.contextmanager
def routed_warnings(verbose: bool = False) -> Iterator[None]:
    """Within the block, Python warnings go to the logger (debug level) and, unless ``verbose``, ITK's
    warning output is off; both are restored after."""
    import SimpleITK as sitk

    display = sitk.ProcessObject.GetGlobalWarningDisplay()
    if not verbose:
        sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.showwarning = _log_warning
            yield
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(display)
