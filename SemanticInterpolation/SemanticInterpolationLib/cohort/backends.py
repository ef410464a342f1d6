"""Backends of :func:`.runner.run_cohort`: image files with SimpleITK, and ``.npy`` arrays without it.

Both upsample with an :class:`~..engine.synthesis.ASIEngine` made once for the whole batch (any
model type), or with a conventional method. Reading and writing reuse the single-file code
(:func:`..volumes.imageio.read_image` / :func:`~..volumes.imageio.write_image`, atomic and verified;
:func:`..upsampling.upsample_image`), so a batch checks exactly what ``upsample`` checks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..engine.synthesis import ASIEngine, ProgressCallback
from ..errors import InputError
from ..volumes.fileio import atomic_output
from .naming import CohortTask
from .outputs import image_file_problem, numpy_file_problem


@dataclass
class UpsampleSettings:
    """The per-file settings of ``upsample`` (see :func:`..upsampling.upsample_image`)."""

    factor: int
    method: str = "asi"
    axis: int | str = "auto"
    keep_acquired: bool = True
    output_type: str = "input"
    adapt: float | None = None
    adapt_steps: int | None = None
    adapt_seed: int = 0
    #: slice thickness in mm, ``"auto"`` (DICOM header) or None (not known); see :mod:`..volumes.slice_profile`
    slice_thickness: float | str | None = "auto"


class ImageFileBackend:
    """SimpleITK image files (and DICOM series folders) in, image files out; reading and writing in threads."""

    concurrent_io = True

    def __init__(self, settings: UpsampleSettings, engine: ASIEngine | None) -> None:
        if settings.method == "asi" and engine is None:
            raise InputError("the asi method needs an engine (a loaded checkpoint)")
        self.settings = settings
        self.engine = engine

    def output_problem(self, path: Path) -> str | None:
        return image_file_problem(path)

    def read(self, task: CohortTask) -> Any:
        from ..volumes.imageio import check_output_path, check_writable_image, read_image

        check_output_path(task.output, task.item.source)
        image = read_image(task.item.source)
        check_writable_image(image, task.output)  # e.g. NIfTI for an oblique DICOM series: before the work
        return image

    def process(self, task: CohortTask, image: Any, progress: ProgressCallback) -> Any:
        from ..upsampling import upsample_image

        s = self.settings
        result = upsample_image(image, s.factor, s.method, axis=s.axis, keep_acquired=s.keep_acquired,
                                output_type=s.output_type, engine=self.engine, adapt=s.adapt,
                                adapt_steps=s.adapt_steps, adapt_seed=s.adapt_seed,
                                slice_thickness=s.slice_thickness, progress=progress)
        if self.engine is not None and self.engine.adaptation is not None:
            import logging

            logging.getLogger("SemanticInterpolation").info("%s: %s", task.item.relative,
                                                            self.engine.adaptation.summary())
        return result

    def write(self, task: CohortTask, result: Any) -> str:
        from ..volumes.imageio import write_image

        write_image(result, task.output)
        return f"{'x'.join(map(str, result.GetSize()))}, {result.GetPixelIDTypeAsString()}"


class NumpyBackend:
    """``.npy`` arrays ``[k, j, i]`` in, ``.npy`` out, upsampled along numpy ``axis`` (default 0, the k axis);
    needs no SimpleITK (the GPU check's cohort). Writes are atomic and read back."""

    concurrent_io = True

    def __init__(self, engine: ASIEngine, factor: int, axis: int = 0) -> None:
        self.engine, self.factor, self.axis = engine, int(factor), int(axis)

    def output_problem(self, path: Path) -> str | None:
        return numpy_file_problem(path)

    def read(self, task: CohortTask) -> np.ndarray:
        try:
            return np.load(task.item.source, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise InputError(f"cannot read {str(task.item.source)!r} as a NumPy array ({exc})") from None

    def process(self, task: CohortTask, volume: np.ndarray, progress: ProgressCallback) -> np.ndarray:
        return self.engine.upsample(volume, self.factor, axis=self.axis, progress=progress)

    def write(self, task: CohortTask, result: np.ndarray) -> str:
        with atomic_output(task.output) as staged:
            with open(staged, "wb") as handle:
                np.save(handle, result, allow_pickle=False)
            problem = numpy_file_problem(staged)
            if problem:
                raise InputError(f"cannot write {str(task.output)!r}: the written file is incomplete ({problem})")
        return f"{'x'.join(map(str, result.shape))}, {result.dtype}"
