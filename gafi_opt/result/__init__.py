"""What a user takes away from a pipeline: its synthetic set, drawn afresh with the chosen knobs
(`load_best` in code, `gafi-opt sample` to files), and how close that set lies to real data
(Fréchet distance, k-NN precision and recall in the filter classifier's feature space)."""

from gafi_opt.result.quality import record_quality
from gafi_opt.result.recipe import Recipe, resolve
from gafi_opt.result.sampler import Sampler, load_best, open_sampler
from gafi_opt.result.writing import check_output, write_sample

__all__ = ["Recipe", "Sampler", "check_output", "load_best", "open_sampler", "record_quality", "resolve", "write_sample"]
