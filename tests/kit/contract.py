"""Random configurations per architecture for the contract test (``tests/test_contract.py``).

``cases()`` yields ``(arch_id, label, state_dict, options, expected)``: a state dict in the architecture's official
key layout made by the family's own builder with random weights, the ``load`` options it needs (e.g. SeeSR's
config.json, RAM's image size) and what ``load`` must report as the config (``None``: not compared).
"""

from __future__ import annotations

import torch

SEED = 0


def _randomise(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    return module.eval()


def _sd(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def daclip_cases():
    from aware_restore.core.daclip import DaclipConfig, build_daclip

    for label, cfg in (
        ("tiny-16", DaclipConfig(16, 64, 16, 64, 2, 4.0, 32, 2, 4.0, 77, 49408)),
        ("small-vocab", DaclipConfig(24, 32, 8, 128, 1, 2.0, 64, 1, 2.0, 16, 1000)),
    ):
        model = _randomise(build_daclip(cfg, device="cpu"), SEED)
        yield "daclip", label, _sd(model), {}, cfg


def irsde_cases():
    from aware_restore.core.irsde import UNetConfig, build_irsde

    for label, cfg in (
        ("universal", UNetConfig(nf=32, ch_mult=(1, 2), context_dim=16)),
        ("wild", UNetConfig(nf=32, ch_mult=(1, 1, 2), context_dim=24, use_degra_context=False, scale=0.5)),
        ("no-context", UNetConfig(nf=32, ch_mult=(1, 2), context_dim=-1, use_degra_context=False,
                                  use_image_context=False)),
    ):
        yield "irsde", label, _sd(_randomise(build_irsde(cfg), SEED)), {}, cfg


def ram_cases():
    from aware_restore.core.ram import RamConfig, SwinConfig, Tagger

    for label, swin, head in (
        ("tiny", SwinConfig(16, (1, 1, 2, 1), (1, 2, 4, 8), 12), (64, 2, 128)),
        ("shallow", SwinConfig(8, (1, 1), (1, 2), 12, image_size=96), (32, 1, 64)),
    ):
        cfg = RamConfig(swin, 4585, 512, *head)
        model = _randomise(Tagger(cfg), SEED)
        sd = {k: v for k, v in _sd(model).items() if not k.endswith((".relative_position_index", ".attn_mask"))}
        yield "ram", label, sd, {"image_size": swin.image_size}, cfg
        if label == "tiny":
            g = torch.Generator().manual_seed(1)
            lora = {}
            for k, v in sd.items():
                if k.endswith("attn.qkv.weight"):
                    d = v.shape[1]
                    lora[k[:-7] + ".lora_A"] = torch.randn(8, d, generator=g)
                    lora[k[:-7] + ".lora_B"] = torch.randn(2 * (v.shape[0] // 3), 4, generator=g)
            yield "dape", label, lora, {}, None


def _diffusers_unet_config(channels, attn, layers=1, groups=32):
    return {
        "in_channels": 4, "out_channels": 4, "block_out_channels": list(channels), "layers_per_block": layers,
        "down_block_types": ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attn],
        "up_block_types": ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)],
        "cross_attention_dim": 64, "attention_head_dim": [max(1, c // 64) for c in channels],
        "use_linear_projection": True, "norm_num_groups": groups, "transformer_layers_per_block": 1,
        "use_image_cross_attention": True,
    }


def seesr_cases():
    from aware_restore.core.seesr import build_controlnet, build_unet

    # "attention-everywhere": attention on the deepest level too, as the kit's SD-2-width test model (tests/kit/seesr.py)
    for label, channels, attn, layers in (("sd2-rules", (64, 128), (True, False), 1),
                                          ("three-levels", (64, 64, 128), (True, True, False), 2),
                                          ("attention-everywhere", (64, 128), (True, True), 1)):
        ucfg = _diffusers_unet_config(channels, attn, layers)
        unet = _randomise(build_unet(ucfg, device="cpu"), SEED)
        yield "seesr_unet", label, _sd(unet), {}, None           # shapes alone (SD-2 rules)
        yield "seesr_unet", label + "+config", _sd(unet), {"config": ucfg}, None
        ccfg = {k: v for k, v in ucfg.items() if k not in ("out_channels", "up_block_types")}
        ccfg["conditioning_embedding_out_channels"] = [8, 16]
        cn = _randomise(build_controlnet(ccfg, device="cpu"), SEED)
        yield "seesr_controlnet", label, _sd(cn), {}, None
    # the tiny parity fixture: 8 GroupNorm groups and 16-wide heads, so it needs its config.json
    import json
    from pathlib import Path

    fix = Path(__file__).resolve().parent.parent / "fixtures" / "seesr"
    from safetensors.torch import load_file

    for part, arch in (("unet", "seesr_unet"), ("controlnet", "seesr_controlnet")):
        cfg = json.loads((fix / part / "config.json").read_text())
        sd = load_file(str(fix / part / "diffusion_pytorch_model.safetensors"))
        yield arch, "fixture+config", sd, {"config": cfg}, None


def ssen_cases():
    from aware_restore.core.ssen import SSENConfig, SSENet

    for label, cfg in (
        ("small", SSENConfig(nf=8, n_pre=1, n_post=1, est_nf=8, groups=1)),
        ("rcan", SSENConfig(nf=16, n_pre=2, n_post=1, backbone="rcan", ca_reduction=4, est_nf=8, groups=2)),
        ("no-nonlocal", SSENConfig(nf=8, n_pre=1, n_post=2, est_nf=16, groups=1, n_dcn=2, ref_blocks=2,
                                   nonlocal_blocks=False)),
        ("no-reference-branch", SSENConfig(nf=8, n_pre=1, n_post=1, use_ssen=False)),
        ("wide-x4-stage", SSENConfig(nf=8, n_pre=1, n_post=1, est_nf=8, groups=1, hr_nf=12)),
    ):
        yield "ssen", label, _sd(_randomise(SSENet(cfg), SEED)), {}, cfg


def cases():
    for fam in (daclip_cases, irsde_cases, ram_cases, seesr_cases, ssen_cases):
        yield from fam()


# Real-size key lists (tests/fixtures/*): (arch_id, key list, load options).
REAL_KEY_LISTS = (
    ("daclip", "daclip/daclip_keys_B32.txt", {}),
    ("daclip", "daclip/daclip_keys_L14.txt", {}),
    ("irsde", "irsde/irsde_keys_universal-ir.txt", {}),
    ("irsde", "irsde/irsde_keys_wild-ir.txt", {}),
    ("ram", "ram/ram_swin_large_keys.txt", {"image_size": 384}),
    ("dape", "ram/dape_keys.txt", {}),
    ("seesr_unet", "seesr/seesr_unet_keys.txt", {"config_file": "unet_config.json"}),
    ("seesr_controlnet", "seesr/seesr_controlnet_keys.txt", {"config_file": "controlnet_config.json"}),
)
