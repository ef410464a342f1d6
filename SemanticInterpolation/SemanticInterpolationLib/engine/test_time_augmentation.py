"""Test-time augmentation (TTA) for networks whose per-slice state is the slice itself (``pair-unet``).

A new slice is the mean of the network's predictions over views of the same question:

* ``"pair"``: the pair in both orders, ``f(a, b, alpha)`` and ``f(b, a, 1 - alpha)`` (2 network calls);
* ``"pair-flip"``: both orders, each also on the in-plane mirror image (flipped along the width axis
  and flipped back; 4 calls);
* ``"dihedral"``: both orders on all eight in-plane symmetries of the square (four quarter turns, each
  also mirrored; turned and flipped back; 16 calls);
* ``"none"``: one call.

Each view is a valid input (the pair U-Net was trained on both orders and on turned and mirrored
patches), so the mean keeps the answer and averages out part of each view's error. On the validation
volume (ROBEX, see ``Docs/Experiments.md``) ``pair-flip`` raised PSNR at every K tried, and
``dihedral`` another 0.01-0.05 dB (session 8: ten of ten cells, the bundled default) for four times
the time. A mode costs its number of calls in time, not in memory (the views run one after another).
Tensors are ``[N, C, H, W]``; a quarter turn swaps H and W, which the network takes as it is.
"""

from __future__ import annotations

from typing import Callable

import torch

from ..errors import InputError

#: the modes, in order of cost; "auto" (an argument value, not a mode) = the checkpoint's recommendation
TTA_MODES = ("none", "pair", "pair-flip", "dihedral")
#: network calls per new slice
TTA_CALLS = {"none": 1, "pair": 2, "pair-flip": 4, "dihedral": 16}


def validate_tta(mode: str, model: torch.nn.Module | type | str | None, *, allow_auto: bool = False,
                 subject: str | None = None, fix: str = "use --tta none (or auto)") -> str:
    """``mode`` checked against :data:`TTA_MODES` (and ``"auto"`` when ``allow_auto``) and against the network:
    only networks whose state is the slice can be flipped and swapped (class attribute
    ``supports_test_time_augmentation``). ``model``: a network, its class or a registered model-type name
    (None: only ``"auto"`` and ``"none"`` pass). ``subject`` and ``fix`` word the refusal for the caller
    (default: the command line's)."""
    allowed = ("auto", *TTA_MODES) if allow_auto else TTA_MODES
    if not isinstance(mode, str) or mode not in allowed:
        raise InputError(f"test-time augmentation must be one of {', '.join(allowed)}"
                         f"{'' if allow_auto else ' (or auto)'}, got {mode!r}")
    if mode in ("auto", "none"):
        return mode
    from ..models.registry import get_model_type, model_type_of

    if model is None:
        raise InputError(f"test-time augmentation {mode!r} needs a network to check it against")
    if isinstance(model, str):
        type_name, network_class = model, get_model_type(model).model_class
    else:
        network_class = model if isinstance(model, type) else type(model)
        type_name = model_type_of(model).name if not isinstance(model, type) else network_class.__name__
    if not getattr(network_class, "supports_test_time_augmentation", False):
        raise InputError(f"test-time augmentation {mode!r} applies to networks whose state is the slice (pair-unet, "
                         f"profile-routed); {subject or 'this'} is a {type_name} model: {fix}")
    return mode


def augmented_synthesis(synthesize: Callable[..., torch.Tensor], mode: str, first: torch.Tensor,
                        second: torch.Tensor, alpha: torch.Tensor | float, *extra: torch.Tensor,
                        **keywords) -> torch.Tensor:
    """Mean of ``synthesize(first, second, alpha, *extra, **keywords)`` over the views of ``mode``.

    ``extra``: per-slice image inputs of the new slice (the B-spline anchor), flipped with the pair;
    ``keywords`` (the slice profile) are the same for every view. ``alpha``: a float or ``[N]``.
    """
    if mode == "none":
        return synthesize(first, second, alpha, *extra, **keywords)
    flips = [False, True] if mode in ("pair-flip", "dihedral") else [False]
    turns = [0, 1, 2, 3] if mode == "dihedral" else [0]
    total, count = None, 0
    for turn in turns:
        for flipped in flips:
            def view(t: torch.Tensor) -> torch.Tensor:
                t = torch.rot90(t, turn, (-2, -1)) if turn else t
                return torch.flip(t, (-1,)) if flipped else t

            def unview(t: torch.Tensor) -> torch.Tensor:
                t = torch.flip(t, (-1,)) if flipped else t
                return torch.rot90(t, -turn, (-2, -1)) if turn else t

            a, b = view(first), view(second)
            images = tuple(view(t) for t in extra)
            for swapped in (False, True):
                out = (synthesize(b, a, 1.0 - alpha, *images, **keywords) if swapped
                       else synthesize(a, b, alpha, *images, **keywords)).float()
                out = unview(out)
                total = out if total is None else total + out
                count += 1
    return total / count
