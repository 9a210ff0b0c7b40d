"""The project's exception types: every failure a user can fix is one of these (one base class).

:class:`LowresError` derives from :class:`detection_bridge.errors.ExpectedError`, the base the bridge's own
errors share, so the CLI guard (:mod:`lowres._cli_guard`) catches one class and is the only place that turns
it into a message and an exit code (``exit_code``: 1, 2 for config mistakes as click's usage errors, 130 for
an interrupt). Anything else that reaches the guard, a ``ValueError`` included, is a bug and gets a crash log.

Library code raises these with the message the user will read: the file, the key or the value, and the reason.
Types that callers used to catch as ``ValueError`` or ``RuntimeError`` keep that base too, so ``except
ValueError`` in code written against older versions still works.
"""
from __future__ import annotations

from detection_bridge.errors import ExpectedError

__all__ = ["ExpectedError", "LowresError", "InputError", "ConfigError", "CheckpointError", "NotACheckpointError",
           "FolderLockedError",
           "TrainingDiverged", "TrainingInterrupted", "BenchError"]


class LowresError(ExpectedError):
    """Base class of every error ``lowres`` raises on purpose."""


class InputError(LowresError, ValueError):
    """A value given to lowres (an option, a file's content, a tensor of the wrong shape) cannot be used."""


class ConfigError(LowresError, ValueError):
    """A config key is unknown or its value has the wrong type or range (the message names the key)."""

    exit_code = 2


class CheckpointError(LowresError, RuntimeError):
    """A checkpoint is missing, unreadable or incompatible with the requested run."""


class NotACheckpointError(CheckpointError):
    """The file is not a lowres checkpoint at all (another format, a foreign state dict): a reader that also
    takes other weight files tries those next."""


class FolderLockedError(LowresError, RuntimeError):
    """Another live process holds the folder's lock."""


class TrainingDiverged(LowresError, RuntimeError):
    """The loss or the gradients became NaN or infinite: continuing would only spread NaN into the weights."""


class TrainingInterrupted(LowresError):
    """Ctrl-C (SIGINT) stopped training after a checkpoint was written; the message says how to continue.

    ``step`` and ``checkpoint`` (the optimiser step and the file that holds it) let a caller that runs training
    for its own command (``lowres bench``) say how to continue that command instead."""

    exit_code = 130

    def __init__(self, message: str, *, step: int | None = None, checkpoint: str | None = None) -> None:
        super().__init__(message)
        self.step = step
        self.checkpoint = checkpoint


class BenchError(LowresError, RuntimeError):
    """A report folder holds runs of another configuration, or a run cannot be read back."""
