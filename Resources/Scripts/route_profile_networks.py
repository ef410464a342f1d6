#!/usr/bin/env python
"""Join two trained pair U-Nets into one profile-routed model (``models/profile_routed.py``).

    python Resources/Scripts/route_profile_networks.py OUT.pt MAIN.pt THICK.pt [--thick-from 0.75] [--tta pair-flip]
        [--estimator ESTIMATOR.pt]

``MAIN`` answers thin slices and scans whose slice profile is not known, and makes the slice-profile
estimate unless ``--estimator`` names another network for that (one that answers no slice); ``THICK``
answers slices told thickness / gap >= ``--thick-from``. All must be ``pair-unet`` checkpoints with the
slice-profile input and the same intensity normalisation. The output keeps MAIN's normalisation and in-plane
spacing, records every input (path and weights digest) under ``training["routed_from"]``, carries the given
inference mode, and is written atomically and read back before this exits. No input is modified.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from SemanticInterpolationLib.engine.test_time_augmentation import TTA_MODES
from SemanticInterpolationLib.errors import CheckpointError, InputError
from SemanticInterpolationLib.models.checkpoint import inference_metadata, load_checkpoint, save_verified_checkpoint
from SemanticInterpolationLib.models.profile_routed import DEFAULT_THICK_FROM_RATIO, ProfileRoutedPairUNet


def route_profile_networks(target: Path, main: Path, thick: Path, thick_from: float = DEFAULT_THICK_FROM_RATIO,
                           tta: str = "none", estimator: Path | None = None) -> Path:
    """Write the profile-routed model of ``main``, ``thick`` and optionally ``estimator`` to ``target`` (see the
    module docstring)."""
    sources = {"main": main, "thick": thick}
    if estimator is not None:
        sources["estimator"] = estimator
    if Path(target).expanduser().absolute() in {Path(path).expanduser().absolute() for path in sources.values()}:
        raise InputError(f"the output {target} is one of the inputs: write the routed model to a new file")
    members = {}
    for role, path in sources.items():
        checkpoint = load_checkpoint(path)
        if checkpoint.model_type != "pair-unet":
            raise InputError(f"{path} is a {checkpoint.model_type} model; the {role} network must be a pair-unet "
                             "checkpoint")
        if not checkpoint.model.config.thickness_input:
            raise InputError(f"{path} does not take the slice profile, so it cannot be chosen by it: train or widen "
                             "it with --thickness-input first")
        members[role] = checkpoint
    for role, checkpoint in members.items():
        if checkpoint.normalization.to_dict() != members["main"].normalization.to_dict():
            raise InputError(f"{main} and {sources[role]} normalise intensities differently; every network must see "
                             "the same input: join networks trained with the same normalisation")
    if tta not in TTA_MODES:
        raise InputError(f"test-time augmentation must be one of {', '.join(TTA_MODES)}, got {tta!r}")
    try:
        routed = ProfileRoutedPairUNet.from_networks(
            members["main"].model, members["thick"].model, thick_from,
            estimator=members["estimator"].model if "estimator" in members else None)
    except ValueError as error:
        raise InputError(str(error)) from None
    first = members["main"]
    training = dict(first.training)
    training["routed_from"] = {role: {"path": str(path), "weights_sha256": members[role].metadata.get("weights_sha256"),
                                      "training": members[role].training}
                               for role, path in sources.items()}
    # verified: it loads, is routed, and holds every network's weights
    return save_verified_checkpoint(target, routed, normalization=first.normalization,
                                    in_plane_spacing_mm=first.in_plane_spacing_mm, training=training,
                                    metadata={"inference": inference_metadata("plain", tta)})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output", type=Path)
    parser.add_argument("main", type=Path, help="pair-unet checkpoint for thin slices and an unknown profile")
    parser.add_argument("thick", type=Path, help="pair-unet checkpoint for thick slices")
    parser.add_argument("--thick-from", type=float, default=DEFAULT_THICK_FROM_RATIO, metavar="RATIO",
                        help=f"thickness / gap from which THICK answers (default {DEFAULT_THICK_FROM_RATIO})")
    parser.add_argument("--tta", choices=TTA_MODES, default="none",
                        help="test-time augmentation the output recommends (default none)")
    parser.add_argument("--estimator", type=Path, metavar="CHECKPOINT",
                        help="pair-unet checkpoint that makes the slice-profile estimate instead of MAIN (it answers no "
                             "slice), e.g. the network whose estimate was checked when MAIN is trained on")
    args = parser.parse_args(argv)
    try:
        path = route_profile_networks(args.output, args.main, args.thick, args.thick_from, args.tta, args.estimator)
    except (InputError, CheckpointError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    estimate = f", slice-profile estimate by {args.estimator}" if args.estimator else ""
    print(f"routed {args.main} (main) and {args.thick} (thick from thickness/gap {args.thick_from:g}){estimate} "
          f"-> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
