"""The auto-restore pipeline on a batch: map → route → restore (IR-SDE / SeeSR / keep) → blend → fidelity.

Shared by the ``ARAutoRestore`` node, ``aware-restore auto`` and its Ray runner, so all three give the same
result for the same models, images and seed. Image ``b`` of a batch restores with seed ``seed + b`` (the IR-SDE
convention), so a batch equals its images run one at a time.

SeeSR: the pipeline does not sample SeeSR itself; ``seesr`` is either a ready result ``[B,3,H',W']`` (the output
of a SeeSR branch of the graph) or a callable ``images → result`` for the images routed to it. Its size becomes the
output size (the other routes are resized bicubically to it); without it, low-resolution and blurred images take
IR-SDE or pass through.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..daclip.classify import text_features
from ..errors import InputError
from ..image import resize, split_alpha
from ..progress import Counter, Progress
from .degmap import (
    CLEAN,
    MAP_LABELS,
    DegradationMap,
    degradation_map,
    window_probabilities,
)
from .fidelity import Fidelity, FidelityThresholds, measure
from .route import Plan, Thresholds, blend, plan


@dataclass
class AutoResult:
    images: torch.Tensor          # [B,3,H',W'] in [0,1]
    plan: Plan
    dmap: DegradationMap
    fidelity: list[Fidelity]
    heat: torch.Tensor            # [B,H',W']

    def report(self) -> list[dict]:
        out = []
        for d, f in zip(self.plan.decisions, self.fidelity):
            entry = d.to_dict()
            entry["fidelity"] = f.to_dict()
            out.append(entry)
        return out


def clean_probability(model, images: torch.Tensor, labels=MAP_LABELS) -> torch.Tensor:
    """DA-CLIP's probability of ``clean`` (among ``labels``) for each whole image ``[B]``."""
    text = text_features(model, labels)
    return torch.stack([window_probabilities(model, img[None].float(), text)[0, list(labels).index(CLEAN)]
                        for img in images])


def auto_restore(daclip, irsde, images: torch.Tensor, thresholds: Thresholds | None = None, seed: int = 0,
                 dmap: DegradationMap | None = None,
                 seesr: torch.Tensor | Callable[[torch.Tensor], torch.Tensor] | None = None,
                 fidelity_thresholds: FidelityThresholds | None = None, tile: int | None = None,
                 map_window: int | None = None, progress: Progress | None = None) -> AutoResult:
    """Restore ``images`` ``[B,C,H,W]`` in [0,1] with the route each one needs (see :mod:`.route`)."""
    from ..irsde import restore as irsde_restore
    from ..irsde.sde import IRSDE

    thresholds = thresholds or Thresholds()
    fidelity_thresholds = fidelity_thresholds or FidelityThresholds()
    rgb, _alpha = split_alpha(images)
    rgb = rgb.float()
    b, _, h, w = rgb.shape
    sde = IRSDE()
    steps = len(sde.timesteps())
    counter = Counter(2 * b + (b * steps if irsde is not None else 0), progress)
    if dmap is None:
        def map_step(done: int, total: int) -> None:  # the map is the first b units of the bar (and interruptible)
            counter.done = b * done // max(total, 1)
            counter.step(0)

        dmap = degradation_map(daclip, rgb, window=map_window, progress=map_step)
    elif len(dmap) not in (1, b) or tuple(dmap.image_size) != (h, w):
        raise InputError(f"the degradation map is for {len(dmap)} image(s) of {dmap.image_size[1]}x"
                         f"{dmap.image_size[0]}, the images are {b} of {w}x{h}; map the same images")
    if len(dmap) == 1 and b > 1:
        dmap = DegradationMap(dmap.labels, dmap.probs.expand(b, -1, -1, -1), dmap.global_probs.expand(b, -1),
                              dmap.image_size, dmap.window, dmap.overlap)
    counter.done = 0
    counter.step(b)
    seesr_available = seesr is not None
    p = plan(dmap, thresholds, seesr_available)
    routes = p.routes()
    results: dict[str, torch.Tensor] = {}
    if "irsde" in routes:
        if irsde is None:
            raise InputError("an image routes to IR-SDE restoration but no IR-SDE model is given; connect "
                             "'Load IR-SDE Model' (universal-ir.pth)")
        out = rgb.clone()
        for i, r in enumerate(routes):
            if r != "irsde":
                continue
            base = counter.done

            def step(done: int, _t: int, base: int = base) -> None:
                counter.done = base
                counter.step(done)

            out[i:i + 1] = irsde_restore(irsde, daclip, rgb[i:i + 1], steps=sde.T, seed=int(seed) + i, sde=sde,
                                         tile=tile, progress=step).float()
        results["irsde"] = out
    size = (h, w)
    if "seesr" in routes:
        idx = [i for i, r in enumerate(routes) if r == "seesr"]
        sr = seesr(rgb[idx]) if callable(seesr) else seesr
        if not isinstance(sr, torch.Tensor) or sr.ndim != 4:
            raise InputError("the SeeSR result must be an image batch [B,3,H,W]")
        sr = split_alpha(sr)[0].float()
        if callable(seesr):
            full = torch.zeros(b, 3, *sr.shape[-2:])
            full[idx] = sr
            sr = full
        elif sr.shape[0] not in (1, b):
            raise InputError(f"the SeeSR image batch has {sr.shape[0]} images, the input {b}")
        sr = sr.expand(b, -1, -1, -1)
        size = tuple(sr.shape[-2:])
        results["seesr"] = sr
    if size != (h, w):
        p = plan(dmap, thresholds, seesr_available, size=size)
        base_img = resize(rgb, size, "bicubic").clamp(0, 1)
        results = {k: (v if v.shape[-2:] == size else resize(v, size, "bicubic").clamp(0, 1))
                   for k, v in results.items()}
    else:
        base_img = rgb
    final = blend(base_img, results, p.masks)
    counter.step(0)
    clean_before = dmap.global_probs[:, dmap.labels.index(CLEAN)] if CLEAN in dmap.labels else None
    clean_after = clean_probability(daclip, final, dmap.labels) if clean_before is not None else None
    counter.step(b)
    fid, heat = measure(rgb, final, fidelity_thresholds, clean_before, clean_after)
    return AutoResult(final, p, dmap, fid, heat)
