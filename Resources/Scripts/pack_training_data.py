#!/usr/bin/env python
"""Pack the default recipe's pair-unet training set into one compressed .npz for a GPU machine.

    python Resources/Scripts/pack_training_data.py                    # -> shared/gpu-training-data.npz
    python Resources/Scripts/pack_training_data.py --output /tmp/pack.npz

Reads the training views exactly as ``train_default_model.py --model-type pair-unet`` builds them
(:func:`train_default_model.build_training_set`) and the validation volume as the trainer would
(the pair U-Net's unclipped normalisation), and stores their normalised slices as float16
(:func:`SemanticInterpolationLib.training.device_sampler.save_packed_volumes`): the three views of
each isotropic volume are the same voxels and are stored once. The machine that trains then needs
only torch and numpy (``bench/gpu_train_default.sh``), not SimpleITK or the data cache.
The recipe's settings are stored in the file too, and the cubic B-spline weights that validation
and the B-spline anchors of the default's network use (gaps 2..6, every offset), which ``engine.baselines``
would otherwise measure with SimpleITK; each volume keeps its in-plane and slice spacing, which decide
the fine volumes (gaps, thick-slice samples, thickness ratios). The held-out volume is never read.

The file must stay below ``--max-mib`` (default 60, what travels with the working tree); nothing is
cropped (the recipe's volumes take 54 MiB as float16, 18 MiB compressed).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPOSITORY = HERE.parents[1]
sys.path.insert(0, str(HERE))

import train_default_model as recipe  # noqa: E402

from SemanticInterpolationLib.errors import InputError  # noqa: E402
from SemanticInterpolationLib.models.normalization import IntensityNormalization  # noqa: E402
from SemanticInterpolationLib.training import data as training_data  # noqa: E402
from SemanticInterpolationLib.training.data import TrainingVolume  # noqa: E402
from SemanticInterpolationLib.training.device_sampler import (bspline_weight_tables,  # noqa: E402
                                                               save_packed_volumes)

DEFAULT_OUTPUT = REPOSITORY / "shared" / "gpu-training-data.npz"
#: the shipped default's settings (train_default_model.py's docstring, stage 4); the spacings stored with each
#: volume decide which are fine (gaps, thick-slice samples, thickness ratios)
PAIR_SETTINGS = dict(model_type="pair-unet", synthesis_loss="l1", patch_size=44, batch_size=16, noise_std=0.06,
                     thick_slice_probability=0.5, max_gap=6, anchor_input=True, thickness_input=True)


def _lenient_reader():
    """``read_volume_image`` that falls back to plain SimpleITK when the strict reader refuses a DICOM
    series only for uneven slice positions (pd-brain: one gap of 7.07 mm among 6.97 mm ones), as the
    recipe's runs read it before that check existed. Returns the list of fallbacks taken."""
    strict = training_data.read_volume_image
    used: list[str] = []

    def read(path):
        try:
            return strict(path)
        except InputError as exc:
            if "not evenly spaced" not in str(exc) or not Path(path).is_dir():
                raise
            import SimpleITK as sitk

            reader = sitk.ImageSeriesReader()
            reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(path)))
            used.append(f"{path}: {exc}")
            return reader.Execute()

    training_data.read_volume_image = read
    return used


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "-C", str(REPOSITORY), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def build(lenient: bool = True) -> tuple[list[TrainingVolume], list[TrainingVolume], dict]:
    """The recipe's pair-unet training views, its validation volume and the metadata to store."""
    fallbacks = _lenient_reader() if lenient else []
    training = recipe.build_training_set(model_type="pair-unet")
    validation = [TrainingVolume.load(str(recipe.CACHE / name), normalization=IntensityNormalization(clip=False))
                  for name in recipe.VALIDATION]
    metadata = {
        "recipe": "Resources/Scripts/train_default_model.py --model-type pair-unet",
        "settings": dict(recipe.RECIPE, **PAIR_SETTINGS, lam=recipe.RECIPE["lam"]),
        "training_volumes": recipe.ISOTROPIC_TRAINING + recipe.ANISOTROPIC_TRAINING + recipe.PAIR_EXTRA_ANISOTROPIC,
        "validation_volumes": recipe.VALIDATION, "held_out_volumes": recipe.HELD_OUT,
        "normalization": {"isotropic views": "IntensityNormalization() (as build_training_set)",
                          "anisotropic stacks and validation": "IntensityNormalization(clip=False)"},
        "bspline_weights": bspline_weight_tables(PAIR_SETTINGS["max_gap"]),
        "lenient_dicom_reads": fallbacks, "commit": _git_commit(), "packed": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    return training, validation, metadata


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help=f"default {DEFAULT_OUTPUT}")
    parser.add_argument("--max-mib", type=float, default=60.0, help="refuse a larger file (default 60)")
    parser.add_argument("--strict-dicom", action="store_true",
                        help="no fallback for DICOM series with uneven slice positions")
    args = parser.parse_args(argv)
    missing = [n for n in recipe.ISOTROPIC_TRAINING + recipe.ANISOTROPIC_TRAINING + recipe.PAIR_EXTRA_ANISOTROPIC
               + recipe.VALIDATION if not (recipe.CACHE / n).exists()]
    if missing:
        print(f"missing data in {recipe.CACHE}: {missing}; run Resources/Scripts/fetch_data.py first", file=sys.stderr)
        return 1
    training, validation, metadata = build(lenient=not args.strict_dicom)
    for note in metadata["lenient_dicom_reads"]:
        print(f"note: read with plain SimpleITK (uneven slice positions accepted): {note}")
    summary = save_packed_volumes(args.output, training, validation, metadata=metadata)
    mib = summary["bytes"] / 2**20
    for v in training + validation:
        print(f"  {v.describe()}")
    print(f"{summary['views']} views ({len(training)} training, {len(validation)} validation) in {summary['arrays']} "
          f"float16 arrays ({summary['raw_bytes'] / 2**20:.1f} MiB raw) -> {summary['path']}: {mib:.1f} MiB")
    if mib >= args.max_mib:
        print(f"{args.output} is {mib:.1f} MiB, over --max-mib {args.max_mib:g}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
