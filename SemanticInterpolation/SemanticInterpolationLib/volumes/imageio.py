"""Reading and writing image files with SimpleITK, with clear errors and atomic writes.

Inputs: anything SimpleITK reads (NIfTI ``.nii``/``.nii.gz``, NRRD, MHA/MHD, ...) or a folder
holding one DICOM series. Outputs are written atomically (see :mod:`.fileio`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from .fileio import atomic_output, check_writable_destination

#: File endings SimpleITK writes 3-D scalar images to.
WRITABLE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".hdr", ".img", ".vtk")


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in sorted(WRITABLE_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return suffix
    return path.suffix.lower()


def read_image(path: str | os.PathLike, dicom_series: str | None = None) -> sitk.Image:
    """Read an image file, or the DICOM series in a folder.

    A folder with several series needs ``dicom_series`` (a SeriesInstanceUID); the error lists them.
    """
    source = Path(path).expanduser()
    if not source.exists():
        raise InputError(f"input {str(source)!r} does not exist")
    if source.is_dir():
        reader = sitk.ImageSeriesReader()
        series = list(reader.GetGDCMSeriesIDs(str(source)))
        if not series:
            raise InputError(f"folder {str(source)!r} holds no DICOM series; give an image file or a DICOM folder")
        if dicom_series is None:
            if len(series) > 1:
                raise InputError(
                    f"folder {str(source)!r} holds {len(series)} DICOM series ({', '.join(series)}): "
                    "choose one with --dicom-series UID or put each series in its own folder"
                )
            dicom_series = series[0]
        elif dicom_series not in series:
            raise InputError(f"DICOM series {dicom_series!r} is not in {str(source)!r}; found: {', '.join(series)}")
        files = reader.GetGDCMSeriesFileNames(str(source), dicom_series)
        reader.SetFileNames(files)
        try:
            return reader.Execute()
        except RuntimeError as exc:
            raise InputError(f"cannot read the DICOM series in {str(source)!r}: {_first_line(exc)}") from exc
    try:
        return sitk.ReadImage(str(source))
    except RuntimeError as exc:
        raise InputError(
            f"cannot read {str(source)!r} as an image ({_first_line(exc)}); give a NIfTI, NRRD, MHA or other "
            "file SimpleITK reads, or a folder with one DICOM series"
        ) from exc


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    # ITK messages start with a file/line location; the description is usually the last line
    return lines[-1] if lines else type(exc).__name__


def check_output_path(output: str | os.PathLike, input_path: str | os.PathLike | None = None) -> Path:
    """Fail before any work when ``output`` cannot be written, is not a 3-D image format, or is the input."""
    target = check_writable_destination(output)
    if _suffix(target) not in WRITABLE_SUFFIXES:
        raise InputError(
            f"cannot write {str(target)!r}: unknown image file type {_suffix(target)!r}; use one of "
            + ", ".join(WRITABLE_SUFFIXES)
        )
    if input_path is not None:
        source = Path(input_path).expanduser().absolute()
        same = source == target
        if not same and target.exists():
            try:
                same = os.path.samefile(source, target)
            except OSError:
                same = False
        if same:
            raise InputError(f"output {str(target)!r} is the input file: choose another output name so the input is kept")
    return target


def write_image(image: sitk.Image, path: str | os.PathLike, compress: bool = True) -> Path:
    """Write ``image`` atomically: the file appears complete under ``path`` or not at all."""
    target = check_output_path(path)
    with atomic_output(target) as temporary:
        try:
            sitk.WriteImage(image, str(temporary), compress)
        except RuntimeError as exc:
            raise InputError(f"cannot write {str(target)!r}: {_first_line(exc)}") from exc
    return target


def validate_scalar_volume(image: sitk.Image) -> None:
    """Raise :class:`InputError` unless ``image`` is a 3-D scalar image of real numbers without NaN/Inf."""
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            f"the image has {image.GetNumberOfComponentsPerPixel()} components per voxel (vector or RGB): "
            "upsample one scalar component at a time (e.g. SimpleITK.VectorIndexSelectionCast, or Slicer's "
            "'Vector to Scalar Volume' module) or convert colour to grayscale first"
        )
    dimension = image.GetDimension()
    if dimension == 4:
        raise InputError(
            f"the image is 4-D (size {image.GetSize()}): split it into 3-D frames and upsample each (in Slicer, "
            "load it as a volume sequence and use the sequence option)"
        )
    if dimension != 3:
        raise InputError(f"the image is {dimension}-D (size {image.GetSize()}): a 3-D volume with at least 2 slices is needed")
    pixel = image.GetPixelIDTypeAsString()
    if "complex" in pixel.lower():
        raise InputError(f"complex-valued images ({pixel}) are not supported: take the magnitude first")
    if image.GetPixelID() in (sitk.sitkFloat32, sitk.sitkFloat64):
        array = sitk.GetArrayViewFromImage(image)
        if not np.isfinite(array).all():
            bad = int(array.size - np.count_nonzero(np.isfinite(array)))
            raise InputError(f"the image contains {bad} NaN or infinite voxel(s): replace them (e.g. with 0) first")
