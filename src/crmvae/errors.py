"""User-facing error types.

Every error a user can cause (bad configuration, bad data, bad checkpoint, an unwritable
location) is raised as a subclass of :class:`CrmvaeError` with a message that says what was
wrong and where. The CLI prints such messages without a traceback.
"""


class CrmvaeError(Exception):
    """Base class of all errors caused by user input."""


class ConfigError(CrmvaeError, ValueError):
    """An unknown name, a bad override or an invalid configuration value."""


class DataError(CrmvaeError, ValueError):
    """Data that is missing, corrupt, or of the wrong shape, dtype or range."""


class CheckpointError(CrmvaeError):
    """A checkpoint that is missing, unreadable or incompatible."""


class WriteError(CrmvaeError):
    """A file or folder that cannot be written: no permission, read-only or full disk."""


class NonFiniteLossError(CrmvaeError, FloatingPointError):
    """A loss term became NaN or infinite during training."""
