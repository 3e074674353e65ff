"""SeeSR test models.

``write(models_root)`` (every test run, seconds): the tiny parity SeeSR models in the official layout
(``models/seesr/seesr/{unet,controlnet}/``: config.json + diffusion_pytorch_model.safetensors, the fixtures) and the
tiny SD-2 stand-in checkpoint ``models/checkpoints/512-base-ema.safetensors`` read by the test double.

``write_real(models_root)`` (a real ComfyUI; ≈1 GiB, built once and cached): files a real ComfyUI loads —
* ``checkpoints/512-base-ema.safetensors`` and ``checkpoints/sd_turbo.safetensors``: a random SD-2 single-file
  checkpoint (LDM layout, fp16) with a reduced UNet (2 levels × 1 resnet at 320/640 channels, SD-2's 64-wide heads,
  1024-wide text context, linear projections) and the full OpenCLIP-H text tower + full VAE (ComfyUI builds those
  from fixed configs), which ComfyUI detects as SD20 / eps with no missing keys;
* ``seesr/seesr/{unet,controlnet}/``: an SD-2-width SeeSR release folder matching it — the UNet with the same base
  weights + 7 random RCA blocks, the ControlNet (``ControlNetModel.from_unet``, zero convs randomised) + 3;
* ``loras/seesr_test_lora.safetensors``: a small random LoRA on the UNet's attention projections.

The cache lives in ``$AWARE_RESTORE_TEST_CACHE`` (default ``<tmp>/aware_restore_test_cache``), one folder per content
key (generator version + configs + seed); the models tree gets symlinks. Nothing is ever written into the repo.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "seesr"
SEESR_NAME = "seesr"
SD2_NAME = "512-base-ema.safetensors"  # the SD-2-base single-file name
TURBO_NAME = "sd_turbo.safetensors"    # the SD-Turbo single-file name (the turbo workflow)
LORA_NAME = "seesr_test_lora.safetensors"
KIT_VERSION = "seesr-sd2-kit-1"
SEED = 0


# ----------------------------------------------------------------------------------------------- tiny (double)
def write_tiny_sd2(folder: Path) -> None:
    """A tiny diffusers SD-2 folder for the library/CLI path: ``vae/`` (4 levels of 8 channels) and
    ``text_encoder/`` (one 32-wide CLIP layer, the real vocabulary size); fixed seed."""
    import torch
    from diffusers import AutoencoderKL
    from transformers import CLIPTextConfig, CLIPTextModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        AutoencoderKL(block_out_channels=(8, 8, 8, 8), norm_num_groups=4, layers_per_block=1,
                      down_block_types=("DownEncoderBlock2D",) * 4,
                      up_block_types=("UpDecoderBlock2D",) * 4).save_pretrained(folder / "vae")
        cfg = CLIPTextConfig(hidden_size=32, intermediate_size=64, num_attention_heads=2, num_hidden_layers=1,
                             vocab_size=49408, max_position_embeddings=77)
        CLIPTextModel(cfg).save_pretrained(folder / "text_encoder")


def write(models_root: Path) -> None:
    root = Path(models_root)
    for part in ("unet", "controlnet"):
        dst = root / "seesr" / SEESR_NAME / part
        dst.mkdir(parents=True, exist_ok=True)
        for name in ("config.json", "diffusion_pytorch_model.safetensors"):
            shutil.copyfile(FIXTURES / part / name, dst / name)
    try:
        import sd_nodes  # the double's SD nodes (tests/comfy_double on sys.path)
    except ModuleNotFoundError:
        return
    sd_nodes.write_checkpoint(root / "checkpoints" / SD2_NAME)


# ----------------------------------------------------------------------------------------------- SD-2 width
def sd2_unet_config(levels: int = 2, layers: int = 1) -> dict:
    """A SeeSR UNet config.json at SD-2 width: 320·(1, 2, 4, 4)[:levels] channels, attention on every level."""
    chans = [320 * m for m in (1, 2, 4, 4)[:levels]]
    return {
        "_class_name": "UNet2DConditionModel", "sample_size": 64, "in_channels": 4, "out_channels": 4,
        "layers_per_block": layers, "block_out_channels": chans,
        "down_block_types": ["CrossAttnDownBlock2D"] * levels, "up_block_types": ["CrossAttnUpBlock2D"] * levels,
        "attention_head_dim": [c // 64 for c in chans], "cross_attention_dim": 1024, "use_linear_projection": True,
        "upcast_attention": False, "norm_num_groups": 32, "flip_sin_to_cos": True, "freq_shift": 0,
        "use_image_cross_attention": True,
    }


def _cache_root() -> Path:
    return Path(os.environ.get("AWARE_RESTORE_TEST_CACHE") or Path(tempfile.gettempdir()) / "aware_restore_test_cache")


def _key(cfg: dict, seed: int) -> str:
    text = json.dumps({"version": KIT_VERSION, "unet": cfg, "seed": seed,
                       "keys": hashlib.sha256((FIXTURES / "sd2_single_file_keys.txt").read_bytes()).hexdigest()},
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _init_from_shape(key: str, shape: list[int], g):
    """Text tower / VAE tensors from their shapes: norms 1/0, biases 0, weights N(0, 1/fan_in), fp16."""
    import torch

    if len(shape) == 0:
        value = math.log(1 / 0.07) if key.endswith("logit_scale") else 0.0
        return torch.tensor(value, dtype=torch.float16)
    if key.endswith("bias"):
        return torch.zeros(shape, dtype=torch.float16)
    if len(shape) == 1:  # every 1-D non-bias tensor of the SD-2 text tower / VAE is a norm weight
        return torch.ones(shape, dtype=torch.float16)
    scale = 0.01 if key.endswith("positional_embedding") else 1 / math.sqrt(math.prod(shape[1:]))
    return (torch.randn(shape, generator=g) * scale).to(torch.float16)


def _save_part(folder: Path, model) -> None:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    cfg = {k: v for k, v in dict(model.config).items() if not k.startswith("_")}
    cfg = {"_class_name": type(model).__name__, **cfg, "use_image_cross_attention": True}
    (folder / "config.json").write_text(json.dumps(cfg, indent=1))
    save_file({k: v.half().contiguous() for k, v in model.state_dict().items()},
              str(folder / "diffusion_pytorch_model.safetensors"))


def _build(dst: Path, cfg: dict, seed: int) -> None:
    import torch
    from aware_restore.core.seesr import build_controlnet, build_unet
    from aware_restore.core.seesr.layout import split_rca, to_ldm
    from diffusers import ControlNetModel, UNet2DConditionModel
    from safetensors.torch import save_file

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = build_unet(cfg, device="cpu").eval()  # diffusers default init + RCA blocks
        stock = {k: v for k, v in cfg.items() if not k.startswith("_") and k != "use_image_cross_attention"}
        plain = UNet2DConditionModel.from_config(stock)
        plain.load_state_dict(split_rca(unet.state_dict())[0], strict=True)
        base = ControlNetModel.from_unet(plain)
        ccfg = {"_class_name": "ControlNetModel", **{k: v for k, v in dict(base.config).items()
                                                      if not k.startswith("_")}, "use_image_cross_attention": True}
        cn = build_controlnet(ccfg, device="cpu").eval()
        cn.load_state_dict({**cn.state_dict(), **base.state_dict()}, strict=True)
        del plain, base
        with torch.no_grad():
            for name, p in cn.named_parameters():
                if name.startswith(("controlnet_down_blocks", "controlnet_mid_block",
                                    "controlnet_cond_embedding.conv_out")):
                    p.normal_(0, 0.02)
        _save_part(dst / "seesr" / "unet", unet)
        _save_part(dst / "seesr" / "controlnet", cn)
        usd = {k: v.half().contiguous() for k, v in unet.state_dict().items()}
        ubase, _ = split_rca(usd)
        ckpt = to_ldm(ubase, cfg, "unet", prefix="model.diffusion_model.")
        g = torch.Generator().manual_seed(seed + 1)
        for line in (FIXTURES / "sd2_single_file_keys.txt").read_text().splitlines():
            k, shape = line.split("\t")
            ckpt[k] = _init_from_shape(k, json.loads(shape), g)
        save_file(ckpt, str(dst / SD2_NAME))
        # a LoRA on every attention projection of the UNet transformers (ComfyUI's lora_unet_* naming)
        lora = {}
        g = torch.Generator().manual_seed(seed + 2)
        for k, v in ckpt.items():
            if k.startswith("model.diffusion_model.") and k.endswith((".to_q.weight", ".to_v.weight")):
                name = "lora_unet_" + k[len("model.diffusion_model."):-len(".weight")].replace(".", "_")
                out_f, in_f = v.shape
                lora[name + ".lora_down.weight"] = (torch.randn(4, in_f, generator=g) / math.sqrt(in_f)).half()
                lora[name + ".lora_up.weight"] = (torch.randn(out_f, 4, generator=g) * 0.05).half()
                lora[name + ".alpha"] = torch.tensor(4.0, dtype=torch.float16)
        save_file(lora, str(dst / LORA_NAME))


def real_models(levels: int = 2, layers: int = 1, seed: int = SEED) -> Path:
    """The cached folder with the SD-2 checkpoint, the SeeSR folder and the LoRA (built on first use)."""
    cfg = sd2_unet_config(levels, layers)
    root = _cache_root()
    dst = root / _key(cfg, seed)
    if (dst / "done").is_file():
        return dst
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="build-", dir=root))
    try:
        _build(tmp, cfg, seed)
        (tmp / "done").write_text(KIT_VERSION + "\n")
        try:
            os.replace(tmp, dst)
        except OSError:  # built by someone else meanwhile
            if not (dst / "done").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dst


def _link(src: Path, dst: Path) -> None:
    """A symlink for files; folders are rebuilt with hard links (a copy across file systems), since the pack's
    folder lookup refuses a model folder that resolves outside the models folder."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.is_symlink() or dst.is_file():
        dst.unlink()
    elif dst.is_dir():
        shutil.rmtree(dst)
    if not src.is_dir():
        dst.symlink_to(src)
        return

    def link(a, b):
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)

    shutil.copytree(src, dst, copy_function=link)


def write_real(models_root: Path) -> Path:
    """Link the real-ComfyUI SeeSR test models into a models tree (replacing the tiny ones); returns the cache."""
    src = real_models()
    root = Path(models_root)
    _link(src / SD2_NAME, root / "checkpoints" / SD2_NAME)
    _link(src / SD2_NAME, root / "checkpoints" / TURBO_NAME)
    _link(src / "seesr", root / "seesr" / SEESR_NAME)
    _link(src / LORA_NAME, root / "loras" / LORA_NAME)
    return src
