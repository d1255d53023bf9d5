"""The search: the stages as data, their samplers and pruners, reuse of repeated recipes, and the rules
that choose a stage's value from noisy scores."""

from gafi_opt.search.stages import KNOB_STAGES, SEARCH_STAGES, SEARCHED, STAGES, TrialConfig, pipeline_stages, search_stages

__all__ = ["KNOB_STAGES", "SEARCH_STAGES", "SEARCHED", "STAGES", "TrialConfig", "pipeline_stages", "search_stages"]
