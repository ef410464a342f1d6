"""Exceptions raised by SemanticInterpolationLib.

Every error a user can cause (bad input file, bad option, bad checkpoint) is a
:class:`SemanticInterpolationError`, whose message names the problem and the fix.
The command line prints such messages as one line; anything else is a bug.
"""

from __future__ import annotations


class SemanticInterpolationError(Exception):
    """Base class of all errors that are the user's input, not a bug."""


class InputError(SemanticInterpolationError, ValueError):
    """An input volume, option or path that cannot be used as given."""


class CheckpointError(SemanticInterpolationError):
    """A checkpoint file that is missing, corrupt, unsafe or for another architecture."""


class DeviceError(SemanticInterpolationError):
    """A requested compute device that is not available."""


class OperationCancelled(SemanticInterpolationError):
    """Raised when the caller's cancel callback asked to stop a long operation."""
