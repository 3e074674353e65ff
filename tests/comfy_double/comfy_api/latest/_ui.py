"""Test double of ``comfy_api.latest._ui`` (the UI outputs the pack uses)."""

from __future__ import annotations

from abc import ABC, abstractmethod


class _UIOutput(ABC):
    def __init__(self):
        pass

    @abstractmethod
    def as_dict(self) -> dict:
        ...


class PreviewText(_UIOutput):
    def __init__(self, value: str, **kwargs):
        self.value = value

    def as_dict(self):
        return {"text": (self.value,)}


class PreviewImage(_UIOutput):
    def __init__(self, image, animated: bool = False, cls=None, **kwargs):
        self.image = image
        self.animated = animated

    def as_dict(self):
        return {"images": [{"filename": "preview.png", "subfolder": "", "type": "temp"}] * int(self.image.shape[0]),
                "animated": (self.animated,)}


__all__ = ["PreviewText", "PreviewImage"]
