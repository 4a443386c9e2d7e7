"""Errors the ``dwgf`` command reports as one line (``dwgf <verb>: error: <message>``) instead of a traceback.

:data:`EXPECTED` lists them: bad input (``ValueError``, including :class:`dwgf.pipeline.config.ConfigError`), a
missing file (``FileNotFoundError``), an unknown coordinate (``LookupError``, but not its subclasses ``KeyError`` and
``IndexError``, which are programming errors) and :class:`DwgfError` (a refused operation: a locked results folder,
a folder that is not a suite's results). Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class DwgfError(Exception):
    """An operation refused for a reason the message states (no traceback needed).

    ``log``: a file with more detail, printed after the message when given.
    """

    def __init__(self, message: str, log: str | None = None):
        super().__init__(message)
        self.log = log


EXPECTED = (DwgfError, ValueError, FileNotFoundError, LookupError)
PROGRAMMING_ERRORS = (KeyError, IndexError)


def is_expected(error: BaseException) -> bool:
    """Whether ``error`` is reported as one line (module docstring)."""
    return isinstance(error, EXPECTED) and not isinstance(error, PROGRAMMING_ERRORS)
