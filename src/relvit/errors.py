"""The errors a user meets: each becomes one message and an exit code, never a traceback.

``UserError``: bad input (config, files, data), found before work starts; exit code 2. train.py and
evaluate.py catch this class alone, so every user error derives from it.
``RunFailed``: a run that started but could not finish truly (non-finite loss, failed save); exit code 1.
``ProcessDied``: another process of a multi-process (DDP) run died; the run can be resumed from its
last checkpoint; exit code 75 (``EX_TEMPFAIL``: try again).
"""
from __future__ import annotations


class UserError(Exception):
    """Bad input; the message names the key or file and what is valid."""


class ConfigError(UserError, ValueError):
    """A config value is invalid; the message names the key, the value and what is valid."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or folder the user named does not exist."""


class WouldOverwriteError(UserError, FileExistsError):
    """The step would overwrite something already there; nothing was changed."""


class RunFailed(RuntimeError):
    """The run stopped because its results could not be trusted or kept."""


class ProcessDied(RunFailed):
    """Another process of this multi-process run died (killed, crashed): this one cannot go on alone.
    The message names the process, when known, and the checkpoint to resume."""
