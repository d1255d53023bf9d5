"""The synthetic set: a class-balanced set drawn from a conditional generator, filtered (Dynamic Sample
Filtering), scaled (the Expansion Trick) and renewed (Dynamic Dataset Recycle); several generators at once."""

from gafi_opt.synth.multi import MultiSource
from gafi_opt.synth.source import SynthesisStats, SyntheticSource, prepare_filter, prepare_generator

__all__ = ["MultiSource", "SynthesisStats", "SyntheticSource", "prepare_filter", "prepare_generator"]
