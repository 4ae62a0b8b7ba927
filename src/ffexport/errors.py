"""One exception root and two kinds of failure.

``FFExportError`` and its subclasses are *user* errors: a bad path, an unknown
name, a missing optional dependency, a parity gate that failed.  The CLI prints
them as a single line and exits non-zero.  Anything else is a bug in ffexport
and keeps its traceback.
"""

from __future__ import annotations


class FFExportError(Exception):
    """A failure the user can act on. ``str(err)`` is the one line the CLI prints."""

    exit_code = 1


class UnknownNameError(FFExportError, KeyError):
    """A module, variant, backend or precision name that is not registered."""

    def __init__(self, what: str, name: str, valid):
        self.what, self.name, self.valid = what, name, sorted(valid)
        super().__init__(f"unknown {what} {name!r}; valid: {', '.join(self.valid)}")

    def __str__(self) -> str:  # KeyError would add quotes
        return self.args[0]


class MissingDependencyError(FFExportError, ImportError):
    """An optional dependency is not installed."""


class CheckpointError(FFExportError):
    """A checkpoint cannot be read or does not match the model."""


class InputSpecError(FFExportError, ValueError):
    """A malformed ``--input name:1x3x112x112`` spec or a tensor that breaks a spec."""


class OutputExistsError(FFExportError):
    """An artifact exists and ``--force`` was not given."""


class OutputNotWritableError(FFExportError):
    """The output folder cannot be written."""


class ParityError(FFExportError):
    """A converted model does not match its parent within the module's gate."""


class CalibrationError(FFExportError):
    """Calibration data is missing, unreadable or too small."""


class ArtifactError(FFExportError):
    """An artifact is missing, corrupt, or its IO contract does not match its spec."""


class ConfigError(FFExportError):
    """A malformed file under ``configs/``."""


class ModelLoadError(FFExportError):
    """An ONNX model or engine cannot be loaded, parsed or built."""


class RuntimeUnavailableError(FFExportError):
    """A backend cannot run here (no runtime, no GPU, unsupported compute capability)."""


class MediaError(FFExportError):
    """An image or video that cannot be read, decoded or written."""


class NoFaceError(FFExportError):
    """A face was required and none was found."""
