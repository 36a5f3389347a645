"""Errors a user can cause.

Every error that bad input can trigger is an :class:`InputError`: it names the offending file
(or column, or option) and says how to fix it. The command line prints it as one line on stderr
and exits with status 2; nothing else in painplast should need to catch it.
"""
from __future__ import annotations

from os import PathLike


class PainplastError(Exception):
    """Base class of painplast's own exceptions."""


class InputError(PainplastError, ValueError):
    """Bad input that the user can fix.

    Parameters
    ----------
    message : str
        What is wrong, in one sentence.
    path : str or path-like, optional
        The file (or directory) at fault; it is put first in the message.
    fix : str, optional
        What the user should do about it.

    Examples
    --------
    >>> str(InputError("column 'group' is missing", path="participants.tsv",
    ...                fix="add a group column with patient/control"))
    "participants.tsv: column 'group' is missing; fix: add a group column with patient/control"
    """

    def __init__(self, message: str, path: str | PathLike | None = None, fix: str | None = None):
        self.message = message
        self.path = None if path is None else str(path)
        self.fix = fix
        super().__init__(self._format())

    def _format(self) -> str:
        text = self.message if self.path is None else f"{self.path}: {self.message}"
        if self.fix:
            text += f"; fix: {self.fix}"
        return " ".join(text.split())  # always one line


class MissingColumnError(InputError):
    """An analysis needs a participants column that the dataset does not have."""


class NotAvailableError(PainplastError):
    """A feature that is not built yet (the CLI reports it with exit code 2)."""
