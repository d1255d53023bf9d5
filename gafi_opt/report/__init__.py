"""What a storage's results look like to people and scripts: export rows and their formats, figures,
the dashboard (trial notes, sample grids as Optuna artifacts, the server) and progress lines."""

from gafi_opt.report.formats import FORMATS, format_rows
from gafi_opt.report.rows import EXPORT_KEYS, multigen_rows, stage_status, summary_row

__all__ = ["EXPORT_KEYS", "FORMATS", "format_rows", "multigen_rows", "stage_status", "summary_row"]
