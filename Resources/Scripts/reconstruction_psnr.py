#!/usr/bin/env python
"""Reconstruction PSNR/SSIM of checkpoints on fine volumes: how well each model gives back an acquired slice.

For each VOLUME (slice axis: the largest spacing, ties to k) the central ``--slices`` slices are
upsampled by 2 with ``keep_acquired=False`` (the engine's ``--reconstruct-acquired``), so the acquired
slices of the output are the model's reconstructions; they are scored against the real slices on
the reference's 1st-99th percentile range scaled to [0, 1], as ``semantic-interpolation evaluate``
scores. Models whose acquired slices are the input itself (pair-unet) are reported as exact.

    python Resources/Scripts/reconstruction_psnr.py --checkpoints A.pt B.pt --volumes colin27/ch2.nii.gz \
        [--slices 41] [--markdown OUT.md]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from SemanticInterpolationLib import ASIEngine, load_checkpoint
from SemanticInterpolationLib.evaluation.metrics import percentile_range, psnr, scale_to_unit_range, ssim


def reconstruction_scores(checkpoint_path: Path, volume_path: Path, n_slices: int) -> dict:
    checkpoint = load_checkpoint(checkpoint_path)
    image = sitk.ReadImage(str(volume_path))
    spacing = image.GetSpacing()
    axis = max(range(3), key=lambda a: (spacing[a], a))  # ITK axis; ties go to k
    array = np.moveaxis(sitk.GetArrayFromImage(image).astype(np.float32), 2 - axis, 0)
    start = max(0, (array.shape[0] - n_slices) // 2)
    slices = array[start:start + n_slices]
    row = {"checkpoint": checkpoint_path.name, "model_type": checkpoint.model_type, "volume": volume_path.name,
           "slices": int(len(slices))}
    if checkpoint.model_type == "pair-unet":
        return dict(row, psnr=float("inf"), ssim=1.0, note="acquired slices are the input (no reconstruction)")
    engine = ASIEngine(checkpoint, "cpu")
    output = engine.upsample(slices, 2, axis=0, keep_acquired=False, output_dtype=np.float32)
    low, high = percentile_range(array)
    reference = scale_to_unit_range(slices, low, high)
    reconstructed = scale_to_unit_range(output[::2], low, high)
    return dict(row, psnr=float(np.mean(psnr(reference, reconstructed))),
                ssim=float(np.mean(ssim(reference, reconstructed))), note=engine.describe())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoints", nargs="+", type=Path, required=True)
    parser.add_argument("--volumes", nargs="+", type=Path, required=True)
    parser.add_argument("--slices", type=int, default=41)
    parser.add_argument("--markdown", type=Path, help="also write the table here")
    args = parser.parse_args()
    lines = ["| checkpoint | model type | volume | slices | reconstruction PSNR (dB) | SSIM |", "|---|---|---|---|---|---|"]
    for volume in args.volumes:
        for checkpoint in args.checkpoints:
            r = reconstruction_scores(checkpoint, volume, args.slices)
            lines.append(f"| {r['checkpoint']} | {r['model_type']} | {r['volume']} | {r['slices']} | "
                         f"{r['psnr']:.2f} | {r['ssim']:.4f} |")
            print(lines[-1], flush=True)
    if args.markdown:
        args.markdown.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
