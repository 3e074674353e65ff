"""The router: from a degradation map decide, per image and per region, which restoration runs and how strongly,
and blend the regional results with feathered masks.

Routes (:data:`ROUTES`):

* ``irsde`` — DA-CLIP universal restoration (IR-SDE) for the degradations it was trained on
  (:data:`IRSDE_LABELS`: haze, JPEG, low light, noise, raindrops, rain, shadow, snow, missing regions, and blur
  when SeeSR is not available);
* ``seesr`` — SeeSR for low resolution (shorter side below ``Thresholds.low_resolution``) and motion blur, only
  when a SeeSR result is available (``seesr_available``);
* ``pass`` — the input is kept: no degradation reaches ``Thresholds.degraded``.

Per region: the restored image is blended into the input only where the map says the routed degradations are
(``Σ p_label ≥ Thresholds.region``, feathered over ``feather`` pixels), scaled by the image's strength; regions
the map calls clean keep the input (no hallucination on clean regions). When the degraded area is at least
``Thresholds.whole_image`` of the image, the whole image is restored (mask 1).

Strength: ``clamp((p_top - degraded) / (full - degraded), 0, 1)`` mapped to ``[min_strength, 1]``: a
degradation just above the threshold is restored at ``min_strength``, one at ``full`` or above fully.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F

from ..errors import InputError
from .degmap import CLEAN, DegradationMap

ROUTES = ("irsde", "seesr", "pass")
SEESR_LABELS = frozenset({"motion-blurry"})
IRSDE_LABELS = frozenset({"hazy", "jpeg-compressed", "low-light", "noisy", "raindrop", "rainy", "shadowed",
                          "snowy", "uncompleted", "motion-blurry"})


@dataclass(frozen=True)
class Thresholds:
    """Router thresholds (defaults documented in the README, section "Auto restore")."""

    degraded: float = 0.35        # top degradation probability (whole image) needed to restore at all
    full: float = 0.70            # ... at which the restoration is applied at full strength
    min_strength: float = 0.5     # strength just above ``degraded``
    region: float = 0.35          # per-pixel probability of the routed labels that marks a region as degraded
    whole_image: float = 0.85     # degraded fraction of the image at which the whole image is restored
    low_resolution: int = 256     # shorter side (pixels) below which an image counts as low resolution
    feather: int = 16             # feather radius of the regional masks (pixels)

    def __post_init__(self) -> None:
        for name in ("degraded", "full", "min_strength", "region", "whole_image"):
            v = getattr(self, name)
            if not 0.0 <= float(v) <= 1.0:
                raise InputError(f"threshold {name} must be in [0, 1], got {v}")
        if self.full < self.degraded:
            raise InputError(f"threshold full ({self.full}) must not be below degraded ({self.degraded})")
        if self.low_resolution < 0 or self.feather < 0:
            raise InputError("low_resolution and feather must not be negative")


@dataclass
class Decision:
    """The route of one image and why."""

    route: str
    labels: list[str]                  # the degradations the route handles in this image
    strength: float
    area: float                        # fraction of the image the route is applied to (after thresholding)
    top: str
    top_probability: float
    probabilities: dict[str, float]   # per label: max(whole-image probability, mean over the map)
    reason: str
    size: tuple[int, int] = (0, 0)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["size"] = list(self.size)
        return d


def _strength(p: float, t: Thresholds) -> float:
    if t.full <= t.degraded:
        return 1.0
    r = min(1.0, max(0.0, (p - t.degraded) / (t.full - t.degraded)))
    return round(t.min_strength + (1.0 - t.min_strength) * r, 4)


def decide(labels: tuple[str, ...] | list[str], global_probs: torch.Tensor, size: tuple[int, int],
           thresholds: Thresholds = Thresholds(), seesr_available: bool = False,
           region_fraction: dict[str, float] | None = None, map_mean: torch.Tensor | None = None) -> Decision:
    """The route of one image. A label's score is the larger of its whole-image probability ``global_probs``
    ``[L]`` and its mean over the map ``map_mean`` ``[L]`` (so a degradation covering half the image counts even
    when the whole-image view misses it); ``region_fraction`` (the fraction of the image each label dominates)
    only goes into the report."""
    t = thresholds
    scores = global_probs.float() if map_mean is None else torch.maximum(global_probs.float(), map_mean.float())
    probs = {lbl: round(float(p), 6) for lbl, p in zip(labels, scores.tolist())}
    degr = {lbl: p for lbl, p in probs.items() if lbl != CLEAN}
    if not degr:
        raise InputError("the degradation map has no degradation labels (only 'clean')")
    top = max(degr, key=degr.get)
    p_top = degr[top]
    low_res = 0 < min(size) < t.low_resolution
    notes = []
    if region_fraction:
        regional = sorted(((f, lbl) for lbl, f in region_fraction.items() if lbl != CLEAN and f > 0), reverse=True)
        if regional:
            notes.append("regions: " + ", ".join(f"{lbl} {f:.0%}" for f, lbl in regional[:3]))
    base = {"top": top, "top_probability": p_top, "probabilities": probs, "size": tuple(size), "notes": notes}
    if low_res and seesr_available:
        return Decision("seesr", [top] if top in SEESR_LABELS else [], 1.0, 1.0,
                        reason=f"low resolution ({size[1]}x{size[0]}, shorter side < {t.low_resolution}): SeeSR "
                               f"super-resolution", **base)
    if p_top < t.degraded:
        why = f"no degradation reaches {t.degraded:.2f} (top: {top} {p_top:.2f})"
        if low_res:
            why += "; low resolution but no SeeSR result is wired"
        return Decision("pass", [], 0.0, 0.0, reason=why + ": input kept", **base)
    strength = _strength(p_top, t)
    if top in SEESR_LABELS and seesr_available:
        return Decision("seesr", [top], strength, 1.0,
                        reason=f"{top} {p_top:.2f} >= {t.degraded:.2f}: SeeSR (generative detail for blur)", **base)
    if top in IRSDE_LABELS:
        extra = " (SeeSR not wired)" if top in SEESR_LABELS else ""
        chosen = [lbl for lbl, p in degr.items() if lbl in IRSDE_LABELS and p >= t.degraded] or [top]
        return Decision("irsde", chosen, strength, 1.0,
                        reason=f"{top} {p_top:.2f} >= {t.degraded:.2f}: IR-SDE universal restoration{extra}, "
                               f"strength {strength:.2f}", **base)
    return Decision("pass", [], 0.0, 0.0, reason=f"{top} {p_top:.2f}: no route handles this label: input kept",
                    **base)


def feather(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Gaussian feathering of masks ``[B,H,W]`` (σ = radius / 2, reflect padding); radius 0 → unchanged."""
    if radius <= 0:
        return mask
    sigma = radius / 2.0
    k = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (k / sigma) ** 2)
    k = (k / k.sum()).to(mask.device)
    x = mask.float()[:, None]
    h, w = x.shape[-2:]
    pad_h, pad_w = min(radius, h - 1), min(radius, w - 1)
    # a side shorter than the radius gets the kernel cut to it, renormalised (a cut kernel summing below 1 would
    # fade the mask: a fully degraded strip would be restored at a fraction of its strength)
    kw, kh = (k[radius - p:radius + p + 1] for p in (pad_w, pad_h))
    x = F.pad(x, (pad_w, pad_w, 0, 0), mode="reflect" if pad_w > 0 else "replicate")
    x = F.conv2d(x, (kw / kw.sum()).view(1, 1, 1, -1))
    x = F.pad(x, (0, 0, pad_h, pad_h), mode="reflect" if pad_h > 0 else "replicate")
    x = F.conv2d(x, (kh / kh.sum()).view(1, 1, -1, 1))
    return x[:, 0].clamp(0, 1)


@dataclass
class Plan:
    """Decisions and regional masks of a batch: ``masks[route]`` ``[B,H,W]`` (feathered, × strength); the
    ``pass`` mask is ``1 - irsde - seesr``."""

    decisions: list[Decision]
    masks: dict[str, torch.Tensor]

    def routes(self) -> list[str]:
        return [d.route for d in self.decisions]

    def report(self) -> list[dict]:
        return [d.to_dict() for d in self.decisions]

    def report_json(self) -> str:
        return json.dumps(self.report(), indent=1)

    def report_text(self) -> str:
        lines = []
        for b, d in enumerate(self.decisions):
            ranked = sorted(((p, lbl) for lbl, p in d.probabilities.items()), reverse=True)[:3]
            lines.append(f"image {b + 1} ({d.size[1]}x{d.size[0]}): {d.route.upper()}  strength {d.strength:.2f}"
                         f"  area {d.area:.0%}")
            lines.append("  " + d.reason)
            lines.append("  top: " + ", ".join(f"{lbl} {p:.3f}" for p, lbl in ranked))
            lines += [f"  {n}" for n in d.notes]
        return "\n".join(lines)


def plan(dmap: DegradationMap, thresholds: Thresholds = Thresholds(), seesr_available: bool = False,
         size: tuple[int, int] | None = None) -> Plan:
    """Decisions for every image of ``dmap`` and the feathered route masks at ``size`` (default: image size)."""
    t = thresholds
    size = tuple(size or dmap.image_size)
    masks = dmap.masks(size)
    b = len(dmap)
    out = {r: torch.zeros(b, *size) for r in ROUTES}
    decisions = []
    top_idx = masks.argmax(dim=1)
    for i in range(b):
        fractions = {lbl: float((top_idx[i] == k).float().mean()) for k, lbl in enumerate(dmap.labels)}
        d = decide(dmap.labels, dmap.global_probs[i], dmap.image_size, t, seesr_available, fractions,
                   dmap.probs[i].mean(dim=(1, 2)))
        if d.route != "pass":
            if d.labels and d.route == "irsde":
                idx = [dmap.index(lbl) for lbl in d.labels]
                regional = masks[i, idx].sum(dim=0)
                hard = (regional >= t.region).float()
                area = float(hard.mean())
                m = torch.ones(size) if area >= t.whole_image else feather(hard[None], t.feather)[0]
                d.area = 1.0 if area >= t.whole_image else round(area, 4)
                if area < t.whole_image:
                    d.notes.append(f"regional: {area:.0%} of the image is restored, the rest kept")
            else:
                m = torch.ones(size)
            out[d.route][i] = m * d.strength
        decisions.append(d)
    out["pass"] = (1 - out["irsde"] - out["seesr"]).clamp(0, 1)
    return Plan(decisions, out)


def blend(image: torch.Tensor, results: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> torch.Tensor:
    """``image·(1 − Σ m_r) + Σ results_r · m_r`` over the routes in ``results`` (all ``[B,3,H,W]``, masks
    ``[B,H,W]``)."""
    out = image.float().clone()
    for route, res in results.items():
        m = masks[route].to(out.device)[:, None]
        out = out * (1 - m) + res.float().to(out.device) * m
    return out.clamp(0, 1)
