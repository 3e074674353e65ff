"""SeeSR native path without ComfyUI: the one RCA implementation, the diffusers ↔ LDM layout, the native loader's
parts, the start-point equivalence, tile blending, and the node layer (SeeSR Apply, the RCA wrapper, the ControlNet
control, the tiling wrapper) on the test double with stand-in modules. The real ComfyUI run is in
tests/test_comfyui_integration.py (tests/seesr_comfy_probe.py)."""

from __future__ import annotations

import json
import math
import shutil
import typing
from pathlib import Path

import pytest
import torch
from aware_restore.core.checkpoint import meta_state_dict_from_key_list
from aware_restore.core.errors import InputError, ModelLoadError, WrongModelError
from aware_restore.core.seesr import (
    RCABlock,
    RCASet,
    build_controlnet,
    build_unet,
    latent_grid,
    load_native_parts,
    load_seesr,
    lr_embedding,
    make_scheduler,
    rca_entries,
    rca_of,
)
from aware_restore.core.seesr.layout import RCASpec, module_map, split_rca, to_ldm
from aware_restore.core.seesr.schedule import ksampler_start, sigmas_from_alphas
from aware_restore.core.seesr.tiles import blend_latent_tiles
from torch import nn

FIX = Path(__file__).parent / "fixtures" / "seesr"
DATA = Path(__file__).parents[1] / "core" / "seesr" / "data"


def _keys(name: str) -> dict[str, list[int]]:
    out = {}
    for line in (FIX / name).read_text().splitlines():
        k, shape = line.split("\t")
        out[k] = json.loads(shape)
    return out


def _cfg(name: str) -> dict:
    return json.loads((DATA / name).read_text())


# ----------------------------------------------------------------------------------------------- RCA block
@pytest.mark.parametrize("linear", [True, False])
def test_rca_block_equals_diffusers_transformer(linear):
    from diffusers.models.transformers.transformer_2d import Transformer2DModel

    torch.manual_seed(0)
    ref = Transformer2DModel(num_attention_heads=2, attention_head_dim=16, in_channels=32, cross_attention_dim=512,
                             norm_num_groups=8, use_linear_projection=linear).eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.normal_(0, 0.2)
    ours = RCABlock(RCASpec(32, 2, 16, groups=8, linear=linear)).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)  # same key layout
    x, ctx = torch.randn(2, 32, 6, 5), torch.randn(2, 145, 512)
    with torch.no_grad():
        diff = (ours(x, ctx) - ref(x, encoder_hidden_states=ctx).sample).abs().max().item()
    assert diff < 1e-5, diff
    # a pluggable attention function is used everywhere (here: a naive softmax implementation)
    calls = []

    def naive(q, k, v, heads):
        calls.append(heads)
        b, _, inner = q.shape
        d = inner // heads
        q, k, v = (t.reshape(b, -1, heads, d).transpose(1, 2) for t in (q, k, v))
        w = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), dim=-1)
        return (w @ v).transpose(1, 2).reshape(b, -1, inner)

    alt = RCABlock(RCASpec(32, 2, 16, groups=8, linear=linear), attention=naive).eval()
    alt.load_state_dict(ref.state_dict())
    with torch.no_grad():
        assert (alt(x, ctx) - ours(x, ctx)).abs().max() < 1e-5
    assert calls == [2, 2]


class _Ops:
    """A stand-in for comfy.ops: records which layer classes were built."""

    built: typing.ClassVar[list[str]] = []

    class Linear(nn.Linear):
        def __init__(self, *a, **k):
            _Ops.built.append("Linear")
            super().__init__(*a, **k)

    class Conv2d(nn.Conv2d):
        pass

    class GroupNorm(nn.GroupNorm):
        def __init__(self, *a, **k):
            _Ops.built.append("GroupNorm")
            super().__init__(*a, **k)

    class LayerNorm(nn.LayerNorm):
        pass


def test_rca_layer_operations_are_pluggable():
    _Ops.built.clear()
    RCABlock(RCASpec(32, 2, 16, groups=8), ops=_Ops)
    assert _Ops.built.count("GroupNorm") == 1 and _Ops.built.count("Linear") == 2 + 4 + 4 + 2


# ----------------------------------------------------------------------------------------------- layout
def test_rca_entries_follow_the_comfyui_transformer_index_order():
    unet = rca_entries(_cfg("unet_config.json"), "unet")
    cn = rca_entries(_cfg("controlnet_config.json"), "controlnet")
    assert len(unet) == 16 and len(cn) == 7
    # the SpatialTransformer paths of ComfyUI's SD-2 UNet / cldm ControlNet (fixtures written from ComfyUI 0.3.64)
    for entries, keys in ((unet, _keys("ldm_unet_keys.txt")), (cn, _keys("ldm_controlnet_keys.txt"))):
        st = sorted({k.rsplit(".proj_in.weight", 1)[0] for k in keys if k.endswith(".proj_in.weight")},
                    key=lambda p: list(keys).index(p + ".proj_in.weight"))
        assert [e.ldm_path for e in entries] == st
        for e in entries:
            assert keys[e.ldm_path + ".proj_in.weight"] == [e.spec.channels, e.spec.channels]
            assert e.spec.head_dim == 64 and e.spec.context_dim == 512
    assert unet[0].prefix == "down_blocks.0.image_attentions.0" and unet[0].ldm_path == "input_blocks.1.1"
    assert unet[6].prefix == "mid_block.image_attentions.0" and unet[6].ldm_path == "middle_block.1"
    assert unet[7].prefix == "up_blocks.1.image_attentions.0" and unet[7].ldm_path == "output_blocks.3.1"
    assert unet[-1].prefix == "up_blocks.3.image_attentions.2" and unet[-1].ldm_path == "output_blocks.11.1"


def test_release_keys_convert_to_comfyui_layout_exactly():
    """The real-size SeeSR UNet / ControlNet key lists, RCA removed, renamed to LDM: exactly the keys and shapes of
    ComfyUI's SD-2 UNet and cldm ControlNet (so the ControlNet loads strictly into ComfyUI's own class)."""
    for kind, release, ldm, cfg in (("unet", "seesr_unet_keys.txt", "ldm_unet_keys.txt", "unet_config.json"),
                                    ("controlnet", "seesr_controlnet_keys.txt", "ldm_controlnet_keys.txt",
                                     "controlnet_config.json")):
        sd = meta_state_dict_from_key_list(FIX / release)
        base, rca = split_rca(sd)
        assert len(rca) == (416 if kind == "unet" else 182)
        got = {k: list(v.shape) for k, v in to_ldm(base, _cfg(cfg), kind).items()}
        assert got == _keys(ldm), kind
    # ControlNet residual order: controlnet_down_blocks.k is zero_convs.k (ComfyUI adds output[k] to skip k, as
    # diffusers adds down_block_res_samples[k] to skip k), one per UNet skip
    m = module_map(_cfg("controlnet_config.json"), "controlnet")
    zero = {k: v for k, v in m.items() if k.startswith("controlnet_down_blocks.")}
    assert zero == {f"controlnet_down_blocks.{k}": f"zero_convs.{k}.0" for k in range(12)}
    with pytest.raises(ModelLoadError, match="no place"):
        to_ldm({"foo.weight": torch.zeros(1)}, _cfg("unet_config.json"), "unet")


def test_diffusers_rca_attachment_uses_the_same_entries():
    for cfg_name, build, kind in (("unet_config.json", build_unet, "unet"),
                                  ("controlnet_config.json", build_controlnet, "controlnet")):
        model = build(_cfg(cfg_name), device="meta")
        att = rca_of(model)
        assert [e for e, _ in att.blocks] == rca_entries(_cfg(cfg_name), kind)
        for e, block in att.blocks:
            assert model.get_submodule(e.prefix) is block


# ----------------------------------------------------------------------------------------------- native parts
@pytest.fixture(scope="module")
def parts():
    return load_native_parts(FIX)


def test_native_parts_equal_the_diffusers_models(parts):
    unet, cn = load_seesr(FIX)
    assert len(parts.unet_rca.entries) == rca_of(unet).count == 4
    assert len(parts.controlnet_rca.entries) == rca_of(cn).count == 2
    usd = unet.state_dict()
    for k, v in parts.unet_rca.state_dict().items():
        assert torch.equal(v, usd[k]), k
    cfg = parts.controlnet_config
    assert parts.controlnet_ldm.keys() == to_ldm(split_rca(cn.state_dict())[0], cfg, "controlnet").keys()
    # each RCA block computes what the diffusers model's block computes
    ctx = torch.randn(1, 145, 512)
    with torch.no_grad():
        for e, block in parts.unet_rca.blocks():
            x = torch.randn(1, e.spec.channels, 4, 4)
            torch.testing.assert_close(block(x, ctx), unet.get_submodule(e.prefix)(x, ctx), atol=0, rtol=0)


def test_native_parts_read_only_the_rca_tensors_of_the_unet(tmp_path, monkeypatch):
    import safetensors

    root = tmp_path / "seesr"
    shutil.copytree(FIX / "unet", root / "unet")
    shutil.copytree(FIX / "controlnet", root / "controlnet")
    read: list[str] = []
    real_open = safetensors.safe_open

    class Spy:
        def __init__(self, *a, **k):
            self.f = real_open(*a, **k)

        def __enter__(self):
            self.inner = self.f.__enter__()
            return self

        def __exit__(self, *a):
            return self.f.__exit__(*a)

        def keys(self):
            return self.inner.keys()

        def get_slice(self, k):
            return self.inner.get_slice(k)

        def get_tensor(self, k):
            read.append(k)
            return self.inner.get_tensor(k)

    monkeypatch.setattr(safetensors, "safe_open", Spy)
    p = load_native_parts(root)
    assert read and all(".image_attentions." in k for k in read)
    assert len(read) == len(p.unet_rca.state_dict())
    # strictness: a missing RCA tensor is an error naming it
    monkeypatch.undo()
    from safetensors.torch import load_file, save_file

    sd = load_file(str(root / "unet" / "diffusion_pytorch_model.safetensors"))
    sd.pop("mid_block.image_attentions.0.proj_out.bias")
    save_file(sd, str(root / "unet" / "diffusion_pytorch_model.safetensors"))
    with pytest.raises(ModelLoadError, match="1 missing"):
        load_native_parts(root)


def test_rca_set_has_the_checkpoint_layout():
    entries = rca_entries(_cfg("unet_config.json"), "unet")
    with torch.device("meta"):
        s = RCASet(entries)
    release = {k for k in _keys("seesr_unet_keys.txt") if ".image_attentions." in k}
    assert set(s.state_dict()) == release


# ----------------------------------------------------------------------------------------------- start point
def test_ksampler_start_is_seesrs_noised_lr_start_up_to_the_noise_scale():
    """VAEEncode latent + KSampler denoise 1.0 (σ_max, max_denoise): the UNet's first input is √ᾱ₉₉₉·z + ε;
    SeeSR's is √ᾱ₉₉₉·z + √(1−ᾱ₉₉₉)·ε: the same LR term, the noise larger by 1/√(1−ᾱ₉₉₉) = 1.00234."""
    ddpm = make_scheduler("ddpm")
    acp = ddpm.alphas_cumprod
    sigmas = sigmas_from_alphas(acp)
    sigma_max = float(sigmas[-1])
    assert sigma_max == pytest.approx(14.6146, abs=1e-4)
    g = torch.Generator().manual_seed(0)
    z, eps = torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 4, 8, 8, generator=g)
    comfy = ksampler_start(z, eps, sigma_max)
    a = float(acp[999])
    torch.testing.assert_close(comfy, math.sqrt(a) * z + eps, atol=1e-6, rtol=0)
    seesr = lr_embedding(z, eps, ddpm)
    torch.testing.assert_close(comfy - seesr, (1 - math.sqrt(1 - a)) * eps, atol=1e-6, rtol=0)
    assert 1 / math.sqrt(1 - a) == pytest.approx(1.002338, abs=1e-6)
    # the first sigma below σ_max (ddim_uniform: t = 981): a correctly noised sample of t = 981 instead
    s981 = float(sigmas[981])
    torch.testing.assert_close(ksampler_start(z, eps, s981, max_denoise=False),
                               math.sqrt(float(acp[981])) * z + math.sqrt(1 - float(acp[981])) * eps, atol=1e-6,
                               rtol=0)


# ----------------------------------------------------------------------------------------------- tiles
def test_blend_latent_tiles_is_exact_for_pointwise_functions_and_lists():
    x = torch.randn(2, 4, 24, 40)
    g = latent_grid(24, 40, 16, 8)
    assert len(g) > 1 and g.th == 16
    seen = []

    def fn(origins):
        seen.extend(origins)
        return [[x[..., y:y + 16, xx:xx + 16] * 2, x[..., y:y + 16, xx:xx + 16] + 1] for y, xx in origins]

    a, b = blend_latent_tiles(fn, g, group=3)
    torch.testing.assert_close(a, x * 2, atol=1e-6, rtol=0)
    torch.testing.assert_close(b, x + 1, atol=1e-6, rtol=0)
    assert seen == list(g.origins)  # official visit order (x outer, y inner)
    whole = latent_grid(12, 12, 16, 8)
    assert whole.whole and blend_latent_tiles(lambda o: [x[..., :12, :12]], whole)[0].shape == (2, 4, 12, 12)


# ----------------------------------------------------------------------------------------------- node layer
class SpatialTransformer(nn.Module):
    """Stand-in for ComfyUI's SpatialTransformer (matched by class name): a 1×1 conv."""

    def __init__(self, c):
        super().__init__()
        self.in_channels = c
        self.conv = nn.Conv2d(c, c, 1)

    def forward(self, x, context=None, transformer_options=None):
        return self.conv(x)


class FakeUNet(nn.Module):
    """Transformers at the LDM paths of the fixture config (channels 32 / 64), applied one after the other on
    channel-sliced features (shape checks only; the numbers are checked in a real ComfyUI)."""

    def __init__(self, entries, extra=()):
        super().__init__()
        self.paths = [e.ldm_path for e in entries] + list(extra)
        for e in entries:
            _place(self, e.ldm_path, SpatialTransformer(e.spec.channels))
        for p in extra:
            _place(self, p, SpatialTransformer(32))

    def forward(self, x, timesteps=None, context=None, y=None, control=None, transformer_options=None):
        outs = []
        for p in self.paths:
            m = self.get_submodule(p)
            outs.append(m(torch.ones(x.shape[0], m.in_channels, 4, 4)).mean())
        return x + torch.stack(outs).sum()


def _place(root, dotted, module):
    from aware_restore.core.seesr.rca import _place as place

    place(root, dotted, module)


class FakeBaseModel(nn.Module):
    def __init__(self, unet):
        super().__init__()
        self.diffusion_model = unet


@pytest.fixture(scope="module")
def native(parts, comfy_env):
    import comfy.model_patcher
    from aware_restore.nodes import seesr_native as sn

    cn_entries = parts.controlnet_rca.entries

    class FakeCldm(nn.Module):
        dtype = torch.float32

        def __init__(self):
            super().__init__()
            for e in cn_entries:
                _place(self, e.ldm_path, SpatialTransformer(e.spec.channels))
            self.calls = []

        def forward(self, x, hint, timesteps, context, y=None, **kwargs):
            self.calls.append({"x": x, "hint": hint, "t": timesteps, "context": context})
            for e in cn_entries:
                self.get_submodule(e.ldm_path)(torch.ones(x.shape[0], e.spec.channels, 2, 2))
            return {"output": [x.clone(), x.clone() * 2], "middle": [x.clone() * 3]}

    holder = sn.ControlHolder(FakeCldm(), parts.controlnet_rca)
    cp = comfy.model_patcher.ModelPatcher(holder, torch.device("cpu"), torch.device("cpu"))
    nat = sn.SeeSRNative(parts.unet_rca, cp, None, parts.unet_config, parts.controlnet_config)
    from aware_restore.core.arch import ModelDescriptor
    from aware_restore.nodes.common import ModelPayload

    up = comfy.model_patcher.ModelPatcher(parts.unet_rca, torch.device("cpu"), torch.device("cpu"))
    payload = ModelPayload(up, ModelDescriptor(nat, "seesr", "SeeSR", {}), "seesr")
    unet = FakeUNet(parts.unet_rca.entries)
    model = comfy.model_patcher.ModelPatcher(FakeBaseModel(unet), torch.device("cpu"), torch.device("cpu"))
    return sn, payload, model


def test_seesr_apply_patches_a_clone_and_shares_the_control(native):
    import comfy.patcher_extension as pe
    from aware_restore.core.ram import DapeEmbeds

    sn, payload, model = native
    prev = object.__new__(sn.SeeSRControl)  # a previous control on the positive only
    sn.SeeSRControl.__init__(prev, payload.descriptor.model, torch.zeros(1, 4, 512))
    pos = [[torch.randn(1, 77, 32), {"control": prev}], [torch.randn(1, 77, 32), {}]]
    neg = [[torch.randn(1, 77, 32), {}]]
    emb = DapeEmbeds(torch.randn(1, 145, 512), ("a",))
    image = torch.rand(1, 32, 48, 3)
    m, p2, n2 = sn.SeeSRApply.execute(model, pos, neg, payload, emb, image, 0.7, 0.1, 0.9).args
    assert m is not model and not model.wrappers and m.get_additional_models_with_key(sn.KEY) == [payload.patcher]
    assert len(m.get_wrappers(pe.WrappersMP.DIFFUSION_MODEL, sn.KEY)) == 1
    assert p2[0][1]["control"].previous_controlnet is prev
    assert p2[1][1]["control"] is n2[0][1]["control"]  # same previous (none) → one object → cond/uncond batch
    c = n2[0][1]["control"]
    assert c.strength == 0.7 and c.timestep_percent_range == (0.1, 0.9) and "control" not in neg[0][1]
    assert c.get_models()[-1] is payload.descriptor.model.control_patcher
    # applying again replaces the RCA wrapper (never RCA twice)
    m2 = sn.SeeSRApply.execute(m, p2, n2, payload, emb, image).args[0]
    assert len(m2.get_wrappers(pe.WrappersMP.DIFFUSION_MODEL, sn.KEY)) == 1
    # a UNet of another shape is refused
    bad = model.clone()
    bad.model = FakeBaseModel(FakeUNet(payload.descriptor.model.unet_rca.entries[:-1], extra=["output_blocks.9.1"]))
    with pytest.raises(WrongModelError, match="SD-2-base-compatible"):
        sn.SeeSRApply.execute(bad, pos, neg, payload, emb, image)
    with pytest.raises(InputError, match="after end_percent"):
        sn.SeeSRApply.execute(model, pos, neg, payload, emb, image, 1.0, 0.8, 0.2)


def test_rca_wrapper_runs_rca_after_each_transformer_for_one_call(native):
    import comfy.patcher_extension as pe

    sn, payload, model = native
    rca = payload.descriptor.model.unet_rca
    unet = model.model.diffusion_model
    states = torch.randn(1, 145, 512)
    patch = sn.RCAPatch(rca, states)
    seen = []
    for e, block in rca.blocks():
        block.register_forward_hook(lambda mod, args, out, e=e: seen.append((e.ldm_path, args[0].shape[0],
                                                                           args[1].shape[0])))
    x = torch.zeros(2, 4, 4, 4)
    opts = {"cond_or_uncond": [0, 1]}
    ex = pe.WrapperExecutor.new_class_executor(unet.forward, unet, [patch])
    with torch.no_grad():
        out = ex.execute(x, None, None, None, None, opts)
        plain = unet(x)
    assert [s[0] for s in seen] == [e.ldm_path for e in rca.entries] and all(b == 2 and c == 2 for _, b, c in seen)
    assert (out - plain).abs().max() > 0  # the RCA changed the result
    assert not any(m._forward_hooks for m in unet.modules())  # hooks gone after the call
    with torch.no_grad():
        torch.testing.assert_close(unet(x), plain)


class _MS:
    """Stand-in model_sampling (EPS, a made-up σ ↔ t)."""

    def timestep(self, sigma):
        return sigma * 10

    def calculate_input(self, sigma, x):
        return x / (sigma[:, None, None, None] ** 2 + 1) ** 0.5

    def percent_to_sigma(self, p):
        return 10.0 * (1 - p)


def test_control_crops_its_hint_per_tile_runs_rca_and_respects_the_range(native):
    sn, payload, _ = native
    nat = payload.descriptor.model
    net = nat.holder.control
    hint = torch.rand(1, 3, 8 * 12, 8 * 16)
    c = sn.SeeSRControl(nat, torch.randn(1, 145, 512)).set_cond_hint(hint, 0.5, (0.2, 0.8))
    c.pre_run(type("M", (), {"model_sampling": _MS()})(), _MS().percent_to_sigma)
    assert c.timestep_range == pytest.approx((8.0, 2.0))
    x = torch.randn(2, 4, 12, 16)
    cond = {"c_crossattn": torch.randn(2, 77, 32)}
    rca_calls = []
    handles = [b.register_forward_hook(lambda *a: rca_calls.append(1)) for _, b in nat.holder.rca.blocks()]
    net.calls.clear()
    out = c.get_control(x, torch.tensor([5.0, 5.0]), cond, 2, {})
    assert len(rca_calls) == len(nat.holder.rca.entries)
    call = net.calls[-1]
    torch.testing.assert_close(call["hint"], hint)  # batch 1 broadcasts (ComfyUI's broadcast_image_to)
    torch.testing.assert_close(call["t"], torch.tensor([50.0, 50.0]))
    torch.testing.assert_close(call["x"], x / math.sqrt(26))
    torch.testing.assert_close(out["middle"][0], call["x"] * 3 * 0.5)  # strength applied
    # a tile: the hint is the matching 8× crop of the full-size hint
    out = c.get_control(x[..., 4:12, 8:16], torch.tensor([5.0, 5.0]), cond, 2,
                        {sn.TILE_OPTION: (4, 8, 8, 8, 12, 16)})
    torch.testing.assert_close(net.calls[-1]["hint"], hint[..., 32:96, 64:128])
    # outside the percent range: no ControlNet call, the previous control's result (none) comes back
    n = len(net.calls)
    assert c.get_control(x, torch.tensor([9.0, 9.0]), cond, 2, {}) is None and len(net.calls) == n
    for h in handles:
        h.remove()
    c.cleanup()
    assert c.cond_hint is None and c.timestep_range is None


def test_tiling_wrapper_blends_per_tile_and_refuses_area_conds(native):
    import comfy.patcher_extension as pe

    sn, _, model = native
    tiles = sn.SeeSRTiles(16, 8)
    seen = []

    def calc(mdl, conds, x_in, timestep, model_options):
        seen.append(model_options.get("transformer_options", {}).get(sn.TILE_OPTION))
        return [x_in * 2, x_in - 1]

    ex = pe.WrapperExecutor.new_executor(calc, [tiles])
    x = torch.randn(1, 4, 24, 32)
    a, b = ex.execute(None, [[{}], None], x, torch.tensor([1.0]), {"transformer_options": {}})
    torch.testing.assert_close(a, x * 2, atol=1e-6, rtol=0)
    torch.testing.assert_close(b, x - 1, atol=1e-6, rtol=0)
    assert seen == [(y, xx, 16, 16, 24, 32) for y, xx in latent_grid(24, 32, 16, 8).origins]
    seen.clear()
    small = torch.randn(1, 4, 12, 16)
    assert torch.equal(ex.execute(None, [[{}]], small, torch.tensor([1.0]), {})[0], small * 2) and seen == [None]
    with pytest.raises(InputError, match="area or mask"):
        ex.execute(None, [[{"area": (8, 8, 0, 0)}]], x, torch.tensor([1.0]), {})

    class OtherControl:
        previous_controlnet = None

    with pytest.raises(InputError, match="only SeeSR's ControlNet"):
        ex.execute(None, [[{"control": OtherControl()}]], x, torch.tensor([1.0]), {})
    # the memory estimate is made for one tile
    got = []
    mem = pe.WrapperExecutor.new_executor(lambda m, s, c, model_options=None: got.append(list(s)),
                                          [sn.TiledMemory(tiles)])
    mem.execute(None, [1, 4, 200, 300], {}, model_options={})
    assert got == [[1, 4, 16, 16]]
    # the node adds both wrappers to a clone, once
    m = sn.SeeSRTiledSampling.execute(model, 16, 8).args[0]
    m = sn.SeeSRTiledSampling.execute(m, 24, 8).args[0]
    assert [w.tile for w in m.get_wrappers(pe.WrappersMP.CALC_COND_BATCH, sn.TILES_KEY)] == [24]
    assert len(m.get_wrappers(pe.WrappersMP.PREPARE_SAMPLING, sn.TILES_KEY)) == 1 and not model.wrappers
