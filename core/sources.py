"""The official weight files: name, the models folder it belongs in, its page, and its Hugging Face mirror when
there is one. One table, read by the downloader (:mod:`.download`), the checkpoint reader's advice for damaged files
(:mod:`.checkpoint`) and the example workflows' model links."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OfficialFile:
    filename: str
    folder: str
    url: str
    repo_id: str | None = None  # Hugging Face repo holding the file, when there is one
    repo_file: str | None = None


OFFICIAL: dict[str, OfficialFile] = {
    f.filename: f
    for f in (
        OfficialFile("daclip_ViT-B-32.pt", "daclip",
                     "https://huggingface.co/weblzw/daclip-uir-ViT-B-32-irsde/blob/main/daclip_ViT-B-32.pt",
                     "weblzw/daclip-uir-ViT-B-32-irsde", "daclip_ViT-B-32.pt"),
        OfficialFile("universal-ir.pth", "irsde",
                     "https://huggingface.co/weblzw/daclip-uir-ViT-B-32-irsde/blob/main/universal-ir.pth",
                     "weblzw/daclip-uir-ViT-B-32-irsde", "universal-ir.pth"),
        OfficialFile("wild-daclip_ViT-L-14.pt", "daclip",
                     "https://huggingface.co/weblzw/daclip-uir-ViT-B-32-irsde/blob/main/wild-daclip_ViT-L-14.pt",
                     "weblzw/daclip-uir-ViT-B-32-irsde", "wild-daclip_ViT-L-14.pt"),
        OfficialFile("wild-ir.pth", "irsde",
                     "https://huggingface.co/weblzw/daclip-uir-ViT-B-32-irsde/blob/main/wild-ir.pth",
                     "weblzw/daclip-uir-ViT-B-32-irsde", "wild-ir.pth"),
        OfficialFile("ram_swin_large_14m.pth", "dape",
                     "https://huggingface.co/xinyu1205/recognize_anything_model/blob/main/ram_swin_large_14m.pth",
                     "xinyu1205/recognize_anything_model", "ram_swin_large_14m.pth"),
        OfficialFile("DAPE.pth", "dape", "https://drive.google.com/file/d/1KIV6VewwO2eDC9g4Gcvgm-a0LDI7Lmwm/view"),
        OfficialFile("seesr", "seesr", "https://github.com/cswry/SeeSR#-quick-inference (folder with unet/ and "
                     "controlnet/)"),
        # ComfyUI-core checkpoints the SeeSR examples load (MODEL + CLIP + VAE through CheckpointLoaderSimple)
        OfficialFile("512-base-ema.safetensors", "checkpoints",
                     "https://huggingface.co/stabilityai/stable-diffusion-2-base/blob/main/512-base-ema.safetensors",
                     "stabilityai/stable-diffusion-2-base", "512-base-ema.safetensors"),
        OfficialFile("sd_turbo.safetensors", "checkpoints",
                     "https://huggingface.co/stabilityai/sd-turbo/blob/main/sd_turbo.safetensors",
                     "stabilityai/sd-turbo", "sd_turbo.safetensors"),
    )
}
