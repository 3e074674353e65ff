"""ComfyUI core nodes used by the example workflows, with the same ids, inputs and outputs as ComfyUI's
(``nodes.py`` LoadImage / SaveImage / PreviewImage, ``comfy_extras/nodes_preview_any.py`` PreviewAny),
written against the double's V3 API. Extra families may add nodes in ``sd_nodes.py``."""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import torch
from PIL import Image, ImageOps

import folder_paths
from comfy_api.latest import io

log = logging.getLogger(__name__)


class LoadImage(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        files = []
        d = folder_paths.get_input_directory()
        if os.path.isdir(d):
            files = sorted(f for f in os.listdir(d) if os.path.isfile(os.path.join(d, f)))
        return io.Schema(node_id="LoadImage", category="image",
                         inputs=[io.Combo.Input("image", options=files, upload=io.UploadType.image)],
                         outputs=[io.Image.Output(), io.Mask.Output()])

    @classmethod
    def execute(cls, image):
        path = folder_paths.get_annotated_filepath(image)
        img = ImageOps.exif_transpose(Image.open(path))
        if img.mode == "I":
            img = img.point(lambda i: i * (1 / 255))
        rgb = img.convert("RGB")
        arr = torch.from_numpy(np.array(rgb).astype(np.float32) / 255.0)[None]
        if "A" in img.getbands():
            mask = 1.0 - torch.from_numpy(np.array(img.getchannel("A")).astype(np.float32) / 255.0)
        else:
            mask = torch.zeros((64, 64), dtype=torch.float32)
        return io.NodeOutput(arr, mask.unsqueeze(0))


class SaveImage(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="SaveImage", category="image", is_output_node=True,
                         inputs=[io.Image.Input("images", tooltip="The images to save."),
                                 io.String.Input("filename_prefix", default="ComfyUI")],
                         outputs=[io.Image.Output(display_name="images")])  # 0.33 passes the images on

    @classmethod
    def execute(cls, images, filename_prefix="ComfyUI"):
        out_dir = folder_paths.get_output_directory()
        folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(filename_prefix, out_dir)
        results = []
        for b in range(images.shape[0]):
            arr = np.clip(255.0 * images[b].cpu().numpy(), 0, 255).astype(np.uint8)
            file = f"{name}_{counter:05}_.png"
            Image.fromarray(arr).save(os.path.join(folder, file))
            results.append({"filename": file, "subfolder": subfolder, "type": "output"})
            counter += 1
        return io.NodeOutput(images, ui={"images": results})


class PreviewImage(SaveImage):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="PreviewImage", category="image", is_output_node=True,
                         inputs=[io.Image.Input("images")], outputs=[io.Image.Output(display_name="images")])

    @classmethod
    def execute(cls, images):
        return io.NodeOutput(images, ui={"images": [{"filename": f"preview_{b}.png", "subfolder": "", "type": "temp"}
                                                    for b in range(images.shape[0])]})


class PreviewAny(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="PreviewAny", category="utils", is_output_node=True,
                         inputs=[io.AnyType.Input("source")], outputs=[io.String.Output()])

    @classmethod
    def execute(cls, source=None):
        if isinstance(source, str):
            value = source
        elif isinstance(source, (int, float, bool)):
            value = str(source)
        elif source is None:
            value = "None"
        else:
            try:
                value = json.dumps(source)
            except TypeError:
                value = str(source)
        return io.NodeOutput(value, ui={"text": (value,)})


def core_nodes() -> list[type[io.ComfyNode]]:
    nodes = [LoadImage, SaveImage, PreviewImage, PreviewAny]
    try:
        import sd_nodes  # SD core nodes (CheckpointLoaderSimple, CLIPTextEncode, VAE...) when present
    except ModuleNotFoundError as exc:
        if exc.name != "sd_nodes":
            raise
    else:
        nodes += sd_nodes.NODES
    return nodes
