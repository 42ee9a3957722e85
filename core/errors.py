"""Errors a user can fix. `run.py` turns them into one line on stderr and exit code 2."""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user: a missing dataset, a wrong option, a corrupt file.

    The message is one line that says what is wrong and how to fix it.
    """


class ArchError(UserError, ValueError):
    """A malformed architecture; the message names the offending part."""


class CheckpointError(UserError):
    """A checkpoint that cannot be read: truncated, corrupt, unsafe or from another run."""
