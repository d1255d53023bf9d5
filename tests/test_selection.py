"""Selection rules over noisy stage scores: the paper's argmax and the robust default."""

import json

import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from gafi_opt.search.selection import Choice, choose, late_epochs, trial_score

GRID = [round(1.0 + 0.1 * i, 1) for i in range(11)]


def trial(number, value, history, state=TrialState.COMPLETE):
    made = create_trial(
        state=state,
        value=history[-1] if state == TrialState.COMPLETE else None,
        params={"stddev": value},
        distributions={"stddev": FloatDistribution(1.0, 2.0)},
        user_attrs={"val_acc": history[-1], "val_history": history},
        intermediate_values={i + 1: v for i, v in enumerate(history)},
    )
    made.number = number
    return made


def curve(value):
    """A smooth true curve peaking at 1.6, as CAS against stddev often is."""
    return 0.92 - 0.3 * (value - 1.6) ** 2


def test_late_epochs_are_those_after_the_last_learning_rate_drop():
    assert late_epochs(15, (0.6, 0.8)) == 3  # drops after epochs 9 and 12
    assert late_epochs(100, (0.6, 0.8)) == 20
    assert late_epochs(10, ()) == 2


def test_robust_scores_average_the_late_epochs_and_argmax_takes_the_last():
    t = trial(0, 1.0, [0.5, 0.8, 0.9, 0.7])
    assert trial_score(t, "argmax", "val_acc", 2) == 0.7
    assert trial_score(t, "robust", "val_acc", 2) == pytest.approx(0.8)
    pruned = trial(1, 1.1, [0.4, 0.6], state=TrialState.PRUNED)
    assert trial_score(pruned, "robust", "val_acc", 2) == 0.6  # the val at the cut


def test_one_lucky_point_wins_the_argmax_but_not_the_smoothed_estimate():
    trials = [trial(i, v, [curve(v)]) for i, v in enumerate(GRID)]
    lucky = GRID.index(1.1)
    trials[lucky] = trial(lucky, 1.1, [curve(1.6) + 0.02])  # one val split that happened to like 1.1
    assert choose("argmax", trials, "stddev", GRID).value == 1.1
    robust = choose("robust", trials, "stddev", GRID, late=1)
    assert robust.value in (1.5, 1.6, 1.7)
    assert len(robust.estimate) == len(GRID) and all(e["sd"] >= 0 for e in robust.estimate)
    assert robust.trial == GRID.index(robust.value) and robust.score == pytest.approx(max(e["mean"] for e in robust.estimate))


def test_pruned_trials_are_seen_but_never_chosen():
    trials = [trial(0, 1.0, [0.80]), trial(1, 1.1, [0.99], state=TrialState.PRUNED), trial(2, 1.2, [0.85])]
    for rule in ("argmax", "robust"):
        made = choose(rule, trials, "stddev", GRID)
        assert made.value == 1.2 and [o.pruned for o in made.observations] == [False, True, False]


def test_two_points_are_compared_by_their_means_and_nothing_complete_is_no_choice():
    trials = [trial(0, 1.0, [0.90]), trial(1, 1.5, [0.95]), trial(2, 1.0, [0.98])]
    assert choose("argmax", trials, "stddev", GRID).value == 1.0  # its one lucky trial
    made = choose("robust", trials, "stddev", GRID)
    assert made.value == 1.5 and made.score == pytest.approx(0.95) and made.trial == 1
    assert {e["value"]: e["mean"] for e in made.estimate}[1.0] == pytest.approx(0.94)
    assert choose("robust", [trial(0, 1.0, [0.5], state=TrialState.PRUNED)], "stddev", GRID) is None


def test_a_choice_survives_json():
    trials = [trial(i, v, [curve(v)]) for i, v in enumerate(GRID)]
    made = choose("robust", trials, "stddev", GRID)
    assert Choice.from_json(json.loads(json.dumps(made.to_json()))) == made


def test_the_robust_choice_is_deterministic():
    trials = [trial(i, v, [curve(v) + (0.01 if i % 3 == 0 else -0.005)]) for i, v in enumerate(GRID)]
    assert choose("robust", trials, "stddev", GRID) == choose("robust", list(reversed(trials)), "stddev", GRID)
