"""The search: the stages as data, their samplers and pruners, reuse of repeated recipes, and the rules
that choose a stage's value from noisy scores."""

from gafi_opt.search.stages import SEARCH_STAGES, SEARCHED, STAGES, TrialConfig

__all__ = ["SEARCH_STAGES", "SEARCHED", "STAGES", "TrialConfig"]
