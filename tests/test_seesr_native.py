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


def _recorded(layer: type[nn.Module]) -> type[nn.Module]:
    """``layer`` that records its class name in ``_Ops.built`` when built."""

    class Recorded(layer):
        def __init__(self, *a, **k):
            _Ops.built.append(layer.__name__)
            super().__init__(*a, **k)

    return Recorded


class _Ops:
    """A stand-in for comfy.ops: records which layer classes were built."""

    built: typing.ClassVar[list[str]] = []
    Linear = _recorded(nn.Linear)
    Conv2d = nn.Conv2d
    GroupNorm = _recorded(nn.GroupNorm)
    LayerNorm = nn.LayerNorm


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
# Stand-ins for ComfyUI's UNet and cldm ControlNet that compute with real numbers: each transformer path reads a
# feature made from the input latent (1×1 conv in), the stand-in SpatialTransformer transforms it, and its result
# is projected back and summed into the output, so the RCA block hung after it changes the output by an amount
# the test recomputes by hand, row by row.
class SpatialTransformer(nn.Module):
    """Stand-in for ComfyUI's SpatialTransformer (matched by class name): a 1×1 conv."""

    def __init__(self, c):
        super().__init__()
        self.in_channels = c
        self.conv = nn.Conv2d(c, c, 1)

    def forward(self, x, context=None, transformer_options=None):
        return self.conv(x)


def _place(root, dotted, module):
    from aware_restore.core.seesr.rca import _place as place

    place(root, dotted, module)


class _Paths(nn.Module):
    """Transformers at LDM paths, each between a 1×1 conv from the 4 latent channels and one back."""

    def __init__(self, entries, extra=(), seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.paths = [(e.ldm_path, e.spec.channels) for e in entries] + [(p, 32) for p in extra]
        self.ins, self.outs = nn.ModuleList(), nn.ModuleList()
        for p, c in self.paths:
            _place(self, p, SpatialTransformer(c))
            self.ins.append(nn.Conv2d(4, c, 1))
            self.outs.append(nn.Conv2d(c, 4, 1))

    def run(self, x, after=None):
        """Σ_p out_p(ST_p(in_p(x))); ``after(path, h)`` (the reference) transforms each transformer's output."""
        total = torch.zeros_like(x)
        for (p, _), cin, cout in zip(self.paths, self.ins, self.outs):
            h = self.get_submodule(p)(cin(x))
            if after is not None:
                h = after(p, h)
            total = total + cout(h)
        return total


class FakeUNet(_Paths):
    def forward(self, x, timesteps=None, context=None, y=None, control=None, transformer_options=None):
        return x + self.run(x)


class FakeBaseModel(nn.Module):
    def __init__(self, unet, model_type="EPS"):
        super().__init__()
        self.diffusion_model = unet
        self.model_type = type("ModelType", (), {"name": model_type})()


class FakeCldm(_Paths):
    dtype = torch.float32

    def __init__(self, entries):
        super().__init__(entries, seed=1)
        self.calls = []

    def forward(self, x, hint, timesteps, context, y=None, **kwargs):
        self.calls.append({"x": x, "hint": hint, "t": timesteps, "context": context})
        r = self.run(x)
        return {"output": [r, r * 2], "middle": [r * 3 + hint.mean()]}


def _reference(paths, rca, x, rows):
    """``paths.run`` with RCA block ``rca[path]`` after each transformer, image states ``rows`` [batch, N, 512]."""
    blocks = {e.ldm_path: b for e, b in rca.blocks()}
    return paths.run(x, after=lambda p, h: blocks[p](h, rows) if p in blocks else h)


@pytest.fixture(scope="module")
def native(parts, comfy_env):
    import comfy.controlnet
    import comfy.model_patcher
    import comfy.ops
    from aware_restore.core.arch import ModelDescriptor
    from aware_restore.nodes import seesr_native as sn
    from aware_restore.nodes import seesr_patch
    from aware_restore.nodes.common import ModelPayload

    cpu = torch.device("cpu")
    rca, patcher = seesr_patch.build_rca(parts, comfy.ops.manual_cast, None, seesr_patch.core_patcher_class(), cpu,
                                         cpu, "fixture")
    control = comfy.controlnet.ControlNet(FakeCldm(parts.controlnet_rca.entries), load_device=cpu)
    nat = sn.SeeSRNative(rca, patcher, control, parts.unet_config, parts.controlnet_config)
    payload = ModelPayload(patcher, ModelDescriptor(nat, "seesr", "SeeSR", {}), "seesr")
    unet = FakeUNet(parts.unet_rca.entries)
    model = comfy.model_patcher.ModelPatcher(FakeBaseModel(unet), cpu, cpu)
    return sn, payload, model


@pytest.mark.parametrize("lazy", [False, True])
def test_rca_blocks_load_strictly_with_comfy_ops_also_when_weights_are_lazy(parts, comfy_env, monkeypatch, lazy):
    """DynamicVRAM's comfy.ops create Linear weights only when the state dict is loaded: a module built that way
    has no Linear weights in state_dict(), so a check against it would call every weight unexpected. The loader
    checks the file against the plain blocks (config shapes) and loads the ComfyUI-ops blocks strictly."""
    import comfy.memory_management
    import comfy.ops
    from aware_restore.core.errors import StrictLoadError
    from aware_restore.nodes import seesr_patch

    monkeypatch.setattr(comfy.memory_management, "aimdo_enabled", lazy)
    probe = RCASet(parts.unet_rca.entries, ops=comfy.ops.manual_cast, device="meta")
    probe_keys, full_keys = set(probe.state_dict()), set(parts.unet_rca.state_dict())
    if lazy:  # what a check against state_dict() would have seen: every Linear tensor "unexpected"
        assert all(m.weight is None for m in probe.modules() if isinstance(m, nn.Linear))
        linear = {n for n, m in probe.named_modules() if isinstance(m, nn.Linear)}
        assert full_keys - probe_keys == {k for k in full_keys if k.rsplit(".", 1)[0] in linear}
        assert len(linear) == 12 * len(probe.entries) - (2 * len(probe.entries) if not probe.entries[0].spec.linear
                                                         else 0) and not probe_keys - full_keys
    else:
        assert probe_keys == full_keys
    cpu = torch.device("cpu")
    rca, patcher = seesr_patch.build_rca(parts, comfy.ops.manual_cast, None, seesr_patch.core_patcher_class(), cpu,
                                         cpu, "fixture")
    assert patcher.model is rca
    got = rca.unet.state_dict()
    for k, v in parts.unet_rca.state_dict().items():
        assert torch.equal(got[k], v), k
    for k, v in parts.controlnet_rca.state_dict().items():
        assert torch.equal(rca.controlnet.state_dict()[k], v), k
    ctx = torch.randn(2, 145, 512)
    with torch.no_grad():
        for (e, ours), (_, ref) in zip(rca.unet.blocks(), parts.unet_rca.blocks()):
            x = torch.randn(2, e.spec.channels, 3, 5)
            torch.testing.assert_close(ours(x, ctx), ref(x, ctx), atol=0, rtol=0)

    class Missing:  # the plain blocks without one tensor: a strict error naming it
        def __init__(self, rca_set):
            self.entries, self._s = rca_set.entries, rca_set

        def state_dict(self):
            sd = dict(self._s.state_dict())
            sd.pop("mid_block.image_attentions.0.transformer_blocks.0.attn2.to_k.weight")
            return sd

    bad = type("Parts", (), {"unet_rca": Missing(parts.unet_rca), "controlnet_rca": parts.controlnet_rca})()
    with pytest.raises(StrictLoadError, match="attn2.to_k.weight"):
        seesr_patch.build_rca(bad, comfy.ops.manual_cast, None, seesr_patch.core_patcher_class(), cpu, cpu,
                              "fixture")


def test_seesr_apply_patches_a_clone_and_shares_the_control(native):
    import comfy.patcher_extension as pe
    from aware_restore.core.ram import DapeEmbeds

    sn, payload, model = native
    nat = payload.descriptor.model
    prev = sn.SeeSRControl(nat, torch.zeros(1, 4, 512))  # a previous control on the positive only
    pos = [[torch.randn(1, 77, 32), {"control": prev}], [torch.randn(1, 77, 32), {}]]
    neg = [[torch.randn(1, 77, 32), {}]]
    emb = DapeEmbeds(torch.randn(1, 145, 512), ("a",))
    image = torch.rand(1, 32, 48, 3)
    m, p2, n2 = sn.SeeSRApply.execute(model, pos, neg, payload, emb, image, 0.7, 0.1, 0.9).args
    assert m is not model and not model.wrappers and m.get_additional_models_with_key(sn.KEY) == [nat.rca_patcher]
    assert len(m.get_wrappers(pe.WrappersMP.DIFFUSION_MODEL, sn.KEY)) == 1
    assert p2[0][1]["control"].previous_controlnet is prev
    assert p2[1][1]["control"] is n2[0][1]["control"]  # same previous (none) → one object → cond/uncond batch
    c = n2[0][1]["control"]
    assert c.strength == 0.7 and c.timestep_percent_range == (0.1, 0.9) and "control" not in neg[0][1]
    # the ControlNet stays under core's own patcher; the RCA blocks come with it
    assert c.get_models()[-2:] == [nat.rca_patcher, nat.control.control_model_wrapped]
    assert c.multigpu_clones == {}
    with pytest.raises(InputError, match="multi-GPU"):
        c.deepclone_multigpu(torch.device("cpu"))
    # applying again replaces the RCA wrapper (never RCA twice)
    m2 = sn.SeeSRApply.execute(m, p2, n2, payload, emb, image).args[0]
    assert len(m2.get_wrappers(pe.WrappersMP.DIFFUSION_MODEL, sn.KEY)) == 1
    # a UNet of another shape is refused
    bad = model.clone()
    bad.model = FakeBaseModel(FakeUNet(nat.rca.unet.entries[:-1], extra=["output_blocks.9.1"]))
    with pytest.raises(WrongModelError, match="SD-2-base-compatible"):
        sn.SeeSRApply.execute(bad, pos, neg, payload, emb, image)
    with pytest.raises(InputError, match="after end_percent"):
        sn.SeeSRApply.execute(model, pos, neg, payload, emb, image, 1.0, 0.8, 0.2)


BAD_APPLY = {
    # name: (what to change, error class, message pattern naming the socket(s))
    "v_prediction_model": ("v", WrongModelError, r"'model' input predicts V_PREDICTION"),
    "dape_width_768": ("width", InputError, r"'dape_embeds' input is 768 wide but the 'seesr_model'"),
    "dape_batch_3_image_batch_2": ("batch", InputError, r"'dape_embeds' input holds 3 images but the 'image'"),
    "dape_nan": ("nan", InputError, r"'dape_embeds' input holds NaN"),
}


@pytest.mark.parametrize("case", sorted(BAD_APPLY))
def test_seesr_apply_refuses_bad_dape_embeddings_and_v_models(native, case):
    from aware_restore.core.ram import DapeEmbeds

    sn, payload, model = native
    change, err, pattern = BAD_APPLY[case]
    states, image = torch.randn(2, 145, 512), torch.rand(2, 32, 48, 3)
    if change == "v":
        model = model.clone()
        model.model = FakeBaseModel(model.model.diffusion_model, "V_PREDICTION")
    elif change == "width":
        states = torch.randn(2, 145, 768)
    elif change == "batch":
        states = torch.randn(3, 145, 512)
    else:
        states[1, 3, 5] = float("nan")
    with pytest.raises(err, match=pattern):
        sn.SeeSRApply.execute(model, [[torch.randn(1, 77, 32), {}]], [[torch.randn(1, 77, 32), {}]], payload,
                              DapeEmbeds(states, ("a",) * max(states.shape[0], 1)), image)


def test_dape_rows_map_embedding_i_to_latent_row_i_in_every_chunk():
    from aware_restore.nodes.seesr_patch import dape_rows

    s = torch.arange(3.0).reshape(3, 1, 1)
    assert dape_rows(s, 6, 2).flatten().tolist() == [0, 1, 2, 0, 1, 2]  # cond rows 0..2, then uncond rows 0..2
    assert dape_rows(s, 3, 1).flatten().tolist() == [0, 1, 2]
    assert dape_rows(s[:1], 6, 2).flatten().tolist() == [0] * 6  # one set of embeddings for every image
    with pytest.raises(InputError, match="'dape_embeds' input holds 3 images but the 'latent_image' batch has 2"):
        dape_rows(s, 4, 2)
    with pytest.raises(InputError, match="'image' input holds 3 images"):
        dape_rows(s, 8, 2, what="image")
    with pytest.raises(InputError, match="equal cond/uncond chunks"):
        dape_rows(s, 7, 2)


def test_rca_wrapper_conditions_latent_row_i_on_dape_row_i_under_cfg(native):
    """Two latent images, cond + uncond stacked (ComfyUI's batch of 4, cond_or_uncond [0, 1]): each output row is
    the UNet with RCA on that image's DAPE row, computed by hand; hooks are gone after the call."""
    import comfy.patcher_extension as pe

    sn, payload, model = native
    rca = payload.descriptor.model.rca.unet
    unet = model.model.diffusion_model
    states = torch.randn(2, 145, 512) * 2
    patch = sn.RCAPatch(rca, states)
    x = torch.randn(4, 4, 4, 4)
    ex = pe.WrapperExecutor.new_class_executor(unet.forward, unet, [patch])
    with torch.no_grad():
        out = ex.execute(x, None, None, None, None, {"cond_or_uncond": [0, 1]})
        plain = unet(x)
        want = x + _reference(unet, rca, x, torch.cat([states, states]))
        swapped = x + _reference(unet, rca, x, torch.cat([states.flip(0), states.flip(0)]))
    torch.testing.assert_close(out, want, atol=1e-5, rtol=1e-5)
    assert (out - plain).abs().max() > 1e-2 and (out - swapped).abs().max() > 1e-3  # RCA and the rows matter
    assert not any(m._forward_hooks for m in unet.modules())
    with torch.no_grad():
        torch.testing.assert_close(unet(x), plain)
        # keyword call, one chunk, one set of embeddings for both images
        one = sn.RCAPatch(rca, states[:1])
        out1 = pe.WrapperExecutor.new_class_executor(unet.forward, unet, [one]).execute(
            x[:2], transformer_options={})
        torch.testing.assert_close(out1, x[:2] + _reference(unet, rca, x[:2], states[:1].expand(2, -1, -1)),
                                   atol=1e-5, rtol=1e-5)
    with pytest.raises(InputError, match="'dape_embeds' input holds 2 images but the 'latent_image' batch has 3"):
        ex.execute(torch.randn(6, 4, 4, 4), None, None, None, None, {"cond_or_uncond": [0, 1]})


class _MS:
    """Stand-in model_sampling (EPS, a made-up σ ↔ t)."""

    def timestep(self, sigma):
        return sigma * 10

    def calculate_input(self, sigma, x):
        return x / (sigma[:, None, None, None] ** 2 + 1) ** 0.5

    def percent_to_sigma(self, p):
        return 10.0 * (1 - p)


def test_control_computes_rca_per_row_crops_its_hint_per_tile_and_respects_the_range(native):
    from aware_restore.nodes.seesr_tiling import TILE_OPTION

    sn, payload, _ = native
    nat = payload.descriptor.model
    net = nat.control.control_model
    hint = torch.rand(2, 3, 8 * 12, 8 * 16)
    states = torch.randn(2, 145, 512) * 2
    c = sn.SeeSRControl(nat, states).set_cond_hint(hint, 0.5, (0.2, 0.8))
    c.pre_run(type("M", (), {"model_sampling": _MS()})(), _MS().percent_to_sigma)
    assert c.timestep_range == pytest.approx((8.0, 2.0))
    x = torch.randn(4, 4, 12, 16)  # 2 images × (cond, uncond)
    cond = {"c_crossattn": torch.randn(4, 77, 32)}
    net.calls.clear()
    with torch.no_grad():
        out = c.get_control(x, torch.tensor([5.0] * 4), cond, 2, {})
        xin = x / math.sqrt(26)
        r = _reference(net, nat.rca.controlnet, xin, torch.cat([states, states]))
    call = net.calls[-1]
    torch.testing.assert_close(call["hint"], torch.cat([hint, hint]))  # hint row i with latent row i, per chunk
    torch.testing.assert_close(call["t"], torch.tensor([50.0] * 4))
    torch.testing.assert_close(call["x"], xin)
    torch.testing.assert_close(out["output"][1], r * 2 * 0.5, atol=1e-5, rtol=1e-5)  # RCA per row, strength
    torch.testing.assert_close(out["middle"][0], (r * 3 + call["hint"].mean()) * 0.5, atol=1e-5, rtol=1e-5)
    # a tile: the hint is the matching 8× crop of the full-size hint
    c.get_control(x[..., 4:12, 8:16], torch.tensor([5.0] * 4), cond, 2, {TILE_OPTION: (4, 8, 8, 8, 12, 16)})
    torch.testing.assert_close(net.calls[-1]["hint"], torch.cat([hint, hint])[..., 32:96, 64:128])
    # outside the percent range: no ControlNet call, the previous control's result (none) comes back
    n = len(net.calls)
    assert c.get_control(x, torch.tensor([9.0] * 4), cond, 2, {}) is None and len(net.calls) == n
    # a hint of another aspect ratio is refused (it would be cropped), one of the same aspect is resized
    c.cleanup()
    assert c.cond_hint is None and c.timestep_range is None
    c.pre_run(type("M", (), {"model_sampling": _MS()})(), _MS().percent_to_sigma)
    wide = sn.SeeSRControl(nat, states).set_cond_hint(torch.rand(2, 3, 40, 100), 1.0)
    wide.pre_run(type("M", (), {"model_sampling": _MS()})(), _MS().percent_to_sigma)
    with pytest.raises(InputError, match="'image' input is 100×40 but the latent is 128×96"):
        wide.get_control(x, torch.tensor([5.0] * 4), cond, 2, {})
    half = sn.SeeSRControl(nat, states).set_cond_hint(hint[..., ::2, ::2], 1.0)
    half.pre_run(type("M", (), {"model_sampling": _MS()})(), _MS().percent_to_sigma)
    half.get_control(x, torch.tensor([5.0] * 4), cond, 2, {})
    assert net.calls[-1]["hint"].shape == (4, 3, 96, 128)
    # core's tile protocol: one pixel region of the canvas becomes the hint of a copy
    crop = c.spatial_crop_inputs(regions=[(64, 32, 128, 96)], source_width=128, source_height=96, target_width=64,
                                 target_height=64)
    assert crop is not c and torch.equal(crop.cond_hint_original, hint[..., 32:96, 64:128])


def test_tiling_wrapper_blends_per_tile_and_refuses_area_conds(native):
    import comfy.patcher_extension as pe
    from aware_restore.nodes.seesr_tiling import TILE_OPTION

    sn, _, model = native
    tiles = sn.SeeSRTiles(16, 8, sn.SeeSRControl)
    seen = []

    def calc(mdl, conds, x_in, timestep, model_options):
        seen.append(model_options.get("transformer_options", {}).get(TILE_OPTION))
        return [x_in * 2, x_in - 1]

    ex = pe.WrapperExecutor.new_executor(calc, [tiles])
    x = torch.randn(1, 4, 24, 32)
    a, b = ex.execute(None, [[{}], None], x, torch.tensor([1.0]), {"transformer_options": {}})
    torch.testing.assert_close(a, x * 2, atol=1e-6, rtol=0)
    torch.testing.assert_close(b, x - 1, atol=1e-6, rtol=0)
    assert seen == [(y, xx, 16, 16, 24, 32) for y, xx in latent_grid(24, 32, 16, 8).origins]
    seen.clear()  # the same by keyword
    a, _ = ex.execute(None, conds=[[{}], None], x_in=x, timestep=torch.tensor([1.0]), model_options={})
    torch.testing.assert_close(a, x * 2, atol=1e-6, rtol=0)
    assert len(seen) == len(latent_grid(24, 32, 16, 8))
    seen.clear()
    small = torch.randn(1, 4, 12, 16)
    assert torch.equal(ex.execute(None, [[{}]], small, torch.tensor([1.0]), {})[0], small * 2) and seen == [None]
    with pytest.raises(InputError, match="area or mask"):
        ex.execute(None, [[{"area": (8, 8, 0, 0)}]], x, torch.tensor([1.0]), {})

    class OtherControl:
        previous_controlnet = None

    with pytest.raises(InputError, match="only SeeSR's ControlNet"):
        ex.execute(None, [[{"control": OtherControl()}]], x, torch.tensor([1.0]), {})
    # the node adds both wrappers to a clone, once
    m = sn.SeeSRTiledSampling.execute(model, 16, 8).args[0]
    m = sn.SeeSRTiledSampling.execute(m, 24, 8).args[0]
    assert [w.tile for w in m.get_wrappers(pe.WrappersMP.CALC_COND_BATCH, sn.TILES_KEY)] == [24]
    assert len(m.get_wrappers(pe.WrappersMP.PREPARE_SAMPLING, sn.TILES_KEY)) == 1 and not model.wrappers


def test_tiled_memory_estimate_goes_through_core_prepare_sampling(native):
    """Core's prepare_sampling passes force_full_load= / force_offload= to PREPARE_SAMPLING wrappers (newer
    cores); the wrapper estimates one tile and forwards them. Older cores' positional form works too."""
    import comfy.model_management as mm
    import comfy.patcher_extension as pe
    import comfy.sampler_helpers

    sn, _, model = native
    m = sn.SeeSRTiledSampling.execute(model, 16, 8).args[0]

    def model_options():  # what core's sampler builds from the patcher's wrappers
        return {"transformer_options": {"wrappers": {t: {k: list(w) for k, w in d.items()}
                                                     for t, d in m.wrappers.items()}}}

    options = model_options()
    got = []

    def spy(executor, mdl, noise_shape, conds, **kwargs):  # innermost wrapper: what reaches core's loader
        got.append((list(noise_shape), kwargs))
        return mdl.model, conds, []

    pe.add_wrapper_with_key(pe.WrappersMP.PREPARE_SAMPLING, "spy", spy, options, is_model_options=True)
    mm.loaded_calls.clear()
    comfy.sampler_helpers.prepare_sampling(m, [1, 4, 200, 300], {}, options, force_full_load=True)
    assert got == [([1, 4, 16, 16], {"model_options": options, "force_full_load": True, "force_offload": False})]
    got.clear()
    old = pe.WrapperExecutor.new_executor(lambda mdl, s, c, model_options=None: got.append(list(s)),
                                          [sn.TiledMemory(sn.SeeSRTiles(16, 8))])
    old.execute(None, [1, 4, 200, 300], {}, model_options={})
    assert got == [[1, 4, 16, 16]]
    # without the spy, the double's loader gets the one-tile estimate
    comfy.sampler_helpers.prepare_sampling(m, [1, 4, 200, 300], {}, model_options(), force_full_load=True)
    assert mm.loaded_calls[-1]["memory_required"] == 16 * 16 * 4 * 4 * 64


def test_interrupt_is_not_swallowed_and_oom_detection_follows_core(comfy_env):
    """ComfyUI's InterruptProcessingException is a BaseException: ``except Exception`` in the pack's loops lets it
    through. An accelerator "out of memory" error counts as OOM in core and in the pack's back-off."""
    import comfy.model_management as mm
    from aware_restore.core.tiling import is_oom, retry_on_oom
    from aware_restore.nodes import common

    mm.interrupt_current_processing(True)
    calls = []

    def run(tile):
        calls.append(tile)
        common.progress_callback(2)(1, 2)
        return torch.zeros(1)

    with pytest.raises(mm.InterruptProcessingException):
        retry_on_oom(run, 128, 512)
    assert calls == [128] and not mm.processing_interrupted()
    accel = getattr(torch, "AcceleratorError", None)
    if accel is not None:
        e = accel("CUDA error: out of memory")
        assert mm.is_oom(e) and is_oom(e) and common.is_oom(e)
    assert is_oom(torch.OutOfMemoryError()) and common.is_oom(torch.OutOfMemoryError())
    assert not is_oom(RuntimeError("shape mismatch")) and not common.is_oom(RuntimeError("shape mismatch"))
