"""The pack's error classes: one base, one subclass per cause.

Every error the library raises on purpose is an :class:`AwareRestoreError`; front ends (the ComfyUI nodes, the
CLI) show its message as it is — it names the input, what was found and what to do. The base derives from
``ValueError`` so callers that catch ``ValueError`` keep working.

::

    AwareRestoreError
    ├── ModelLoadError            a model could not be loaded
    │   ├── CheckpointError       the file cannot be read (empty, text, truncated, foreign pickle, ...)
    │   ├── WrongModelError       the file is readable but belongs to another model family
    │   ├── ConfigError           the tensors do not describe a model this code can build
    │   └── StrictLoadError       the tensors do not fit the model built from their shapes
    ├── InputError                bad input: image layout, batch sizes, non-finite pixels, socket payloads
    │   ├── PayloadError          an object of the wrong kind on a socket (also a TypeError)
    │   ├── ContextMismatchError  embeddings of the wrong width for the model they are given to
    │   └── MissingImageStatesError  a SeeSR model called without its DAPE image embeddings
    └── DownloadError             an official file could not be downloaded
"""

from __future__ import annotations


class AwareRestoreError(ValueError):
    """Base class of every error the pack raises on purpose."""


class ModelLoadError(AwareRestoreError):
    """A model could not be loaded (see the subclasses for the cause)."""


class CheckpointError(ModelLoadError):
    """A checkpoint file could not be read safely, or holds no usable weights.

    ``kind`` says what the file looks like (``missing``, ``empty``, ``text``, ``safetensors``, ``zip``,
    ``truncated``, ``pickle-globals``, ``not-a-state-dict``, ``unknown``) so callers can list it."""

    def __init__(self, message: str, kind: str = "unknown", path: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.path = path


class WrongModelError(ModelLoadError):
    """A file of another model family was given where a specific family is required."""


class ConfigError(ModelLoadError):
    """The state dict does not describe a model this code can build (hyper-parameters cannot be inferred)."""


class StrictLoadError(ModelLoadError):
    """The tensors do not fit the model built from their shapes (missing, unexpected or mis-shaped keys)."""


class InputError(AwareRestoreError):
    """An input of an unsupported layout, size, value or type was given."""


# The image helpers' historical name.
ImageInputError = InputError


class PayloadError(InputError, TypeError):
    """A socket or argument carries an object of the wrong kind (e.g. a DA-CLIP model where an SSEN model is
    expected). Also a ``TypeError``."""


class ContextMismatchError(InputError):
    """Embeddings do not have the width the model was trained with."""


class MissingImageStatesError(InputError):
    """A model with SeeSR image cross-attention was called without the DAPE image embeddings."""


class DownloadError(AwareRestoreError):
    """An official weight file could not be downloaded."""
