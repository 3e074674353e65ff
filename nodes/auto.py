"""Degradation-aware restoration nodes: a per-region degradation map, a router, one-node auto restoration and a
fidelity check (library: ``core/auto``).

Socket design:

* ``AR_DEGRADATION_MAP`` carries a :class:`..core.auto.DegradationMap` (per-pixel and whole-image probabilities of
  the ten DA-CLIP degradations and ``clean``); the map node also gives one ``MASK`` per label for core mask nodes.
* ``ARRoute`` only decides: it turns a map into route masks (``irsde`` / ``seesr`` / ``keep``) and a report, for
  graphs that run each restorer themselves and composite with core nodes (ImageCompositeMasked).
* ``ARAutoRestore`` decides and restores in one node: IR-SDE runs inside it (on the images routed to it only);
  SeeSR does not — its native form is a sampling graph (patched SD-2 MODEL, conditionings, VAE, KSampler) that
  users tune, so the node takes that branch's IMAGE on a *lazy* input: ComfyUI runs the SeeSR branch only when
  some image routes to it. Regional results are blended into the input with feathered masks.
* ``ARFidelity`` compares results with their input and picks the most faithful of several candidates.
"""

from __future__ import annotations

import json
import logging

from comfy_api.latest import io, ui

from ..core.auto import (
    MAP_LABELS,
    DegradationMap,
    FidelityThresholds,
    Thresholds,
    heat_image,
    measure,
    most_faithful,
    plan,
    preview,
)
from ..core.auto.degmap import DEFAULT_WINDOW_BATCH, degradation_map
from ..core.auto.pipeline import auto_restore, clean_probability
from ..core.daclip.classify import probability_table
from ..core.errors import InputError
from ..core.irsde.arch import restore_memory
from . import common
from .daclip import DACLIP
from .irsde import IRSDE, TILE, seed_input, tile_input

log = logging.getLogger(__name__)

CATEGORY = f"{common.CATEGORY}/Auto"
DEGRADATION_MAP = io.Custom("AR_DEGRADATION_MAP")
DMAP = common.PayloadSocket(DEGRADATION_MAP, "degradation_map", "DA-CLIP Degradation Map", DegradationMap)
_T = Thresholds()
_F = FidelityThresholds()


def threshold_inputs() -> list:
    return [
        io.Float.Input("degraded", default=_T.degraded, min=0.0, max=1.0, step=0.01,
                       tooltip="A degradation is restored when its probability (whole image, or its mean over the "
                               "map) reaches this; below it the image passes through unchanged."),
        io.Float.Input("full_strength", default=_T.full, min=0.0, max=1.0, step=0.01,
                       tooltip="Probability at which the restoration is applied fully; between 'degraded' and this "
                               "the result is blended in at 'min_strength' .. 1."),
        io.Float.Input("min_strength", default=_T.min_strength, min=0.0, max=1.0, step=0.05,
                       tooltip="Blend weight of the restoration just above 'degraded'."),
        io.Float.Input("region", default=_T.region, min=0.0, max=1.0, step=0.01,
                       tooltip="Per-pixel probability of the routed degradations that marks a region for "
                               "restoration (the rest of the image is kept)."),
        io.Float.Input("whole_image", default=_T.whole_image, min=0.0, max=1.0, step=0.01,
                       tooltip="When this fraction of the image is degraded, the whole image is restored."),
        io.Int.Input("low_resolution", default=_T.low_resolution, min=0, max=8192, step=8,
                     tooltip="Images whose shorter side is below this go to SeeSR (when a SeeSR result is "
                             "available)."),
        io.Int.Input("feather", default=_T.feather, min=0, max=256,
                     tooltip="Feather radius (pixels) of the regional masks."),
    ]


def thresholds(degraded=_T.degraded, full_strength=_T.full, min_strength=_T.min_strength, region=_T.region,
               whole_image=_T.whole_image, low_resolution=_T.low_resolution, feather=_T.feather) -> Thresholds:
    return Thresholds(degraded, full_strength, min_strength, region, whole_image, int(low_resolution), int(feather))


def _masks(t):
    """MASK [B,H,W] float32 on the CPU."""
    return t.float().cpu().contiguous()


class DACLIPDegradationMap(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DACLIPDegradationMap",
            display_name="DA-CLIP Degradation Map",
            category=CATEGORY,
            description="Where is the image degraded, and how? Classifies sliding windows at DA-CLIP's input "
                        "resolution (the ten DA-CLIP degradations and 'clean') and blends them into one "
                        "probability map per label: one MASK per label, a coloured preview with a legend, and a "
                        "map for the router. The whole-image probabilities are shown on the node.",
            is_output_node=True,
            inputs=[
                *DACLIP.image_inputs("Image batch to map (each image separately)."),
                io.Int.Input("window", default=0, min=0, max=4096, step=8,
                             tooltip="Window side in image pixels (0 = the model's input size, 224 for the released "
                                     "models: windows are seen at their own scale)."),
                io.Float.Input("overlap", default=0.5, min=0.0, max=0.5, step=0.05,
                               tooltip="Window overlap as a fraction of the window (at most 0.5); the overlap ramps "
                                       "the blend, so the map has no steps at window seams."),
                io.Int.Input("window_batch", default=DEFAULT_WINDOW_BATCH, min=1, max=256,
                             tooltip="Windows classified per model call (bounds the memory)."),
            ],
            outputs=[
                DMAP.output("Per-pixel and whole-image probabilities, for 'AR Route' and 'AR Auto Restore'."),
                io.Image.Output(display_name="preview",
                                tooltip="The image tinted with the colour of its most likely label per region, a "
                                        "legend beneath."),
                io.String.Output(display_name="table",
                                 tooltip="Whole-image probabilities: one row per label, one column per image."),
                *[io.Mask.Output(display_name=label, tooltip=f"Probability of '{label}' per pixel (MASK, 0..1).")
                  for label in MAP_LABELS],
            ],
        )

    @classmethod
    def execute(cls, daclip_model, image, window=0, overlap=0.5, window_batch=DEFAULT_WINDOW_BATCH
                ) -> io.NodeOutput:
        rgb, _ = common.image_to_bchw(image)
        (module,) = common.load_models(DACLIP.reserve(daclip_model, int(window_batch)))
        win = int(window) or int(module.image_size)
        grid_total = rgb.shape[0] * 64  # the bar is rescaled by the core's own totals
        dmap = degradation_map(module, rgb, window=win, overlap=round(float(overlap) * win),
                               window_batch=int(window_batch), progress=common.progress_callback(grid_total))
        table = probability_table(list(dmap.labels), dmap.global_probs)
        masks = [_masks(dmap.mask(label)) for label in MAP_LABELS]
        return io.NodeOutput(dmap, common.bchw_to_image(preview(dmap, rgb)), table, *masks,
                             ui=ui.PreviewText(table))


class ARRoute(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ARRoute",
            display_name="AR Route (decide restoration)",
            category=CATEGORY,
            description="Decides per image (and region) which restoration a degradation map calls for: IR-SDE "
                        "universal restoration (haze, noise, JPEG, low light, rain, snow, ...), SeeSR (low "
                        "resolution, blur; only when SeeSR is available) or keep. Gives feathered masks for each "
                        "route, to drive your own restorers and ImageCompositeMasked, and a report (shown on the "
                        "node) of what was decided and why.",
            is_output_node=True,
            inputs=[
                DMAP.input(),
                io.Boolean.Input("seesr_available", default=False,
                                 tooltip="Whether your graph has a SeeSR branch; without it low-resolution and "
                                         "blurred images go to IR-SDE or are kept."),
                *threshold_inputs(),
            ],
            outputs=[
                io.Mask.Output(display_name="irsde_mask", tooltip="Where (and how strongly) to apply IR-SDE."),
                io.Mask.Output(display_name="seesr_mask", tooltip="Where to apply SeeSR."),
                io.Mask.Output(display_name="keep_mask", tooltip="Where to keep the input (1 - the others)."),
                io.String.Output(display_name="route", tooltip="The route of each image, one per line."),
                io.String.Output(display_name="report", tooltip="JSON: per image labels, probabilities, route, "
                                                                "strength, area and why."),
            ],
        )

    @classmethod
    def execute(cls, degradation_map, seesr_available=False, **kw) -> io.NodeOutput:
        p = plan(DMAP.check(degradation_map), thresholds(**kw), bool(seesr_available))
        text = p.report_text()
        return io.NodeOutput(_masks(p.masks["irsde"]), _masks(p.masks["seesr"]), _masks(p.masks["pass"]),
                             "\n".join(p.routes()), p.report_json(), ui=ui.PreviewText(text))


class ARAutoRestore(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ARAutoRestore",
            display_name="AR Auto Restore (routed)",
            category=CATEGORY,
            description="Restores each image with what it needs: maps its degradations with DA-CLIP, routes it "
                        "(IR-SDE universal restoration / SeeSR / keep), restores only the degraded regions, "
                        "blends them in with feathered masks and checks the result against the input. SeeSR runs "
                        "in your graph: connect its output to 'seesr_image' — with 'degradation_map' connected, "
                        "ComfyUI evaluates that branch only when an image routes to it. The report is shown on "
                        "the node.",
            is_output_node=True,
            inputs=[
                io.Image.Input("image", tooltip="Image batch to restore."),
                DACLIP.input(f"From '{DACLIP.source}' (B-32 for universal-ir)."),
                IRSDE.input(f"From '{IRSDE.source}'; needed when an image routes to IR-SDE.", optional=True),
                DMAP.input("A map of the same images (computed here when not connected).", optional=True),
                io.Image.Input("seesr_image", optional=True, lazy=True,
                               tooltip="SeeSR result of the same images (e.g. the native SeeSR graph); evaluated "
                                       "only when an image routes to SeeSR (with 'degradation_map' connected; "
                                       "without it the branch always runs). Its size becomes the output size."),
                *threshold_inputs(),
                seed_input("IR-SDE noise seed; image b of a batch uses seed + b."),
                tile_input("IR-SDE tile side (exact low-memory mode; 0 = whole image)."),
            ],
            outputs=[
                io.Image.Output(display_name="image", tooltip="The restored images."),
                io.Mask.Output(display_name="restored_mask",
                               tooltip="Where the result differs from the input by design (the routes' masks)."),
                io.String.Output(display_name="report",
                                 tooltip="JSON per image: labels, probabilities, route, strength, area, why and "
                                         "the fidelity numbers."),
            ],
        )

    @classmethod
    def check_lazy_status(cls, image=None, daclip_model=None, **kw) -> list[str]:
        # ComfyUI passes a connected, not yet evaluated lazy input as None and leaves unconnected ones out
        if "seesr_image" not in kw or kw["seesr_image"] is not None:
            return []
        dmap = kw.get("degradation_map")
        if not isinstance(dmap, DegradationMap):
            return ["seesr_image"]  # the map is computed in execute: the branch may be needed
        routes = plan(dmap, thresholds(**_only_thresholds(kw)), seesr_available=True).routes()
        return ["seesr_image"] if "seesr" in routes else []

    @classmethod
    def execute(cls, image, daclip_model, irsde_model=None, degradation_map=None, seesr_image=None, seed=0,
                tile=TILE, **kw) -> io.NodeOutput:
        rgb, alpha = common.image_to_bchw(image)
        loads = [DACLIP.reserve(daclip_model, rgb.shape[0])]
        if irsde_model is not None:
            net = IRSDE.check(irsde_model)
            loads.insert(0, (net, restore_memory(net.descriptor.config, tuple(rgb.shape[-2:]), tile or None)))
        modules = common.load_models(*loads)
        network, daclip = (modules[0], modules[1]) if irsde_model is not None else (None, modules[0])
        dmap = DMAP.check(degradation_map) if degradation_map is not None else None
        seesr = common.image_to_bchw(seesr_image)[0] if seesr_image is not None else None
        res = auto_restore(daclip, network, rgb, thresholds(**_only_thresholds(kw)), seed=int(seed), dmap=dmap,
                           seesr=seesr, tile=int(tile) or None,
                           progress=common.progress_callback(rgb.shape[0] * 102))
        report = json.dumps(res.report(), indent=1)
        text = res.plan.report_text() + "\n" + "\n".join(
            f"image {i + 1} fidelity: psnr {f.psnr:.2f} ssim {f.ssim:.3f} shift {f.color_shift:.3f} "
            f"{'PASS' if f.passed else 'FAIL: ' + '; '.join(f.failed)}" for i, f in enumerate(res.fidelity))
        restored = (1 - res.plan.masks["pass"]).clamp(0, 1)
        return io.NodeOutput(common.bchw_to_image(res.images, alpha), _masks(restored), report,
                             ui=ui.PreviewText(text))


def _only_thresholds(kw: dict) -> dict:
    names = ("degraded", "full_strength", "min_strength", "region", "whole_image", "low_resolution", "feather")
    return {k: v for k, v in kw.items() if k in names}


class ARFidelity(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ARFidelity",
            display_name="AR Fidelity Check",
            category=CATEGORY,
            description="Did the restoration stay faithful to the input? Compares each result with its input at "
                        "the input's scale (low-passed luminance PSNR/SSIM from torchmetrics, colour shift, DA-CLIP "
                        "'clean' probability before/after), gives a heat map of where they differ and pass/fail. "
                        "Several candidates per input (seeds or methods, batched one after another: all images of "
                        "candidate 1, then of candidate 2, ...) -> 'best' is the most faithful per input.",
            is_output_node=True,
            inputs=[
                io.Image.Input("original", tooltip="The input images (B)."),
                io.Image.Input("restored", tooltip="Results: B images, or K candidates × B images concatenated."),
                DACLIP.input("Also compare DA-CLIP's 'clean' probability before and after.", optional=True),
                io.Float.Input("min_psnr", default=_F.min_psnr, min=0.0, max=100.0, step=0.5,
                               tooltip="Pass needs at least this PSNR (dB, luminance, at the input's scale)."),
                io.Float.Input("min_ssim", default=_F.min_ssim, min=0.0, max=1.0, step=0.01,
                               tooltip="Pass needs at least this SSIM."),
                io.Float.Input("max_color_shift", default=_F.max_color_shift, min=0.0, max=1.0, step=0.005,
                               tooltip="Largest allowed change of the mean chroma (Cb/Cr, 0..1)."),
                io.Float.Input("max_clean_drop", default=_F.max_clean_drop, min=0.0, max=1.0, step=0.01,
                               tooltip="Largest allowed fall of the DA-CLIP 'clean' probability."),
                io.Int.Input("compare_scale", default=_F.compare_scale, min=1, max=16,
                             tooltip="Compare at 1/this of the input's size (1 = full size); >1 lets removed noise "
                                     "or JPEG blocks count less than moved or invented content."),
            ],
            outputs=[
                io.Image.Output(display_name="best", tooltip="Per input, the most faithful candidate."),
                io.Image.Output(display_name="heat_map", tooltip="Per result, where it departs from its input "
                                                                 "(1 - SSIM: black = same, white = different)."),
                io.Boolean.Output(display_name="passed", tooltip="True when every chosen result passed."),
                io.String.Output(display_name="report", tooltip="JSON: the numbers and pass/fail of every result, "
                                                                "and the chosen candidate per input."),
            ],
        )

    @classmethod
    def execute(cls, original, restored, daclip_model=None, min_psnr=_F.min_psnr, min_ssim=_F.min_ssim,
                max_color_shift=_F.max_color_shift, max_clean_drop=_F.max_clean_drop,
                compare_scale=_F.compare_scale) -> io.NodeOutput:
        x, _ = common.image_to_bchw(original)
        r, alpha = common.image_to_bchw(restored)
        bo, br = x.shape[0], r.shape[0]
        if br % bo:
            raise InputError(f"'restored' has {br} images, not a multiple of the {bo} original(s): give K "
                             "candidates for every original, batched candidate after candidate")
        k = br // bo
        xs = x.repeat(k, 1, 1, 1)
        before = after = None
        if daclip_model is not None:
            (module,) = common.load_models(DACLIP.reserve(daclip_model))
            before = clean_probability(module, x).repeat(k)
            after = clean_probability(module, r)
        th = FidelityThresholds(min_psnr, min_ssim, max_color_shift, max_clean_drop, int(compare_scale))
        results, heat = measure(xs, r, th, before, after)
        chosen = [j * bo + i for i in range(bo)
                  for j in [most_faithful([results[c * bo + i] for c in range(k)])]]
        best = r[chosen]
        best_alpha = alpha[chosen] if alpha is not None else None
        report = {"candidates_per_input": k, "chosen": [c // bo for c in chosen],
                  "results": [dict(f.to_dict(), input=i % bo, candidate=i // bo) for i, f in enumerate(results)]}
        passed = all(results[c].passed for c in chosen)
        text = "\n".join(f"input {i % bo + 1} candidate {i // bo + 1}: psnr {f.psnr:.2f} ssim {f.ssim:.3f} shift "
                         f"{f.color_shift:.3f} {'PASS' if f.passed else 'FAIL (' + '; '.join(f.failed) + ')'}"
                         f"{'  <- chosen' if i in chosen else ''}" for i, f in enumerate(results))
        return io.NodeOutput(common.bchw_to_image(best, best_alpha), common.bchw_to_image(heat_image(heat)), passed,
                             json.dumps(report, indent=1), ui=ui.PreviewText(text))


NODES = [DACLIPDegradationMap, ARRoute, ARAutoRestore, ARFidelity]
