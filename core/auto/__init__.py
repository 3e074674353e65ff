"""Degradation-aware restoration: a per-region DA-CLIP degradation map (:mod:`.degmap`), a router that picks
IR-SDE / SeeSR / pass-through per image and region (:mod:`.route`), a fidelity check (:mod:`.fidelity`) and the
one-image pipeline the CLI and the Ray runner share (:mod:`.pipeline`)."""

from .degmap import CLEAN, MAP_LABELS, DegradationMap, degradation_map, preview
from .fidelity import Fidelity, FidelityThresholds, heat_image, measure, most_faithful
from .route import ROUTES, Decision, Plan, Thresholds, blend, decide, feather, plan

__all__ = ["CLEAN", "MAP_LABELS", "ROUTES", "Decision", "DegradationMap", "Fidelity", "FidelityThresholds", "Plan",
           "Thresholds", "blend", "decide", "degradation_map", "feather", "heat_image", "measure", "most_faithful",
           "plan", "preview"]
