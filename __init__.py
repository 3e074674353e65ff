"""AwareRestore: degradation-, semantics- and similarity-aware image restoration for ComfyUI.

Loaded by ComfyUI from ``custom_nodes/<any folder>/`` through ``comfy_entrypoint`` (V3 API), or used as the
library ``aware_restore`` (``pip install -e .``). Importing this package has no side effects and does not
import ComfyUI; the node modules are imported only when ComfyUI asks for them.
"""

__version__ = "0.1.0"

# Front-end extension that shows the text nodes return (tags, degradation tables) on the node.
WEB_DIRECTORY = "./web"


async def comfy_entrypoint():
    """ComfyUI V3 entry point: returns the extension that lists the nodes."""
    from .nodes import AwareRestoreExtension

    return AwareRestoreExtension()
