#!/usr/bin/env python
"""Write a copy of a volume with Rician noise, for evaluating in a noisy single-subject regime.

    python Resources/Scripts/make_noisy_volume.py ~/.cache/semantic-interpolation/data/colin27/ch2.nii.gz \\
        ~/.cache/semantic-interpolation/data/colin27-noisy/ch2-rician3.nii.gz --fraction 0.03 --seed 2026

Noise: the magnitude of (x + n1, n2) with n1, n2 ~ N(0, s) independent per voxel and
s = FRACTION x the volume's 99th percentile (the noise of a magnitude MR image); float32 output with
the input's geometry. The model card's "Colin27 + Rician 3 %" held-out volume is this command.
Blurring such a volume into thick slices (``evaluate --thick-slices``) leaks the scored slices' noise into
the simulated inputs; ``evaluate --acquisition-noise`` on the clean volume simulates noisy thick slices
without that leak.
"""

from __future__ import annotations

import argparse

import numpy as np
import SimpleITK as sitk

from SemanticInterpolationLib.evaluation.simulate import add_rician_noise, noise_sigma


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input")
    parser.add_argument("output")
    parser.add_argument("--fraction", type=float, default=0.03)
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args()
    image = sitk.ReadImage(args.input)
    values = sitk.GetArrayFromImage(image).astype(np.float32)  # [k, j, i]
    rng = np.random.default_rng(args.seed)
    sigma = noise_sigma(values, args.fraction)
    noisy = add_rician_noise(values, sigma, rng)  # the same draws, in the same order, as before this was shared
    result = sitk.GetImageFromArray(noisy)
    result.CopyInformation(image)
    sitk.WriteImage(result, args.output)
    print(f"{args.output}: Rician noise, sigma {sigma:g} ({args.fraction:g} of the 99th percentile)")


if __name__ == "__main__":
    main()
