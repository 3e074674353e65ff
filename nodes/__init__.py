"""ComfyUI nodes of AwareRestore (the only package that imports ComfyUI modules).

Each family module defines ``NODES``. A family whose optional dependencies are missing is skipped with a
logged warning instead of breaking the whole pack.
"""

from __future__ import annotations

import importlib
import logging

from comfy_api.latest import ComfyExtension, io

from . import common

log = logging.getLogger(__name__)

FAMILY_MODULES = ("utils", "daclip", "irsde", "dape", "seesr", "ssen", "auto")


def collect_nodes() -> list[type[io.ComfyNode]]:
    nodes: list[type[io.ComfyNode]] = []
    for name in FAMILY_MODULES:
        try:
            module = importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.endswith(f"nodes.{name}"):
                continue  # family not present in this build
            log.warning("AwareRestore: %s nodes disabled, a dependency is missing: %s", name, exc)
            continue
        except ImportError as exc:
            log.warning("AwareRestore: %s nodes disabled: %s", name, exc)
            continue
        nodes.extend(module.NODES)
    return nodes


class AwareRestoreExtension(ComfyExtension):
    async def on_load(self) -> None:
        common.register_model_folders()

    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        common.register_model_folders()
        return collect_nodes()
