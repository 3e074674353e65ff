"""Test double of ComfyUI's ``folder_paths`` (the subset the pack uses, same semantics)."""

from __future__ import annotations

import os

supported_pt_extensions: set[str] = {".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"}
folder_names_and_paths: dict[str, tuple[list[str], set[str]]] = {}
base_path = os.path.abspath(os.environ.get("COMFY_DOUBLE_BASE", os.path.join(os.sep, "tmp", "comfy_double")))
models_dir = os.path.join(base_path, "models")
output_directory = os.path.join(base_path, "output")
input_directory = os.path.join(base_path, "input")


def set_base(path: str) -> None:
    """Test helper: point models/input/output at ``path`` and reset registrations to ComfyUI's defaults."""
    global base_path, models_dir, output_directory, input_directory
    base_path = os.path.abspath(path)
    models_dir = os.path.join(base_path, "models")
    output_directory = os.path.join(base_path, "output")
    input_directory = os.path.join(base_path, "input")
    folder_names_and_paths.clear()
    for name in ("checkpoints", "vae", "loras", "upscale_models", "controlnet", "clip_vision"):
        folder_names_and_paths[name] = ([os.path.join(models_dir, name)], supported_pt_extensions)
    folder_names_and_paths["diffusers"] = ([os.path.join(models_dir, "diffusers")], {"folder"})
    folder_names_and_paths["custom_nodes"] = ([os.path.join(base_path, "custom_nodes")], set())


set_base(base_path)


def map_legacy(folder_name: str) -> str:
    return {"unet": "diffusion_models", "clip": "text_encoders"}.get(folder_name, folder_name)


def add_model_folder_path(folder_name: str, full_folder_path: str, is_default: bool = False) -> None:
    folder_name = map_legacy(folder_name)
    if folder_name in folder_names_and_paths:
        paths, _exts = folder_names_and_paths[folder_name]
        if full_folder_path in paths:
            if is_default and paths[0] != full_folder_path:
                paths.remove(full_folder_path)
                paths.insert(0, full_folder_path)
        elif is_default:
            paths.insert(0, full_folder_path)
        else:
            paths.append(full_folder_path)
    else:
        folder_names_and_paths[folder_name] = ([full_folder_path], set())


def get_folder_paths(folder_name: str) -> list[str]:
    folder_name = map_legacy(folder_name)
    return folder_names_and_paths[folder_name][0][:]


def filter_files_extensions(files, extensions):
    return sorted(f for f in files if os.path.splitext(f)[-1].lower() in extensions or len(extensions) == 0)


def _recursive_search(directory: str) -> list[str]:
    if not os.path.isdir(directory):
        return []
    out = []
    for root, _dirs, files in os.walk(directory, followlinks=True):
        for f in files:
            out.append(os.path.relpath(os.path.join(root, f), directory).replace(os.sep, "/"))
    return out


def get_filename_list(folder_name: str) -> list[str]:
    folder_name = map_legacy(folder_name)
    paths, exts = folder_names_and_paths[folder_name]
    found: set[str] = set()
    for p in paths:
        found.update(filter_files_extensions(_recursive_search(p), exts))
    return sorted(found)


def get_full_path(folder_name: str, filename: str) -> str | None:
    folder_name = map_legacy(folder_name)
    if folder_name not in folder_names_and_paths:
        return None
    filename = os.path.relpath(os.path.join("/", filename), "/")
    for p in folder_names_and_paths[folder_name][0]:
        full = os.path.join(p, filename)
        if os.path.isfile(full):
            return full
    return None


def get_full_path_or_raise(folder_name: str, filename: str) -> str:
    full = get_full_path(folder_name, filename)
    if full is None:
        raise FileNotFoundError(f"Model in folder '{folder_name}' with filename '{filename}' not found.")
    return full


def get_input_directory() -> str:
    return input_directory


def get_output_directory() -> str:
    return output_directory


def get_annotated_filepath(name: str, default_dir: str | None = None) -> str:
    return os.path.join(default_dir or input_directory, name)


def exists_annotated_filepath(name: str) -> bool:
    return os.path.exists(get_annotated_filepath(name))


def get_save_image_path(filename_prefix: str, output_dir: str, image_width=0, image_height=0):
    full_output_folder = os.path.join(output_dir, os.path.dirname(filename_prefix))
    filename = os.path.basename(filename_prefix)
    os.makedirs(full_output_folder, exist_ok=True)
    existing = [f for f in os.listdir(full_output_folder) if f.startswith(filename + "_")]
    counter = len(existing) + 1
    return full_output_folder, filename, counter, os.path.dirname(filename_prefix), filename_prefix
