"""``gpucost synth``: a deterministic synthetic GPU fleet, its bills, its metrics and the truth."""

from gpucost.synth.fleet import FOCUS_HEADER, MIN_GPUS, SynthSummary, generate

__all__ = ["FOCUS_HEADER", "MIN_GPUS", "SynthSummary", "generate"]
