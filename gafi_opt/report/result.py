"""A finished pipeline's result as a trial of its root study, for the tools that speak Optuna.

Once every stage is complete, the root study `<name>` gets one COMPLETE trial: its value is the
final stage's val CAS (mean over its seeds), its params are the chosen checkpoint, stddev and
threshold (with the distributions their stages searched), and its user attrs are the export row
(gafi_opt.report.rows.summary_row). So `optuna best-trial --study-name <name>`, optuna-dashboard and
`optuna.load_study(study_name=name, storage=...).best_trial` all answer with the pipeline's result.

gafi-opt itself never reads root trials: a pipeline's stages live in their own studies
(gafi_opt.pipeline.store), and everything it reports is computed from those.

Many workers finish a pipeline at about the same moment; each may call `record_result`, and one
writes the trial. Who writes is decided by an insert-if-absent claim on the root study (tickets
`result:0`, `result:1`, ...); a claim whose writer died before writing (older than
CLAIM_GRACE_S and still no trial) is taken over with the next ticket. Claims are timed by the
writers' clocks: machines whose clocks disagree by more than the grace period could each write a
result trial, and a second one (same value, same attrs) would be harmless.
"""

from __future__ import annotations

import time
import uuid

import optuna
from optuna.trial import FrozenTrial, TrialState

from gafi_opt.pipeline import Pipeline
from gafi_opt.report.rows import summary_row
from gafi_opt.search.stages import SEARCH_STAGES, SEARCHED
from gafi_opt.storages import TAS_PREFIX, set_once

RESULT_ATTR = "gafi:result"  # trial system attr marking the root study's result trial
CLAIM_PREFIX = f"{TAS_PREFIX}result:"  # root study system attrs: result:<k> = the k-th writer's claim
CLAIM_GRACE_S = 60.0  # writing takes well under a second; a claim this old without a trial lost its writer


def result_trial(pipeline: Pipeline) -> FrozenTrial | None:
    """The root study's result trial, if it has one."""
    for trial in pipeline.root.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if trial.system_attrs.get(RESULT_ATTR):
            return trial
    return None


def record_result(pipeline: Pipeline) -> FrozenTrial | None:
    """Give a complete pipeline's root study its result trial (once; calling again changes nothing).

    Returns the result trial; None while the pipeline is not complete, when it has no final CAS
    (every final seed given up), or while another process is writing it.
    """
    if pipeline.current_stage() is not None:
        return None
    found = result_trial(pipeline)
    if found is not None:
        return found
    row = summary_row(pipeline)
    if row["cas_val"] is None:
        return None
    if not _claim(pipeline):
        return None
    params, distributions = {}, {}
    for stage in SEARCH_STAGES:
        name = SEARCHED[stage]
        best = pipeline.best_trial(stage)
        params[name], distributions[name] = best.params[name], best.distributions[name]
    trial = optuna.trial.create_trial(
        value=row["cas_val"], params=params, distributions=distributions, user_attrs=row, system_attrs={RESULT_ATTR: True}
    )
    pipeline.root.add_trial(trial)
    return result_trial(pipeline)


def _claim(pipeline: Pipeline) -> bool:
    """True when this process is to write the result trial: it took the first free claim ticket
    after any whose writer is presumed dead; False while a live claim is being written."""
    root = pipeline.root
    storage = pipeline.storage
    mine = {"by": uuid.uuid4().hex, "at": time.time()}
    ticket = 0
    while True:
        key = f"{CLAIM_PREFIX}{ticket}"
        if set_once(storage, root._study_id, key, mine):
            return True
        held = storage.get_study_system_attrs(root._study_id)[key]
        if time.time() - float(held.get("at", 0)) < CLAIM_GRACE_S:
            return False
        ticket += 1
