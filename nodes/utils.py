"""Utility nodes: ARColorFix (SeeSR's AdaIN / wavelet colour fix) and ARDownloadModel (official weights)."""

from __future__ import annotations

from pathlib import Path

import folder_paths
from comfy_api.latest import io

from ..core import colorfix, download
from . import common


class ARColorFix(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ARColorFix",
            display_name="Colour Fix (AdaIN / Wavelet)",
            category=f"{common.CATEGORY}/Utils",
            description="Transfers the colours of a reference image onto an image: 'wavelet' keeps the image's high "
                        "frequencies and takes the low frequencies from the reference, so colour shifts are corrected "
                        "locally; 'adain' matches per-channel mean and std over the whole image (the default of "
                        "SeeSR's test scripts, --align_method adain, used by the SeeSR workflows; SeeSR's Gradio demo "
                        "always applies wavelet). The reference may have any size; it is resized to the image.",
            inputs=[
                io.Image.Input("image", tooltip="The image to correct (e.g. a super-resolved or restored result)."),
                io.Image.Input("reference", tooltip="The colour reference (e.g. the low-resolution input); any size. "
                               "One reference for the whole batch, or one per image."),
                io.Combo.Input("method", options=["wavelet", "adain"], default="wavelet",
                               tooltip="wavelet (default here, for any restorer): low frequencies from the reference, "
                               "local colour correction; adain: global per-channel mean/std transfer — the official "
                               "SeeSR test scripts' default, set in the SeeSR workflows."),
            ],
            outputs=[io.Image.Output(display_name="image", tooltip="The colour-corrected image, clamped to [0,1], "
                                     "alpha of the input image kept.")],
        )

    @classmethod
    def execute(cls, image, reference, method="wavelet") -> io.NodeOutput:
        x, alpha = common.image_to_bchw(image)
        ref, _ = common.image_to_bchw(reference)
        return io.NodeOutput(common.bchw_to_image(colorfix.color_fix_to(x, ref, method), alpha))


class ARDownloadModel(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        names = [n for n, f in download.OFFICIAL.items() if f.repo_id is not None]
        return io.Schema(
            node_id="ARDownloadModel",
            display_name="Download Official Weights",
            category=f"{common.CATEGORY}/Utils",
            description="Downloads an official weight file from Hugging Face into the first registered ComfyUI "
                        "folder of its family (an extra_model_paths.yaml entry when there is one), where the loaders "
                        "list it. Skipped when a readable copy is already there; an empty or truncated copy is "
                        "downloaded again. Offline, it fails at once and names the file, the URL and the folder to "
                        "put it in. Files without a Hugging Face mirror are listed in the README.",
            is_output_node=True,
            inputs=[io.Combo.Input("file", options=names, tooltip="The official file to fetch.")],
            outputs=[io.String.Output(display_name="path", tooltip="Where the file now is.")],
        )

    @classmethod
    def execute(cls, file) -> io.NodeOutput:
        spec = download.spec(file)
        folders = common.folder_list(spec.folder)  # the first registered path: where the loaders look first
        dest = Path(folders[0]) if folders else Path(folder_paths.models_dir) / spec.folder
        path = str(download.fetch(file, dest))
        return io.NodeOutput(path, ui={"text": (path,)})


NODES = [ARColorFix, ARDownloadModel]
