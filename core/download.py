"""Optional download of the official weight files (huggingface_hub), into the right models folder.

Files without a Hugging Face mirror (Google-Drive-only releases) are listed with their page; ``fetch`` then
raises an error that names the file, the URL and the folder to put it in. Offline (``HF_HUB_OFFLINE=1`` or no
network) the download fails at once with the same information.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import DownloadError

log = logging.getLogger(__name__)


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
    )
}




def _manual(spec: OfficialFile, dest: Path, why: str) -> DownloadError:
    return DownloadError(f"{why} Download '{spec.filename}' from {spec.url} and put it in '{dest}'.")


def fetch(name: str, models_root: str | os.PathLike) -> Path:
    """Download ``name`` (a key of ``OFFICIAL``) into ``<models_root>/<folder>/``; return the file path."""
    try:
        spec = OFFICIAL[name]
    except KeyError:
        raise DownloadError(f"unknown file {name!r}; known: {', '.join(OFFICIAL)}") from None
    dest = Path(models_root) / spec.folder
    target = dest / spec.filename
    if target.exists():
        return target
    if spec.repo_id is None:
        raise _manual(spec, dest, "This file has no Hugging Face mirror, so it cannot be downloaded automatically.")
    if os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0"):
        raise _manual(spec, dest, "HF_HUB_OFFLINE is set.")
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    dest.mkdir(parents=True, exist_ok=True)
    try:
        path = hf_hub_download(spec.repo_id, spec.repo_file or spec.filename, local_dir=dest,
                               etag_timeout=5)
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as exc:
        raise _manual(spec, dest, f"The download failed ({type(exc).__name__}: {exc}).") from exc
    log.info("downloaded %s -> %s", spec.filename, path)
    return Path(path)
