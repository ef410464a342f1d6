"""``semantic-interpolation demo``: upsample the bundled real sample and draw before/after views.

Upsamples the bundled anisotropic brain MRI (0.78 x 0.78 x 6.5 mm) through-plane with cubic
B-spline and, when a model is available (``--checkpoint`` or the installed default), with ASI;
writes the upsampled volumes and a PNG of coronal and sagittal (through-plane) views: the
acquired stack, B-spline, the learned model and the difference learned model minus B-spline (blue:
darker, red: brighter; acquired slices are identical, so the difference shows only in the new slices)
side by side on the same physical scale. Without a model it
says so and shows the baseline only.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import SimpleITK as sitk

from ..models.checkpoint import find_default_checkpoint, resolve_checkpoint
from ..engine.devices import DEVICE_CHOICES
from ..engine.synthesis import ASIEngine, validate_factor
from ..errors import InputError
from ..progress import TerminalProgress

logger = logging.getLogger("SemanticInterpolation")
DEFAULT_OUTPUT = "demo"
DEFAULT_FACTOR = 5
NO_MODEL_NOTE = ("ASI was not run: no trained default model is installed yet (it comes with a later release) and "
                 "no --checkpoint was given. Shown: the acquired slices and cubic B-spline. Run again with "
                 "--checkpoint MODEL.pt to add ASI")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", metavar="FILE",
                        help="volume to upsample instead of the bundled sample (thick slices along the largest spacing)")
    parser.add_argument("--output", "-o", default=DEFAULT_OUTPUT, metavar="DIR",
                        help=f"folder for the results (default: ./{DEFAULT_OUTPUT}; created when missing)")
    parser.add_argument("--factor", "-k", type=int, default=DEFAULT_FACTOR, metavar="K",
                        help=f"upsampling factor (default {DEFAULT_FACTOR}: 6.5 mm -> 1.3 mm for the sample)")
    parser.add_argument("--checkpoint", metavar="PATH",
                        help="model checkpoint of any model type (default: the bundled model, when installed)")
    parser.add_argument("--device", default="auto", metavar="DEVICE",
                        help=f"{', '.join(DEVICE_CHOICES)} or cuda:N for ASI (auto: CUDA, then MPS, then CPU)")


def register(subparsers: argparse._SubParsersAction) -> None:
    from .app import add_common_options

    parser = subparsers.add_parser(
        "demo",
        help="upsample the bundled real brain MRI sample and draw before/after through-plane views",
        description=__doc__.split("\n\n", 1)[1].replace("\n", " "),
    )
    add_arguments(parser)
    add_common_options(parser)
    parser.set_defaults(handler=run_demo)


def _display_range(values: np.ndarray) -> tuple[float, float]:
    low, high = (float(v) for v in np.percentile(values, [0.5, 99.5]))
    return (low, high) if high > low else (low, low + 1.0)


def _cut(array: np.ndarray, view: str) -> np.ndarray:
    """Through-plane cut of a ``[k, j, i]`` array at the middle: coronal = [k, i] at mid j, sagittal = [k, j] at mid i."""
    if view == "coronal":
        return array[:, array.shape[1] // 2, :]
    return array[:, :, array.shape[2] // 2]


def plot_through_plane(panels: list[tuple[str, sitk.Image | None]], path: Path, title: str, note: str | None,
                       difference: "tuple[str, sitk.Image] | None" = None) -> Path:
    """Rows: coronal and sagittal cuts; columns: ``panels`` (label, image on the same physical scale; None = note),
    then ``difference`` (label, a difference image) drawn with a diverging map symmetric around 0."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from ..volumes.fileio import atomic_output

    first = panels[0][1]
    assert first is not None
    low, high = _display_range(sitk.GetArrayViewFromImage(first))
    # slice axis k shown vertically; superior up when k runs towards the head (LPS/RAS z component > 0)
    superior_up = first.GetDirection()[8] >= 0
    columns = list(panels) + ([difference] if difference is not None else [])
    spread = 1.0
    if difference is not None:
        magnitude = np.abs(sitk.GetArrayViewFromImage(difference[1]))
        spread = max(float(np.percentile(magnitude[magnitude > 0], 99.5)) if np.any(magnitude > 0) else 0.0,
                     1e-3 * (high - low))
    figure = Figure(figsize=(4.2 * len(columns), 8.4))
    FigureCanvasAgg(figure)
    for row, view in enumerate(("coronal", "sagittal")):
        for col, (label, image) in enumerate(columns):
            is_difference = difference is not None and col == len(columns) - 1
            axes = figure.add_subplot(2, len(columns), row * len(columns) + col + 1)
            axes.set_xticks([])
            axes.set_yticks([])
            if image is None:
                axes.text(0.5, 0.5, label, ha="center", va="center", wrap=True, fontsize=10, transform=axes.transAxes)
                axes.set_facecolor("#eeeeee")
                continue
            array = sitk.GetArrayViewFromImage(image)
            sx, sy, sz = image.GetSpacing()
            cut = _cut(array, view)
            if view == "sagittal" and image.GetDirection()[4] < 0:
                cut = cut[:, ::-1]  # j runs anterior (LPS y < 0): draw anterior on the left, as usual
            width_spacing = sx if view == "coronal" else sy
            # extent in mm: each row is one slice of thickness sz (acquired) or sz (= spacing / K) after upsampling
            extent = (-0.5 * width_spacing, (cut.shape[1] - 0.5) * width_spacing, -0.5 * sz, (cut.shape[0] - 0.5) * sz)
            shown = axes.imshow(cut, cmap="RdBu_r" if is_difference else "gray",
                                vmin=-spread if is_difference else low, vmax=spread if is_difference else high,
                                interpolation="nearest", extent=extent, origin="lower" if superior_up else "upper",
                                aspect="equal")
            if is_difference:
                figure.colorbar(shown, ax=axes, fraction=0.046, pad=0.02)
            axes.set_title(f"{label}\n{view}, {image.GetSize()[2]} slices of {sz:.2f} mm", fontsize=10)
    figure.suptitle(title, fontsize=12)
    if note:
        figure.text(0.5, 0.01, note, ha="center", va="bottom", fontsize=9, wrap=True, color="#a00000")
    with atomic_output(path) as temporary:
        figure.savefig(str(temporary), dpi=90, format="png")
    return path


def run_demo(args: argparse.Namespace) -> int:
    from .evaluate import check_output_folder
    from ..evaluation import require_dependencies
    from ..volumes.imageio import read_image, write_image
    from ..bundled.sampledata import SAMPLE, find_sample
    from ..upsampling import upsample_image

    require_dependencies()
    started = time.perf_counter()
    factor = validate_factor(args.factor)
    source = Path(args.input) if args.input else find_sample()
    output = check_output_folder(args.output)
    engine, note, model = None, None, None
    if args.checkpoint or find_default_checkpoint() is not None:
        checkpoint = resolve_checkpoint(args.checkpoint)
        engine = ASIEngine(checkpoint, args.device)
        model = checkpoint.summary()
        logger.info("ASI model: %s", model)
    else:
        note = NO_MODEL_NOTE
        logger.warning("%s", note)
    image = read_image(source)
    if image.GetDimension() == 3 and image.GetSpacing()[2] < max(image.GetSpacing()):
        raise InputError(f"{source}: the demo draws slices along k; its largest spacing is on another axis "
                         f"(spacing {image.GetSpacing()}). Use 'semantic-interpolation upsample --axis' instead")
    stem = source.name.split(".")[0]
    output.mkdir(parents=True, exist_ok=True)
    panels: list[tuple[str, sitk.Image | None]] = [(f"Acquired ({source.name})", image)]
    written = []
    for method in ("bspline", "asi"):
        if method == "asi" and engine is None:
            panels.append(("ASI: no trained model installed yet.\nRun with --checkpoint MODEL.pt", None))
            continue
        bar = TerminalProgress(f"{method} x{factor}")
        try:
            result = upsample_image(image, factor, method, axis=2, engine=engine, progress=bar)
        finally:
            bar.close()
        target = output / f"{stem}_{method}_x{factor}.nii.gz"
        written.append(write_image(result, target))
        label = "B-spline" if method == "bspline" else engine.model_type if engine is not None else "ASI"
        panels.append((f"{label} x{factor}", result))
    difference = None
    if engine is not None:
        learned = sitk.Cast(panels[-1][1], sitk.sitkFloat32)
        spline = sitk.Cast(panels[-2][1], sitk.sitkFloat32)
        difference = (f"{engine.model_type} - B-spline", learned - spline)
    png = plot_through_plane(
        panels, output / f"{stem}_through_plane_x{factor}.png",
        f"{stem}: through-plane views before and after upsampling x{factor} "
        f"({image.GetSpacing()[2]:.2f} mm -> {image.GetSpacing()[2] / factor:.2f} mm slices)"
        + (f"\nModel: {Path(checkpoint.path).name if checkpoint.path else checkpoint.config.name}, "
           f"{engine.model_type} model, {engine.synthesis} synthesis" if model else ""),
        note, difference)
    written.append(png)
    for path in written:
        print(path)
    logger.info("demo finished in %.1f s%s", time.perf_counter() - started, f". Note: {note}" if note else "")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo without the ``semantic-interpolation`` command (e.g. ``python Resources/Scripts/demo.py``)."""
    from .app import PROG, _configure_logging, add_common_options
    from ..errors import SemanticInterpolationError

    parser = argparse.ArgumentParser(prog="demo", description=__doc__.split("\n\n", 1)[1].replace("\n", " "))
    add_arguments(parser)
    add_common_options(parser)
    args = parser.parse_args(argv)
    _configure_logging(args)
    try:
        return run_demo(args)
    except KeyboardInterrupt:
        print(f"\n{PROG} demo: interrupted", file=sys.stderr)
        return 130
    except SemanticInterpolationError as exc:
        print(f"{PROG} demo: error: {exc}", file=sys.stderr)
        return 1
