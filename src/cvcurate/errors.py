"""One family of errors for everything a user can get wrong.

The CLI turns a :class:`CvcurateError` into one line on stderr and its ``exit_code``;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class CvcurateError(Exception):
    """Base class: a problem with the user's input or environment, not a bug."""

    exit_code = 2


class InputError(CvcurateError):
    """Bad input data: a missing folder, an unreadable file, an unknown format."""


class ConfigError(CvcurateError):
    """A configuration file or option is wrong (unknown key, bad value)."""


class DatasetNotFoundError(CvcurateError):
    """A named dataset does not exist in the store."""


class DatasetExistsError(CvcurateError):
    """A dataset of that name exists and the command would overwrite it."""


class StoreError(CvcurateError):
    """The FiftyOne database cannot be reached or a write failed."""


class GateFailed(CvcurateError):
    """The data is not fit to train on (quality gate)."""

    exit_code = 1
