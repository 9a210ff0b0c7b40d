"""Errors for bad input, and the one policy that decides between raising and counting a skip.

Every check in the bridge builds a :class:`BridgeInputError` (naming the file, the record and the
reason) and hands it to :class:`ErrorPolicy.report`. With ``on_error="raise"`` the error is raised as
is; with ``on_error="skip"`` it is counted under its reason and kept as an example for the summary.
One code path for both modes means a skipped input is described exactly as the error would have
described it: nothing is ever dropped silently.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

OnError = Literal["raise", "skip"]
MAX_EXAMPLES_PER_REASON = 5


class ExpectedError(Exception):
    """The project's one base of expected failures: ones a user can fix (a bad file, a wrong option, a folder
    in use). ``lowres``'s CLI guard turns exactly these into a message and ``exit_code``; anything else that
    reaches it is a bug (a crash log). It lives here, in the lower package, because ``detection_bridge`` never
    imports ``lowres``; ``lowres.errors.LowresError`` derives from it."""

    exit_code = 1


class BridgeError(ExpectedError):
    """Base class of every error the bridge raises on purpose."""


class BridgeInputError(BridgeError, ValueError):
    """An input file or one record in it cannot be used.

    ``reason`` is a short stable code (``"missing_image"``, ``"bad_box"``, ...) used as the key of
    skip counts; ``detail`` is the human explanation.
    """

    def __init__(self, file: str | None, record: str | None, reason: str, detail: str) -> None:
        self.file = None if file is None else str(file)
        self.record = record
        self.reason = reason
        self.detail = detail
        where = self.file or "<input>"
        if record:
            where = f"{where}: {record}"
        super().__init__(f"{where}: {detail} [{reason}]")


class MalformedFileError(BridgeInputError):
    """A whole file is unusable (not JSON, wrong top-level structure); never skippable."""


class AnnotationError(BridgeInputError):
    """One annotation or detection is unusable (unknown image or category, bad box, bad score)."""


class ImageError(BridgeInputError):
    """An image is missing, unreadable, truncated, or not the size its annotation says."""


class EmptyResultError(BridgeInputError):
    """Nothing usable is left after filtering: a dataset of zero crops is almost always a mistake."""


class CacheError(BridgeError):
    """A crop cache on disk is inconsistent with its index (truncated, edited, wrong shape)."""


@dataclass
class SkipLog:
    """Counts of skipped inputs by reason, with a few examples of each for the summary."""

    counts: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, error: BridgeInputError, n: int = 1) -> None:
        self.counts[error.reason] += n
        shown = self.examples.setdefault(error.reason, [])
        if len(shown) < MAX_EXAMPLES_PER_REASON:
            shown.append(str(error))

    def merge(self, other: "SkipLog") -> None:
        for reason, n in other.counts.items():
            self.counts[reason] += n
            shown = self.examples.setdefault(reason, [])
            room = MAX_EXAMPLES_PER_REASON - len(shown)
            shown.extend(other.examples.get(reason, [])[:max(room, 0)])

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def to_dict(self) -> dict[str, Any]:
        return {"total": self.total, "by_reason": dict(sorted(self.counts.items())),
                "examples": {k: list(v) for k, v in sorted(self.examples.items())}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SkipLog":
        return cls(Counter(data.get("by_reason", {})), {k: list(v) for k, v in data.get("examples", {}).items()})


class ErrorPolicy:
    """Raise or count: the single switch behind every ``on_error`` argument."""

    def __init__(self, on_error: OnError = "raise", log: SkipLog | None = None) -> None:
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        self.on_error = on_error
        self.log = log if log is not None else SkipLog()

    def report(self, error: BridgeInputError, n: int = 1) -> None:
        """Raise ``error`` or count it ``n`` times (``n`` > 1 when one bad image drops several boxes)."""
        if self.on_error == "raise" or isinstance(error, MalformedFileError):
            raise error
        self.log.add(error, n)
