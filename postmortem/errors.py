"""The exceptions postmortem raises on purpose.

    PostmortemError                 anything postmortem explains itself (CLI exit 1)
    ├── InputError                  unusable input: one line naming the file and the problem (exit 2)
    │   ├── ConfigError             a bad option or postmortem.toml entry
    │   ├── CheckpointError         one checkpoint cannot be read or does not fit the model
    │   │   └── UnsafeCheckpointError   its pickle would run code; refused without --trust-checkpoints
    │   ├── DataError               the validation set or a model's outputs do not fit together
    │   │   └── NonFiniteOutputsError   a checkpoint's outputs hold NaN or inf for some counted items
    │   └── UserCodeError           the user's spec code raised; carries the tail of its traceback
    └── CacheError                  a cache entry is unreadable (recomputed, never fatal)

A CheckpointError or DataError raised for one checkpoint skips that checkpoint, not the run; when
every checkpoint fails, the run stops with exit status 2. A UserCodeError stops the run at once.
"""
from __future__ import annotations

__all__ = [
    "PostmortemError",
    "InputError",
    "ConfigError",
    "CheckpointError",
    "UnsafeCheckpointError",
    "DataError",
    "NonFiniteOutputsError",
    "UserCodeError",
    "CacheError",
]


class PostmortemError(Exception):
    """Base class of every error postmortem raises deliberately."""


class InputError(PostmortemError):
    """The user's input cannot be used; the message names the file and what is wrong."""


class ConfigError(InputError):
    """An option, on the command line or in postmortem.toml, has an unusable value."""


class CheckpointError(InputError):
    """A checkpoint file cannot be read, or its weights do not fit the model."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint needs unpickling arbitrary code; refused unless the user trusts it."""


class DataError(InputError):
    """The validation data, or a model's outputs for it, have the wrong shape or values."""


class NonFiniteOutputsError(DataError):
    """Some counted items' outputs are NaN or inf; `n_nonfinite` of `n_counted` items (that epoch is skipped)."""

    def __init__(self, message: str, n_nonfinite: int = 0, n_counted: int = 0, epoch: int | None = None):
        super().__init__(message)
        self.n_nonfinite = n_nonfinite
        self.n_counted = n_counted
        self.epoch = epoch


class UserCodeError(InputError):
    """Code from the user's spec file raised; the message ends with its own traceback tail."""


class CacheError(PostmortemError):
    """A cached evaluation cannot be read back; the caller recomputes it."""
