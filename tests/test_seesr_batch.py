"""SeeSR on the native graph with batches and odd sizes, through the ComfyUI test double (issue 18 items 1-2):

* SeeSR Text Encode turns B images' tags into ONE conditioning whose row i is image i's SeeSR prompt encoded as core
  CLIPTextEncode encodes it (token chunks made equal the way ComfyUI batches conditionings);
* the shipped SeeSR workflow, fed a batch of 2 different images, hands the sampler one latent batch of 2 and one
  positive/negative of 2 rows each, row i = image i (a probe stands in for core KSampler, which the double lacks),
  and saves exactly 2 images at the final size;
* SeeSR Final Resize gives the library path's final size and pixels for odd, small and elongated inputs.

The same graph runs in a real ComfyUI in tests/test_comfyui_seesr_batch.py (real sampler, probe of the model calls).
"""

from __future__ import annotations

import json
from typing import ClassVar

import pytest
import torch
from aware_restore.core.errors import InputError, PayloadError
from aware_restore.core.ram import DapeEmbeds
from aware_restore.core.seesr import build_prompts, plan_sizes
from comfy_api.latest import io
from conftest import WORKFLOWS, make_test_image

NAMES = ["seesr_x4", "seesr_x4_tiled", "seesr_turbo"]


@pytest.fixture(scope="module")
def kit(comfy_env):
    import sd_nodes
    from aware_restore.nodes import dape, seesr

    _, clip, vae = sd_nodes.CheckpointLoaderSimple.execute("512-base-ema.safetensors").args
    tagger = dape.DAPELoader.execute("ram_swin_large_14m.pth", "DAPE.pth").args[0]
    return {"seesr": seesr, "dape": dape, "clip": clip, "vae": vae, "tagger": tagger}


def two_images(h: int = 40, w: int = 32) -> torch.Tensor:
    """Two different images (IMAGE [2,h,w,3]) that the tiny DAPE tags differently."""
    a = torch.from_numpy(make_test_image(h, w, 1, 3)).float() / 255
    b = torch.from_numpy(make_test_image(h, w, 7, 3)).float() / 255
    return torch.stack([a, 1 - b.flip(0)])


def clip_text_encode(clip, text: str):
    import sd_nodes

    return sd_nodes.CLIPTextEncode.execute(clip, text).args[0]


def _row_matches(row: torch.Tensor, single: torch.Tensor) -> bool:
    """Row ``[T, D]`` of a stacked conditioning vs a lone CLIPTextEncode result ``[1, T', D]`` (repeated to T)."""
    if row.shape[0] % single.shape[1]:
        return False
    return torch.equal(row[None], single.repeat(1, row.shape[0] // single.shape[1], 1))


# ----------------------------------------------------------------------------------------------- SeeSR Text Encode
def test_text_encode_row_i_is_image_is_prompt(kit):
    seesr, dape, clip = kit["seesr"], kit["dape"], kit["clip"]
    tags, _, embeds = dape.DAPETagger.execute(kit["tagger"], two_images()).args
    assert len(tags) == 2 and tags[0] != tags[1], tags  # the probe below is not vacuous
    out = seesr.SeeSRTextEncode.execute(clip, embeds, "a photo").args
    ui = seesr.SeeSRTextEncode.execute(clip, embeds, "a photo").ui
    (pos_t, pos_d), = out[0]
    (neg_t, neg_d), = out[1]
    assert pos_t.shape[0] == 2 and neg_t.shape[0] == 2 and pos_d["pooled_output"].shape[0] == 2
    for i, t in enumerate(tags):
        text, neg_text = build_prompts(t, "a photo")
        assert ui["text"][i] == f"{i + 1}: {text}"
        # row i: exactly what SeeSR Prompt -> CLIP Text Encode gives for image i alone
        text2, neg2 = seesr.SeeSRPrompt.execute(t, "a photo").args
        assert (text2, neg2) == (text, neg_text)
        (single, extra), = clip_text_encode(clip, text)
        assert _row_matches(pos_t[i], single) and torch.equal(pos_d["pooled_output"][i], extra["pooled_output"][0])
        assert not _row_matches(pos_t[1 - i], single)  # ... and not the other image's prompt
        (nsingle, nextra), = clip_text_encode(clip, neg_text)
        assert _row_matches(neg_t[i], nsingle) and torch.equal(neg_d["pooled_output"][i], nextra["pooled_output"][0])


def test_text_encode_pads_long_prompts_like_comfyui_and_one_image_is_clip_text_encode(kit):
    seesr, clip = kit["seesr"], kit["clip"]
    long_tags = ", ".join(f"tag{i}" for i in range(60))  # > 75 tokens: two 77-token chunks
    emb = DapeEmbeds(torch.zeros(3, 145, 512), ("cat", long_tags, "cat"))
    (pos_t, _), = seesr.SeeSRTextEncode.execute(clip, emb).args[0]
    assert pos_t.shape[:2] == (3, 154)
    for i, t in enumerate(emb.tags):
        (single, _), = clip_text_encode(clip, build_prompts(t)[0])
        assert _row_matches(pos_t[i], single)
    assert torch.equal(pos_t[0, :77], pos_t[0, 77:])  # the one-chunk rows are repeated, as ComfyUI pads
    one = DapeEmbeds(torch.zeros(1, 145, 512), ("dog, grass",))
    pos, neg = seesr.SeeSRTextEncode.execute(clip, one).args
    ref_pos, ref_neg = (clip_text_encode(clip, t) for t in build_prompts("dog, grass"))
    for ours, ref in ((pos, ref_pos), (neg, ref_neg)):
        assert len(ours) == 1 and torch.equal(ours[0][0], ref[0][0])
        assert ours[0][1].keys() == ref[0][1].keys()
        assert torch.equal(ours[0][1]["pooled_output"], ref[0][1]["pooled_output"])


def test_text_encode_refuses_what_it_cannot_stack(kit):
    seesr, clip = kit["seesr"], kit["clip"]
    with pytest.raises(PayloadError, match="'dape_embeds' input must be a DAPE_EMBEDS"):
        seesr.SeeSRTextEncode.execute(clip, torch.zeros(1, 145, 512))
    with pytest.raises(InputError, match="carries no tags"):
        seesr.SeeSRTextEncode.execute(clip, DapeEmbeds(torch.zeros(2, 145, 512)))

    class HookedClip:  # a CLIP with scheduled hooks gives several conditionings per prompt
        def tokenize(self, text):
            return clip.tokenize(text)

        def encode_from_tokens_scheduled(self, tokens):
            c = clip.encode_from_tokens_scheduled(tokens)
            return c + c

    with pytest.raises(InputError, match="2 scheduled conditionings"):
        seesr.SeeSRTextEncode.execute(HookedClip(), DapeEmbeds(torch.zeros(1, 145, 512), ("a",)))


# ----------------------------------------------------------------------------------------------- the workflow
class ProbeSampler(io.ComfyNode):
    """Stands in for core KSampler (same inputs): records what the sampler would get, returns the latent."""

    seen: ClassVar[list[dict]] = []

    @classmethod
    def define_schema(cls):
        import sd_nodes

        schema = sd_nodes.KSampler.define_schema()
        schema.node_id = "ProbeSampler"
        return schema

    @classmethod
    def execute(cls, model, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent_image,
                denoise=1.0):
        cls.seen.append({"model": model, "positive": positive, "negative": negative, "latent": latent_image})
        return io.NodeOutput(latent_image)


class ProbeSeeSRLoader(io.ComfyNode):
    """Stands in for Load SeeSR (the double has no comfy.ops / ControlNet loader)."""

    @classmethod
    def define_schema(cls):
        from aware_restore.nodes.seesr import SEESR_MODEL

        return io.Schema(node_id="ProbeSeeSRLoader", category="test", inputs=[],
                         outputs=[SEESR_MODEL.Output()])

    @classmethod
    def execute(cls):
        return io.NodeOutput("seesr model")


class ProbeApply(io.ComfyNode):
    """Stands in for SeeSR Apply (same inputs and outputs; model patching is tested in test_seesr_native.py and in
    a real ComfyUI): passes MODEL and conditioning through and records the DAPE embeddings and condition image."""

    seen: ClassVar[list[dict]] = []

    @classmethod
    def define_schema(cls):
        from aware_restore.nodes.seesr import SeeSRApply

        schema = SeeSRApply.define_schema()
        schema.node_id = "ProbeApply"
        return schema

    @classmethod
    def execute(cls, model, positive, negative, seesr_model, dape_embeds, image, control_strength=1.0,
                start_percent=0.0, end_percent=1.0):
        cls.seen.append({"dape_embeds": dape_embeds, "image": image})
        return io.NodeOutput(model, positive, negative)


class ProbeImages(io.ComfyNode):
    """A batch of images from the test (LoadImage loads one file)."""

    images: torch.Tensor | None = None

    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="ProbeImages", category="test", inputs=[], outputs=[io.Image.Output()])

    @classmethod
    def execute(cls):
        return io.NodeOutput(cls.images)


def run_batch(comfy_env, name: str, images: torch.Tensor, process_size: int = 64):
    from core_nodes import core_nodes
    from runner import Runner

    wf = json.loads((WORKFLOWS / "api" / f"{name}.json").read_text())
    for node in wf.values():
        ct, inp = node["class_type"], node["inputs"]
        if ct == "LoadImage":
            node.update(class_type="ProbeImages", inputs={})
        elif ct == "KSampler":
            node["class_type"] = "ProbeSampler"
        elif ct == "SeeSRLoader":
            node.update(class_type="ProbeSeeSRLoader", inputs={})
        elif ct == "SeeSRApply":
            node["class_type"] = "ProbeApply"
        elif ct == "CheckpointLoaderSimple":
            inp["ckpt_name"] = "512-base-ema.safetensors"
        elif ct == "SeeSRLREmbedding":
            inp["process_size"] = process_size
    ProbeImages.images, ProbeSampler.seen, ProbeApply.seen = images, [], []
    runner = Runner([*core_nodes(), *comfy_env.node_classes.values(), ProbeSampler, ProbeImages, ProbeSeeSRLoader,
                     ProbeApply])
    res = runner.run(wf)
    saved = [img for ui in res.ui.values() for img in ui.get("images", [])]
    return wf, res, saved


@pytest.mark.parametrize("name", NAMES)
def test_workflow_gives_one_row_per_image_and_two_final_images(comfy_env, kit, name):
    from aware_restore.core.seesr import condition_image

    dape, clip = kit["dape"], kit["clip"]
    images = two_images()  # 32x40 (w x h)
    wf, res, saved = run_batch(comfy_env, name, images)
    assert len(ProbeSampler.seen) == 1, "the sampler must run once for the whole batch"
    seen = ProbeSampler.seen[0]
    latent = seen["latent"]["samples"]
    (pos_t, pos_d), = seen["positive"]
    (neg_t, _), = seen["negative"]
    assert pos_d["pooled_output"].shape[0] == 2
    assert latent.shape[0] == pos_t.shape[0] == neg_t.shape[0] == 2
    (applied,) = ProbeApply.seen
    assert len(applied["dape_embeds"]) == 2 and applied["image"].shape[0] == 2
    tags = dape.DAPETagger.execute(kit["tagger"], images).args[0]
    plan = plan_sizes(32, 40, 4, 64)
    for i in range(2):
        (single, _), = clip_text_encode(clip, build_prompts(tags[i])[0])
        assert _row_matches(pos_t[i], single), f"positive row {i} is not image {i}'s prompt"
        cond_i = condition_image(images[i:i + 1].movedim(-1, 1), plan)
        torch.testing.assert_close(latent[i:i + 1], kit["vae"].encode(cond_i.movedim(1, -1)), rtol=0, atol=1e-5)
        assert applied["dape_embeds"].tags[i] == tags[i]
    assert len(saved) == 2, saved
    final = next(v for k, v in res.outputs.items() if wf[k]["class_type"] == "SeeSRFinalResize")[0]
    assert tuple(final.shape) == (2, 40 * 4, 32 * 4, 3)


# ----------------------------------------------------------------------------------------------- final size
SIZES = [(100, 100, 512), (101, 75, 512), (7, 33, 64), (3, 2, 512), (400, 9, 64)]  # (w, h, process size)


@pytest.mark.parametrize("w,h,process", SIZES)
def test_final_resize_equals_the_library_path(kit, monkeypatch, w, h, process):
    """The node path's final size and pixels equal the library path's (core ``upscale`` ends with ``to_final``
    on the colour-fixed processed image; the node gets that image and SeeSR LR Embedding's plan)."""
    import torch.nn.functional as F
    from aware_restore.core.seesr import (
        SamplerOptions,
        UpscaleOptions,
        load_seesr,
        pipeline,
    )
    from conftest import ROOT

    seesr = kit["seesr"]
    lr = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(w * h))
    caught = {}
    real_to_final = pipeline.to_final

    def spy(x, plan):
        caught["x"], caught["plan"], caught["out"] = x.clone(), plan, real_to_final(x, plan)
        return caught["out"]

    monkeypatch.setattr(pipeline, "to_final", spy)
    models = load_seesr(ROOT / "tests" / "fixtures" / "seesr")
    emb = DapeEmbeds(torch.randn(1, 145, 512), ("a photo",))
    out = pipeline.upscale(lr, *models, encode_text=lambda t: torch.zeros(1, 77, 32),
                           vae_encode=lambda x: torch.cat([F.avg_pool2d(x, 8), F.avg_pool2d(x, 8)[:, :1]], 1),
                           vae_decode=lambda z: F.interpolate(z[:, :3], scale_factor=8), dape_embeds=emb,
                           options=UpscaleOptions(upscale=4, process_size=process,
                                                  sampler=SamplerOptions(steps=1)))
    assert tuple(out.shape[-2:]) == (4 * h, 4 * w)
    _, cond, plan = seesr.SeeSRLREmbedding.execute(kit["vae"], lr.movedim(1, -1), 4, process).args
    assert plan == caught["plan"] and tuple(cond.shape[1:3]) == (plan.process[1], plan.process[0])
    (final,) = seesr.SeeSRFinalResize.execute(caught["x"].movedim(1, -1), plan).args
    assert tuple(final.shape) == (1, 4 * h, 4 * w, 3)
    torch.testing.assert_close(final.movedim(-1, 1), out, rtol=0, atol=1e-6)


def test_final_resize_official_examples_batches_and_alpha(kit):
    seesr = kit["seesr"]
    assert plan_sizes(100, 100).final == (400, 400) and plan_sizes(100, 100).process == (512, 512)
    assert plan_sizes(101, 75).final == (404, 300) and plan_sizes(101, 75).process == (688, 512)
    plan = plan_sizes(101, 75)
    x = torch.rand(3, 512, 688, 4)
    (y,) = seesr.SeeSRFinalResize.execute(x, plan).args
    assert tuple(y.shape) == (3, 300, 404, 4)
    (y1,) = seesr.SeeSRFinalResize.execute(x[1:2], plan).args
    torch.testing.assert_close(y[1:2], y1)  # batch-safe: each image resized on its own


def test_final_resize_refuses_a_wrong_image_or_payload(kit):
    seesr = kit["seesr"]
    with pytest.raises(InputError, match=r"'image' is 400×296 but 'seesr_size' plans a processed size of 688×512"):
        seesr.SeeSRFinalResize.execute(torch.rand(1, 296, 400, 3), plan_sizes(101, 75))
    with pytest.raises(PayloadError, match="'seesr_size' input must be a SEESR_SIZE"):
        seesr.SeeSRFinalResize.execute(torch.rand(1, 8, 8, 3), (400, 400))
