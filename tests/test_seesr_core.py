"""SeeSR parity with the official code (fixtures in tests/fixtures/seesr, made with cswry/SeeSR@8edecc7)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from aware_restore.core.arch import strict_load
from aware_restore.core.checkpoint import meta_state_dict_from_key_list
from aware_restore.core.errors import MissingImageStatesError, ModelLoadError
from aware_restore.core.seesr import (
    SamplerOptions,
    build_controlnet,
    build_unet,
    gaussian_weights,
    load_seesr,
    lr_embedding,
    make_scheduler,
    plan_sizes,
    predict_noise,
    rca_of,
    tile_origins,
)
from aware_restore.core.seesr.sampler import Conditioning
from aware_restore.core.seesr.schedule import sd2_scheduler_config
from conftest import FIXTURES, ROOT
from safetensors.torch import load_file, save_file

FIX = FIXTURES / "seesr"
DATA = ROOT / "core" / "seesr" / "data"


@pytest.fixture(scope="module")
def models():
    return load_seesr(FIX)


@pytest.fixture(scope="module")
def io():
    return load_file(str(FIX / "io.safetensors"))


def _run(models, io, k, control=True):
    unet, cn = models
    t = io[f"case{k}.timestep"]
    scale = float(io[f"case{k}.conditioning_scale"])
    kw = {"encoder_hidden_states": io["encoder_hidden_states"],
              "image_encoder_hidden_states": io["image_encoder_hidden_states"]}
    with torch.no_grad():
        if not control:
            return None, None, unet(io["sample"], t, **kw).sample
        down, mid = cn(io["sample"], t, controlnet_cond=io["controlnet_cond"], conditioning_scale=scale,
                       return_dict=False, **kw)
        out = unet(io["sample"], t, down_block_additional_residuals=down, mid_block_additional_residual=mid,
                   return_dict=False, **kw)[0]
    return down, mid, out


@pytest.mark.parametrize("k", [0, 1])
def test_controlnet_and_unet_with_rca_match_official(models, io, k):
    down, mid, out = _run(models, io, k)
    assert len(down) == 4
    for i, d in enumerate(down):
        torch.testing.assert_close(d, io[f"case{k}.down_block_res_samples.{i}"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(mid, io[f"case{k}.mid_block_res_sample"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out, io[f"case{k}.noise_pred"], atol=1e-5, rtol=1e-5)


def test_unet_without_control_matches_official(models, io):
    *_, out = _run(models, io, 0, control=False)
    torch.testing.assert_close(out, io["case0.noise_pred_no_control"], atol=1e-5, rtol=1e-5)


def test_rca_is_separable_and_required(models, io):
    unet, cn = models
    att = rca_of(unet)
    assert att.count == 4 and rca_of(cn).count == 2  # tiny: down0 (1), mid (1), up1 (2) / down0, mid
    with pytest.raises(MissingImageStatesError, match="image_encoder_hidden_states"), torch.no_grad():
        unet(io["sample"], 981, encoder_hidden_states=io["encoder_hidden_states"])
    # a fresh stock UNet with only RCA detached again has exactly the stock keys and no hooks
    cfg = json.loads((FIX / "unet" / "config.json").read_text())
    fresh = build_unet(cfg, device="cpu")
    n_keys = len(fresh.state_dict())
    rca_of(fresh).detach()
    assert n_keys - len(fresh.state_dict()) == 104
    assert not any(".image_attentions." in k for k in fresh.state_dict())
    assert rca_of(fresh) is None
    # batch-1 image states broadcast over the CFG batch
    states = io["image_encoder_hidden_states"][:1]
    with torch.no_grad():
        a = unet(io["sample"], 981, encoder_hidden_states=io["encoder_hidden_states"],
                 image_encoder_hidden_states=states.expand(2, -1, -1)).sample
        b = unet(io["sample"], 981, encoder_hidden_states=io["encoder_hidden_states"],
                 image_encoder_hidden_states=states).sample
    torch.testing.assert_close(a, b)


def test_real_size_key_lists_load_on_meta():
    for cfg_name, keys, build, n_rca in (("unet_config.json", "seesr_unet_keys.txt", build_unet, 16),
                                         ("controlnet_config.json", "seesr_controlnet_keys.txt", build_controlnet, 7)):
        model = build(json.loads((DATA / cfg_name).read_text()), device="meta")
        assert rca_of(model).count == n_rca
        sd = meta_state_dict_from_key_list(FIX / keys)
        own = model.state_dict()
        assert set(own) == set(sd)
        assert all(tuple(own[k].shape) == tuple(sd[k].shape) for k in sd)
        strict_load(model, sd, source=keys, title="SeeSR")
        assert sum(".image_attentions." in k for k in sd) == (416 if n_rca == 16 else 7 * 26)


def test_strict_loading_errors(tmp_path):
    root = tmp_path / "seesr"
    shutil.copytree(FIX / "unet", root / "unet")
    shutil.copytree(FIX / "controlnet", root / "controlnet")
    assert load_seesr(root)[0] is not None
    # a config without the fork's flag is refused (stock from_pretrained would silently drop RCA)
    cfg = json.loads((root / "unet" / "config.json").read_text())
    cfg.pop("use_image_cross_attention")
    (root / "unet" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match="use_image_cross_attention"):
        load_seesr(root)
    cfg["use_image_cross_attention"] = True
    (root / "unet" / "config.json").write_text(json.dumps(cfg))
    # a missing RCA tensor is an error naming it
    sd = load_file(str(root / "controlnet" / "diffusion_pytorch_model.safetensors"))
    sd.pop("mid_block.image_attentions.0.proj_out.bias")
    save_file(sd, str(root / "controlnet" / "diffusion_pytorch_model.safetensors"))
    with pytest.raises(ModelLoadError, match="1 missing"):
        load_seesr(root)
    with pytest.raises(ModelLoadError, match="'unet' and 'controlnet'"):
        load_seesr(tmp_path / "seesr" / "unet")


# --- schedule ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sched():
    return json.loads((FIX / "schedule.json").read_text()), load_file(str(FIX / "schedule.safetensors"))


def test_schedule_numbers(sched):
    j, s = sched
    assert sd2_scheduler_config()["beta_schedule"] == j["source_config"]["beta_schedule"]
    ddpm = make_scheduler("ddpm")
    for key in ("variance_type", "timestep_spacing", "steps_offset", "clip_sample", "prediction_type"):
        assert ddpm.config[key] == j["resolved_ddpm_config"][key]
    torch.testing.assert_close(ddpm.alphas_cumprod, s["alphas_cumprod"], atol=0, rtol=0)
    torch.testing.assert_close(ddpm.betas, s["betas"], atol=0, rtol=0)
    for n, ts in j["timesteps"].items():
        ddpm.set_timesteps(int(n))
        assert ddpm.timesteps.tolist() == ts
    assert ddpm.init_noise_sigma == j["init_noise_sigma"]
    assert float(ddpm.alphas_cumprod[999]) == pytest.approx(j["alphas_cumprod_999"], abs=1e-9)


def test_lr_embedding_coefficients(sched):
    j, s = sched
    ddpm = make_scheduler("ddpm")
    z, eps = s["add_noise.original"], s["add_noise.noise"]
    torch.testing.assert_close(lr_embedding(z, eps, ddpm), s["add_noise.t999"], atol=1e-6, rtol=1e-6)
    one = lr_embedding(torch.ones(1, 1, 1, 1), torch.zeros(1, 1, 1, 1), ddpm)
    assert float(one) == pytest.approx(j["lr_embedding"]["sqrt_alphas_cumprod_999"], abs=1e-7)
    one = lr_embedding(torch.zeros(1, 1, 1, 1), torch.ones(1, 1, 1, 1), ddpm)
    assert float(one) == pytest.approx(j["lr_embedding"]["sqrt_one_minus_alphas_cumprod_999"], abs=1e-7)
    with pytest.raises(ValueError, match="shape"):
        lr_embedding(torch.zeros(1, 4, 8, 8), torch.zeros(1, 4, 8, 9), ddpm)


def test_ddpm_step_cases(sched, monkeypatch):
    import diffusers.schedulers.scheduling_ddpm as mod
    j, s = sched
    ddpm = make_scheduler("ddpm")
    ddpm.set_timesteps(50)
    for i, case in enumerate(j["step_cases"]):
        monkeypatch.setattr(mod, "randn_tensor", lambda *a, _n=s[f"step{i}.variance_noise"], **k: _n.clone())
        out = ddpm.step(s[f"step{i}.model_output"], case["timestep"], s[f"step{i}.sample"],
                        generator=torch.Generator().manual_seed(0)).prev_sample
        torch.testing.assert_close(out, s[f"step{i}.prev_sample"], atol=1e-6, rtol=1e-6)


# --- tiling and sizes -------------------------------------------------------------------------------------------

class _FakeControlNet(torch.nn.Module):
    def forward(self, x, t, **kw):
        return None, None


class _FakeUNet(torch.nn.Module):
    """out = tile·(1 + 0.1·k) + e_b (k = visit index, e_b = text[b,0,0]), the fixtures' fake."""

    def __init__(self):
        super().__init__()
        self.p = torch.nn.Parameter(torch.zeros(1))
        self.k = 0

    def forward(self, x, t, encoder_hidden_states, **kw):
        outs = []
        for j in range(x.shape[0] // 2):
            e = encoder_hidden_states[2 * j:2 * j + 2, 0, 0].view(2, 1, 1, 1)
            outs.append(x[2 * j:2 * j + 2] * (1 + 0.1 * self.k) + e)
            self.k += 1
        return (torch.cat(outs),)


@pytest.fixture(scope="module")
def tiles():
    return json.loads((FIX / "tiles.json").read_text()), load_file(str(FIX / "tiles.safetensors"))


def test_tile_origins_and_gaussian(tiles):
    j, s = tiles
    for case in j["cases"]:
        t, origins = tile_origins(case["h"], case["w"], case["tile"], case["overlap"])
        assert [list(o) for o in origins] == case["origins_yx"]
        assert (t or None) == case["effective_tile"]
    for t in (64, 96):
        torch.testing.assert_close(gaussian_weights(t), s[f"gaussian_{t}"], atol=0, rtol=1e-12)


@pytest.mark.parametrize("tile_batch", [1, 4])
def test_blended_noise_predictions(tiles, tile_batch):
    j, s = tiles
    for i, case in enumerate(j["cases"]):
        lat = s[f"case{i}.latents"]
        text = torch.zeros(2, 77, 8)
        text[0, 0, 0], text[1, 0, 0] = case["e_uncond"], case["e_cond"]
        cond = Conditioning(text, torch.zeros(2, 145, 512), torch.zeros(2, 3, 8 * case["h"], 8 * case["w"]))
        opts = SamplerOptions(tile_size=case["tile"], tile_overlap=case["overlap"], tile_batch=tile_batch)
        eps = predict_noise(_FakeUNet(), _FakeControlNet(), torch.cat([lat, lat]), 1, cond, opts)
        u, c = eps.chunk(2)
        torch.testing.assert_close(u + case["guidance_scale"] * (c - u), s[f"case{i}.noise_pred"], atol=1e-5,
                                   rtol=1e-5)


def test_resize_sizes():
    j = json.loads((FIX / "resize.json").read_text())
    for c in j["cases"]:
        p = plan_sizes(c["w"], c["h"], c["upscale"], c["process_size"])
        assert (p.prescaled is not None) == c["prescaled"]
        if c["prescaled"]:
            assert list(p.prescaled) == c["after_prescale"]
        assert list(p.upscaled) == c["after_upscale"]
        assert list(p.process) == c["after_mod8"] == [c["process_w"], c["process_h"]]
        assert p.latent_hw == (c["latent_h"], c["latent_w"])
        assert list(p.final) == c["final_output"]
