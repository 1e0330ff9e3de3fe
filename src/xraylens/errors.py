"""Exceptions raised by xraylens.

Every error carries a message a user can act on: the file, argument or plugin at fault and the
cause. Library code raises these instead of letting a traceback from deep inside torch escape.
"""

from __future__ import annotations


class XraylensError(Exception):
    """Base class of every error raised on purpose by xraylens."""


class UnknownPluginError(XraylensError, KeyError):
    """An unknown classifier, attributor or profiler name; the message lists close matches.

    A ``KeyError`` so that ``except KeyError`` keeps working, but printed as plain text (a bare
    ``KeyError`` would quote the message).
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class PluginConflictError(XraylensError, ValueError):
    """Two plugins registered the same name; the message names both."""


class InputError(XraylensError, ValueError):
    """A tensor, argument or target given to xraylens has the wrong shape, type or value."""


class ImageReadError(XraylensError, OSError):
    """An image file could not be read; the message names the file and the cause."""

    def __init__(self, path, cause: str):
        self.path = str(path)
        self.cause = cause
        super().__init__(f"cannot read image {self.path!s}: {cause}")

    def __str__(self) -> str:
        return f"cannot read image {self.path}: {self.cause}"

    def __reduce__(self):  # keep picklable (DataLoader workers send errors across processes)
        return (type(self), (self.path, self.cause))


class WeightsError(XraylensError, RuntimeError):
    """Model weights could not be found, downloaded or loaded; the message says which and why."""
