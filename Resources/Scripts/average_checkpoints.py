#!/usr/bin/env python
"""Average the weights of several checkpoints of one training run (stochastic weight averaging).

    python Resources/Scripts/average_checkpoints.py OUT.pt EPOCH1.pt EPOCH2.pt ... [--synthesis plain]

The inputs must be the same model type with the same configuration (an epoch's ``run.pt`` or
``run.best.pt``, or an exported checkpoint); each floating-point weight of the output is the mean of
the inputs' weights, integer buffers are taken from the first. This is meant for epochs of one run on
a plateau (Izmailov et al. 2018, "Averaging weights leads to wider optima"): the networks here have no
batch normalisation, so the average needs no recomputed statistics. The output keeps the first input's
intensity normalisation and in-plane spacing, records the inputs under ``training["averaged_from"]``,
and carries the given inference mode; it is written atomically and read back before this exits.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from SemanticInterpolationLib.errors import InputError
from SemanticInterpolationLib.models.checkpoint import inference_metadata, load_checkpoint, save_verified_checkpoint
from SemanticInterpolationLib.models.registry import model_type_of


def average_checkpoints(target: Path, sources: list[Path], synthesis: str = "plain", tta: str = "none") -> Path:
    """Write the weight average of ``sources`` to ``target`` (see the module docstring); returns ``target``."""
    if len(sources) < 2:
        raise InputError("give at least two checkpoints to average")
    checkpoints = [load_checkpoint(path) for path in sources]
    first = checkpoints[0]
    kind = model_type_of(first.model).name
    for path, checkpoint in zip(sources[1:], checkpoints[1:]):
        if model_type_of(checkpoint.model).name != kind or checkpoint.config != first.config:
            raise InputError(f"{path} is not the same network as {sources[0]} (model type and configuration must "
                             f"match): average epochs of one run only")
    states = [checkpoint.model.state_dict() for checkpoint in checkpoints]
    averaged = {}
    for name, value in states[0].items():
        if torch.is_floating_point(value):
            averaged[name] = torch.stack([state[name].double() for state in states]).mean(0).to(value.dtype)
        else:
            averaged[name] = value.clone()
    first.model.load_state_dict(averaged)
    training = dict(first.training)
    training["averaged_from"] = [str(path) for path in sources]
    # verified: it loads and holds the average
    return save_verified_checkpoint(target, first.model, normalization=first.normalization,
                                    in_plane_spacing_mm=first.in_plane_spacing_mm, training=training,
                                    metadata={"inference": inference_metadata(synthesis, tta)})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output", type=Path)
    parser.add_argument("checkpoints", type=Path, nargs="+")
    parser.add_argument("--synthesis", choices=("plain", "residual", "residual-bspline"), default="plain")
    parser.add_argument("--tta", choices=("none", "pair", "pair-flip", "dihedral"), default="none")
    args = parser.parse_args(argv)
    try:
        path = average_checkpoints(args.output, args.checkpoints, args.synthesis, args.tta)
    except (InputError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"averaged {len(args.checkpoints)} checkpoints -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
