"""Reading and writing image files with SimpleITK, with clear errors and atomic writes.

Inputs: anything SimpleITK reads (NIfTI ``.nii``/``.nii.gz``, NRRD, MHA/MHD, ...) or a folder
holding one DICOM series. Outputs are written atomically (see :mod:`.fileio`).

Where ITK is silently wrong, this layer checks (Docs/BadInput.md): NIfTI inputs are checked against
their header (truncated files, NaN/Inf that ITK reads as 0) and read so that the file asked for is the
file read; DICOM slices must be evenly spaced; a written file is read back before it replaces an
existing one (ITK's NIfTI writer reports no error on a full disk); NIfTI is refused for
non-orthogonal directions (it would move the image); an output may not be any file of the input.
"""

from __future__ import annotations

import logging

import errno
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from .fileio import atomic_output, check_writable_destination
from .nifti import NiftiProblem, nifti_suffix, read_layout, scan

#: File endings SimpleITK writes 3-D scalar images to.
WRITABLE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".hdr", ".img", ".vtk")
#: endings ITK's writers recognise only in lower case (all-upper-case .NII/.NII.GZ are written via a lower-case name)
LOWER_CASE_ONLY_SUFFIXES = (".nhdr", ".mha", ".mhd", ".hdr", ".img")
#: endings written by ITK's NIfTI library
NIFTI_WRITE_SUFFIXES = (".nii.gz", ".nii", ".hdr", ".img")
#: DICOM transfer syntaxes whose pixel data are stored uncompressed
_UNCOMPRESSED_DICOM = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2")


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in sorted(WRITABLE_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return suffix
    return path.suffix.lower()


def read_image(path: str | os.PathLike, dicom_series: str | None = None) -> sitk.Image:
    """Read an image file, or the DICOM series in a folder.

    A folder with several series needs ``dicom_series`` (a SeriesInstanceUID); the error lists them.
    Refused with :class:`InputError`: a DICOM series whose slices are not evenly spaced (missing or
    damaged slice), a NIfTI file shorter than its header says, and a float NIfTI file with NaN/Inf.
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
                    "put each series in its own folder and give that folder (the upsample command can also pick "
                    "one with --dicom-series UID; Python: read_image(folder, dicom_series=UID))"
                )
            dicom_series = series[0]
        elif dicom_series not in series:
            raise InputError(f"DICOM series {dicom_series!r} is not in {str(source)!r}; found: {', '.join(series)}")
        files = reader.GetGDCMSeriesFileNames(str(source), dicom_series)
        check_dicom_slices(files, source)
        reader.SetFileNames(files)
        try:
            image = reader.Execute()
        except RuntimeError as exc:
            raise InputError(f"cannot read the DICOM series in {str(source)!r}: {_first_line(exc)}") from exc
        _keep_slice_thickness(image, files)
        return image
    if nifti_suffix(source):
        return _read_nifti(source)
    try:
        return sitk.ReadImage(str(source))
    except RuntimeError as exc:
        raise _unreadable(source, exc) from exc


def _keep_slice_thickness(image: sitk.Image, files) -> None:
    """Copy the DICOM Slice Thickness of the series' first file onto ``image`` (the series reader drops the
    tags), for :mod:`.slice_profile`."""
    from .slice_profile import SLICE_THICKNESS_TAG

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(files[0]))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return
    if reader.HasMetaDataKey(SLICE_THICKNESS_TAG):
        image.SetMetaData(SLICE_THICKNESS_TAG, reader.GetMetaData(SLICE_THICKNESS_TAG))


def _unreadable(source: Path, exc: BaseException) -> InputError:
    return InputError(
        f"cannot read {str(source)!r} as an image ({_first_line(exc)}); give a NIfTI, NRRD, MHA or other "
        "file SimpleITK reads, or a folder with one DICOM series"
    )


def non_finite_message(count: int, what: str = "the image") -> str:
    return f"{what} contains {count} NaN or infinite voxel(s): replace them (e.g. with 0) first"


# ------------------------------------------------------------------ NIfTI input
def _nifti_family(path: Path) -> tuple[str, list[Path]]:
    """The name stem and the files of ``path`` (the file itself and, for a pair, its partner)."""
    suffix = nifti_suffix(path) or ""
    stem = path.name[: -len(suffix)]
    own = [path]
    if suffix.startswith((".hdr", ".img")):
        for ending in (".hdr", ".img", ".hdr.gz", ".img.gz"):
            for variant in (ending, ending.upper()):
                candidate = path.with_name(stem + variant)
                if candidate != path and candidate.exists():
                    own.append(candidate)
    return stem, own


def _read_nifti(source: Path) -> sitk.Image:
    try:
        layout = read_layout(source)
        bad = scan(layout)
    except NiftiProblem as problem:
        raise InputError(f"cannot read {str(source)!r}: {problem}; use a complete, undamaged copy of the file") from None
    if bad:
        raise InputError(non_finite_message(bad, f"the image {str(source)!r}") + " (NIfTI readers show them as 0)")
    stem, own = _nifti_family(source)
    own_names = {p.name for p in own}
    siblings = [source.with_name(stem + variant) for ending in (".nii", ".nii.gz", ".hdr", ".img")
                for variant in (ending, ending.upper())]
    siblings = [p for p in siblings if p.name not in own_names and p.exists()]
    if not siblings:
        try:
            return sitk.ReadImage(str(source))
        except RuntimeError as exc:
            raise _unreadable(source, exc) from exc
    # ITK's NIfTI library looks for x.nii before x.nii.gz (and pairs): read through private links
    # whose names leave it no choice, so the file asked for is the file read
    folder = Path(tempfile.mkdtemp(prefix="semantic-interpolation-read-"))
    try:
        try:
            for file in own:
                file_suffix = nifti_suffix(file) or ""
                (folder / ("image" + file_suffix.lower())).symlink_to(file.absolute())
        except OSError:
            raise InputError(
                f"cannot read {str(source)!r} safely: {str(siblings[0])!r} lies next to it and ITK's NIfTI reader "
                "may read that file instead; rename or move one of them") from None
        try:
            return sitk.ReadImage(str(folder / ("image" + (nifti_suffix(source) or "").lower())))
        except RuntimeError as exc:
            raise _unreadable(source, exc) from exc
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# ------------------------------------------------------------------ DICOM slices
def check_dicom_slices(files, folder: Path) -> None:
    """Refuse a DICOM series with a damaged slice file, or whose slice positions are not evenly spaced
    (ITK would place the slices as if they were, only printing a warning)."""
    positions = []
    normal = None
    for name in files:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(name))
        try:
            reader.ReadImageInformation()
        except RuntimeError as exc:
            raise InputError(
                f"slice file {Path(name).name!r} of the DICOM series in {str(folder)!r} cannot be read "
                f"({_first_line(exc)}): replace the damaged file with a complete copy") from exc
        _check_dicom_length(reader, Path(name), folder)
        if not (reader.HasMetaDataKey("0020|0032") and reader.HasMetaDataKey("0020|0037")):
            return  # no patient positions: nothing to compare
        try:
            position = np.array([float(v) for v in reader.GetMetaData("0020|0032").split("\\")[:3]])
            if normal is None:
                cosines = [float(v) for v in reader.GetMetaData("0020|0037").split("\\")[:6]]
                normal = np.cross(cosines[:3], cosines[3:])
        except ValueError:
            return
        positions.append((float(position @ normal), Path(name).name))
    if len(positions) < 3:
        return
    positions.sort()
    where = np.array([p for p, _ in positions])
    gaps = np.diff(where)
    for i, gap in enumerate(gaps):
        if abs(gap) < 1e-4:
            raise InputError(
                f"the DICOM series in {str(folder)!r} has two slices at the same position ({positions[i][1]!r} and "
                f"{positions[i + 1][1]!r}): remove the duplicate or put each acquisition in its own folder")
    typical = float(np.median(gaps)) if len(gaps) >= 3 else float(gaps.min())
    # a missing slice doubles a gap; real scanners jitter by a few per cent (seen: 7.07 vs 6.97 mm), which
    # ITK's even-spacing model absorbs: refuse above 20 %, mention what lies between
    tolerance = max(0.2 * typical, 1e-3)
    worst = int(np.argmax(np.abs(gaps - typical)))
    if abs(gaps[worst] - typical) > max(0.01 * typical, 1e-3) and abs(gaps[worst] - typical) <= tolerance:
        logging.getLogger("SemanticInterpolation").warning(
            "the DICOM series in %s is not exactly evenly spaced (%.4g mm against %.4g mm between %s and %s); "
            "read as evenly spaced", folder, gaps[worst], typical, positions[worst][1], positions[worst + 1][1])
    if abs(gaps[worst] - typical) > tolerance:
        raise InputError(
            f"the DICOM series in {str(folder)!r} is not evenly spaced: slices {positions[worst][1]!r} and "
            f"{positions[worst + 1][1]!r} are {gaps[worst]:.4g} mm apart, the others {typical:.4g} mm "
            "(a missing, unreadable or extra slice file?): add or repair the missing slice(s) or remove the extra ones")


def _check_dicom_length(reader: sitk.ImageFileReader, name: Path, folder: Path) -> None:
    """An uncompressed slice file shorter than its pixel data is truncated."""
    try:
        syntax = reader.GetMetaData("0002|0010").strip().rstrip("\x00") if reader.HasMetaDataKey("0002|0010") else ""
    except RuntimeError:
        return
    if syntax not in _UNCOMPRESSED_DICOM:
        return
    size = reader.GetSize()
    voxels = 1
    for n in size:
        voxels *= max(int(n), 1)
    needed = voxels * reader.GetNumberOfComponents() * _bytes_per_component(reader.GetPixelID())
    if needed and name.stat().st_size < needed:
        raise InputError(
            f"slice file {name.name!r} of the DICOM series in {str(folder)!r} is truncated ({name.stat().st_size} "
            f"bytes, its pixel data alone need {needed}): replace it with a complete copy")


def _bytes_per_component(pixel_id: int) -> int:
    sizes = {sitk.sitkUInt8: 1, sitk.sitkInt8: 1, sitk.sitkUInt16: 2, sitk.sitkInt16: 2, sitk.sitkUInt32: 4,
             sitk.sitkInt32: 4, sitk.sitkFloat32: 4, sitk.sitkFloat64: 8, sitk.sitkVectorUInt8: 1,
             sitk.sitkVectorInt8: 1, sitk.sitkVectorUInt16: 2, sitk.sitkVectorInt16: 2}
    return sizes.get(pixel_id, 0)


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    # ITK messages start with a file/line location; the description is usually the last line
    return lines[-1] if lines else type(exc).__name__


# ------------------------------------------------------------------ output checks
def _files_read(path: Path) -> list[Path]:
    """Every file reading ``path`` uses: the file, a pair's partner, a detached header's data file(s)."""
    files = [path]
    suffix = _suffix(path)
    if nifti_suffix(path):
        files += _nifti_family(path)[1][1:]
        stem = path.name[: -len(nifti_suffix(path))]
        files += [path.with_name(stem + e) for e in (".hdr", ".img", ".hdr.gz", ".img.gz")]
    elif suffix in (".mhd", ".nhdr") and path.is_file():
        keys = ("elementdatafile",) if suffix == ".mhd" else ("data file", "datafile")
        try:
            with open(path, "r", encoding="latin-1") as header:
                lines = header.read(1 << 16).splitlines()
        except OSError:
            lines = []
        for number, line in enumerate(lines):
            key, _, value = line.partition("=" if suffix == ".mhd" else ":")
            if key.strip().lower() in keys:
                value = value.strip()
                if value.upper().startswith("LIST"):
                    files += [path.parent / v.strip() for v in lines[number + 1:] if v.strip()]
                elif value and value.upper() != "LOCAL" and "%" not in value:
                    files.append(path.parent / value.split()[0])
    return files


def _files_written(path: Path) -> list[Path]:
    """Every file writing ``path`` creates or replaces."""
    suffix = _suffix(path)
    stem = path.name[: -len(suffix)] if suffix else path.name
    extra = {".hdr": (".img",), ".img": (".hdr",), ".mhd": (".zraw", ".raw"), ".nhdr": (".raw.gz", ".raw")}
    return [path] + [path.with_name(stem + e) for e in extra.get(suffix, ())]


def _same_file(a: Path, b: Path) -> bool:
    if os.path.normpath(a) == os.path.normpath(b):
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_output_path(output: str | os.PathLike, input_path: str | os.PathLike | None = None) -> Path:
    """Fail before any work when ``output`` cannot be written, is not a 3-D image format, or would
    replace any file of the input (the file itself, an .hdr/.img partner, an .mhd/.nhdr data file)."""
    target = check_writable_destination(output)
    suffix = _suffix(target)
    if suffix not in WRITABLE_SUFFIXES:
        raise InputError(
            f"cannot write {str(target)!r}: unknown image file type {suffix!r}; use one of "
            + ", ".join(WRITABLE_SUFFIXES)
        )
    typed = target.name[-len(suffix):]
    # ITK's NIfTI reader takes all-upper-case endings (the writer is given the lower-case name)
    if typed != suffix and (suffix in LOWER_CASE_ONLY_SUFFIXES or typed != suffix.upper()):
        raise InputError(
            f"cannot write {str(target)!r}: ITK writes {suffix!r} files only with a lower-case ending; name the "
            f"output {target.name[:-len(suffix)] + suffix!r}")
    if input_path is not None:
        source = Path(input_path).expanduser().absolute()
        if _same_file(source, target):
            raise InputError(f"output {str(target)!r} is the input file: choose another output name so the input is kept")
        read = _files_read(source) if not source.is_dir() else []
        for written in _files_written(target):
            for used in read:
                if _same_file(used.absolute(), written):
                    raise InputError(
                        f"output {str(target)!r} would replace {str(written)!r}, a file of the input "
                        f"{str(source)!r}: choose another output name so the input is kept")
    return target


def check_writable_image(image: sitk.Image, output: str | os.PathLike) -> None:
    """Fail before any work when ``image`` cannot be stored faithfully in ``output``'s format:
    NIfTI keeps only orthogonal directions (ITK would rotate the image to make them so)."""
    target = Path(output)
    if _suffix(target) not in NIFTI_WRITE_SUFFIXES:
        return
    dimension = image.GetDimension()
    direction = np.array(image.GetDirection(), dtype=float).reshape(dimension, dimension)
    deviation = float(np.abs(direction.T @ direction - np.eye(dimension)).max())
    if deviation > 1e-4:
        norms = np.linalg.norm(direction, axis=0)
        cosines = (direction.T @ direction) / np.outer(norms, norms)
        off = np.abs(cosines - np.eye(dimension))
        i, j = np.unravel_index(int(np.argmax(off)), off.shape)
        angle = float(np.degrees(np.arccos(np.clip(cosines[i, j], -1, 1))))
        raise InputError(
            f"cannot write {str(target)!r}: the image's axes are not orthogonal (axes {i} and {j} are {angle:.3g} "
            "degrees apart) and NIfTI would move the image in space to make them so; write .nrrd (or .mha), "
            "which keeps the directions")


# ------------------------------------------------------------------ writing
def _verify_written(written: Path, image: sitk.Image) -> str | None:
    """Why the file just written is not complete, or None (read back: header, size, NIfTI data length)."""
    if nifti_suffix(written):
        try:
            scan(read_layout(written), count_non_finite=False)
        except NiftiProblem as problem:
            return f"the written file is incomplete ({problem})"
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(written))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        return f"the written file cannot be read back ({_first_line(exc)})"
    if tuple(reader.GetSize()) != tuple(image.GetSize()):
        return f"the written file reads back with size {reader.GetSize()} instead of {image.GetSize()}"
    return None


def _image_bytes(image: sitk.Image) -> int:
    voxels = 1
    for n in image.GetSize():
        voxels *= int(n)
    return voxels * image.GetNumberOfComponentsPerPixel() * max(_bytes_per_component(image.GetPixelID()), 1)


def _write_failure(target: Path, reason: str, image: sitk.Image | None) -> InputError:
    try:
        free = shutil.disk_usage(target.parent).free
    except OSError:
        free = None
    needed = max(_image_bytes(image) if image is not None else 0, 64 << 10)
    kept = f"; the existing {str(target)!r} was kept" if target.exists() else ""
    if "no space left" in reason.lower() or (free is not None and free < needed):
        space = f" ({free // 1024} KiB free)" if free is not None else ""
        return InputError(
            f"cannot write {str(target)!r}: no space left on the device of folder {str(target.parent)!r}{space}: "
            f"free some space or write to another folder{kept}")
    return InputError(f"cannot write {str(target)!r}: {reason}{kept}")


def write_image(image: sitk.Image, path: str | os.PathLike, compress: bool = True) -> Path:
    """Write ``image`` atomically: the file appears complete under ``path`` or not at all.

    The written file is read back (NIfTI: its full data length) before it replaces an existing file.
    """
    target = check_output_path(path)
    check_writable_image(image, target)
    suffix = _suffix(target)
    # ITK's NIfTI writer refuses upper-case endings that its reader accepts: write the lower-case name
    staged_name = target.name[: -len(suffix)] + suffix if suffix in (".nii", ".nii.gz") else target.name
    try:
        with atomic_output(target) as temporary:
            written = temporary.with_name(staged_name)
            try:
                sitk.WriteImage(image, str(written), compress)
            except RuntimeError as exc:
                raise _write_failure(target, _first_line(exc), image) from exc
            problem = _verify_written(written, image)
            if problem:
                raise _write_failure(target, problem, image)
            if written != temporary:
                os.replace(written, temporary)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise _write_failure(target, "No space left on device", image) from exc
        raise
    return target


_SCALAR_PIXELS = frozenset(getattr(sitk, f"sitk{name}") for name in (
    "UInt8", "Int8", "UInt16", "Int16", "UInt32", "Int32", "UInt64", "Int64", "Float32", "Float64"))
_LABEL_MAP_PIXELS = frozenset(getattr(sitk, name) for name in dir(sitk) if name.startswith("sitkLabelUInt"))
_COMPLEX_PIXELS = frozenset(getattr(sitk, name) for name in dir(sitk) if name.startswith("sitkComplex"))


def validate_scalar_volume(image: sitk.Image) -> None:
    """Raise :class:`InputError` unless ``image`` is a 3-D scalar image of real numbers without NaN/Inf.

    The pixel type is checked first: SimpleITK aborts the interpreter (C++ terminate) when some methods
    are called on a label map (``sitkLabelUInt8`` ...).
    """
    if not isinstance(image, sitk.Image):
        hint = (" (a numpy array: make an image with SimpleITK.GetImageFromArray(array) and set its spacing, or "
                "use ASIEngine.upsample for arrays)") if isinstance(image, np.ndarray) else ""
        raise InputError(f"expected a SimpleITK image, got {type(image).__name__}{hint}; read files with "
                         "SemanticInterpolationLib.read_image")
    pixel_id = image.GetPixelID()
    if pixel_id in _LABEL_MAP_PIXELS:
        raise InputError(
            f"the image is a label map ({image.GetPixelIDTypeAsString()}), not an image of intensities: convert it "
            "with SimpleITK.LabelMapToLabel(image) (a label image) or pass the scalar image it was made from")
    if pixel_id in _COMPLEX_PIXELS:
        raise InputError(f"complex-valued images ({image.GetPixelIDTypeAsString()}) are not supported: take the "
                         "magnitude first (SimpleITK.ComplexToModulus)")
    if pixel_id not in _SCALAR_PIXELS and image.GetNumberOfComponentsPerPixel() == 1:
        raise InputError(f"pixel type {image.GetPixelIDTypeAsString()} is not supported: give a scalar image of "
                         "integers or floats")
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
            raise InputError(non_finite_message(bad))
