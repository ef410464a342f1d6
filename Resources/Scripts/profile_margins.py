#!/usr/bin/env python
"""How clearly each checkpoint's slice-profile estimate separates thin from thick slices on a fine volume.

    python Resources/Scripts/profile_margins.py VOLUME CKPT [CKPT ...] [--factors 2,4,6] [--axis 2]

For a network with a slice-profile input the estimate (``engine/profile_estimate.py``) is only as good
as the network's answers to the told profile, and training on from a good epoch can erode it while the
validation synthesis PSNR stays flat (``Docs/Experiments.md``, session 6). This prints, for each
checkpoint and each factor K, the relative margins (thin error − thick error) / thin error of the plain
and of the views' comparison and the choice, on the volume thinned to every K-th slice (thin slices:
the choice should be thin) and on its simulated thick-slice copy (Gaussian through-plane blur of FWHM
K slices, then thinned: the choice should be thick), then the count of right calls. Use it on the
validation volume to choose among epochs; never on a held-out one.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from SemanticInterpolationLib.engine.synthesis import ASIEngine
from SemanticInterpolationLib.errors import InputError
from SemanticInterpolationLib.evaluation.simulate import simulate_thick_slices
from SemanticInterpolationLib.models.checkpoint import load_checkpoint


def profile_margins(volume: sitk.Image, checkpoints: list[Path], factors: list[int], axis: int = 2) -> list[dict]:
    """One row per checkpoint, factor and setting: ``checkpoint``, ``factor``, ``truth`` (thin or thick),
    ``plain_margin``, ``view_margin`` (None without views) and ``choice``. ``axis``: ITK index axis."""
    rows = []
    lows = {(k, thick): np.moveaxis(sitk.GetArrayFromImage(simulate_thick_slices(volume, k, axis, thick).low)
                                    .astype(np.float32), 2 - axis, 0)
            for k in factors for thick in (False, True)}
    for path in checkpoints:
        engine = ASIEngine(load_checkpoint(path), "cpu", test_time_augmentation="none")
        if not engine.takes_slice_profile:
            raise InputError(f"{path}: this network has no slice-profile input, so it makes no estimate")
        for (factor, thick), low in lows.items():
            estimate = engine.estimate_slice_profile(low, factor, 0)
            if estimate is None:
                raise InputError(f"K = {factor} leaves too few slices for an estimate: use a smaller factor")
            view = (None if estimate.view_thin_error is None
                    else (estimate.view_thin_error - estimate.view_thick_error) / estimate.view_thin_error)
            rows.append({"checkpoint": str(path), "factor": factor, "truth": "thick" if thick else "thin",
                         "plain_margin": (estimate.thin_error - estimate.thick_error) / estimate.thin_error,
                         "view_margin": view, "choice": estimate.choice})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("volume", type=Path, help="a fine (thin-slice) volume: the validation volume")
    parser.add_argument("checkpoints", type=Path, nargs="+")
    parser.add_argument("--factors", default="2,4,6", help="comma-separated K (default 2,4,6)")
    parser.add_argument("--axis", type=int, choices=(0, 1, 2), default=2, help="ITK index axis of the slices")
    args = parser.parse_args(argv)
    try:
        factors = [int(k) for k in args.factors.split(",")]
        rows = profile_margins(sitk.ReadImage(str(args.volume)), args.checkpoints, factors, args.axis)
    except (InputError, ValueError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print("| checkpoint | K | slices | plain margin | view margin | choice |")
    print("|---|---|---|---|---|---|")
    right: dict[str, int] = {}
    for row in rows:
        view = "—" if row["view_margin"] is None else f"{100 * row['view_margin']:+.1f} %"
        print(f"| {Path(row['checkpoint']).name} | {row['factor']} | {row['truth']} | "
              f"{100 * row['plain_margin']:+.1f} % | {view} | {row['choice']} |")
        right[row["checkpoint"]] = right.get(row["checkpoint"], 0) + int(row["choice"] == row["truth"])
    for path, count in right.items():
        print(f"{Path(path).name}: {count} of {2 * len(factors)} right")
    return 0


if __name__ == "__main__":
    sys.exit(main())
