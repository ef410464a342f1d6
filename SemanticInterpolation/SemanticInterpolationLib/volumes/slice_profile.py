"""The slice profile of an acquisition: its slice thickness beside its slice spacing.

Thin slices far apart and contiguous thick slices look alike slice by slice, but the slices between
them are synthesised differently (thick slices hold a blurred share of their neighbours). Networks with
a slice-profile input (``pair-unet`` with ``thickness_input``) are told ``thickness / spacing`` when it is
known: from the user (``--slice-thickness MM``), or from the DICOM Slice Thickness (0018,0050) that
:func:`~.imageio.read_image` keeps on the image. NIfTI, NRRD and MHA files do not record it; then the
network works without it.
"""

from __future__ import annotations

import logging
import math

import SimpleITK as sitk

from ..errors import InputError

logger = logging.getLogger("SemanticInterpolation")

#: DICOM Slice Thickness (0018,0050), in mm, as SimpleITK names the tag
SLICE_THICKNESS_TAG = "0018|0050"


def slice_thickness_from_metadata(image: sitk.Image) -> float | None:
    """The DICOM Slice Thickness in mm recorded on ``image``, or None when absent or not a positive number."""
    if not image.HasMetaDataKey(SLICE_THICKNESS_TAG):
        return None
    text = image.GetMetaData(SLICE_THICKNESS_TAG).strip().rstrip("\x00")
    try:
        value = float(text.split("\\")[0])
    except ValueError:
        return None
    return value if math.isfinite(value) and value > 0 else None


def slice_thickness_ratio(image: sitk.Image, index_axis: int, slice_thickness: "float | str | None") -> float | None:
    """``thickness / spacing`` along ITK index axis ``index_axis``, or None when not known.

    ``slice_thickness``: mm; ``"auto"`` = :func:`slice_thickness_from_metadata` (along the slice axis the
    DICOM thickness applies to: the k axis, index 2; other axes are not known); None = not known (do not
    tell the network).
    """
    if slice_thickness is None:
        return None
    spacing = float(image.GetSpacing()[index_axis])
    if isinstance(slice_thickness, str):
        if slice_thickness != "auto":
            raise InputError(f"slice thickness must be a number of mm, 'auto' or None, got {slice_thickness!r}")
        thickness = slice_thickness_from_metadata(image) if index_axis == 2 else None
        if thickness is None:
            return None
        logger.info("slice thickness %.4g mm from the DICOM header (slice spacing %.4g mm)", thickness, spacing)
    else:
        try:
            thickness = float(slice_thickness)
        except (TypeError, ValueError):
            raise InputError(f"slice thickness must be a number of mm, got {slice_thickness!r}") from None
        if not math.isfinite(thickness) or thickness <= 0:
            raise InputError(f"slice thickness must be a positive number of mm, got {slice_thickness!r}")
    return thickness / spacing


def slice_thickness_option(value: str) -> "float | str | None":
    """The ``--slice-thickness`` option (the CLI and the Slicer batch script): ``auto``, ``unknown`` (None) or a
    positive number of mm."""
    text = str(value).strip().lower()
    if text == "auto":
        return "auto"
    if text in ("unknown", "none"):
        return None
    try:
        thickness = float(text)
    except ValueError:
        raise InputError(f"--slice-thickness {value!r}: give a thickness in mm (e.g. 5), auto or unknown") from None
    if not thickness > 0 or thickness == float("inf"):
        raise InputError(f"--slice-thickness {value!r}: the thickness must be a positive number of mm")
    return thickness
