"""Selection rules over noisy stage scores: the paper's argmax and the robust default."""

import json

import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from gafi_opt.search.selection import Choice, choose, late_epochs, trial_score

GRID = [round(1.0 + 0.1 * i, 1) for i in range(11)]


def trial(number, value, history, state=TrialState.COMPLETE, soft=None):
    made = create_trial(
        state=state,
        value=history[-1] if state == TrialState.COMPLETE else None,
        params={"stddev": value},
        distributions={"stddev": FloatDistribution(1.0, 2.0)},
        user_attrs={"val_acc": history[-1], "val_history": history, **({} if soft is None else {"val_soft_history": soft})},
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


@pytest.mark.parametrize("rule", ["robust", "trend"])
def test_one_lucky_point_wins_the_argmax_but_not_the_smoothed_estimate(rule):
    trials = [trial(i, v, [curve(v)]) for i, v in enumerate(GRID)]
    lucky = GRID.index(1.1)
    trials[lucky] = trial(lucky, 1.1, [curve(1.6) + 0.02])  # one val split that happened to like 1.1
    assert choose("argmax", trials, "stddev", GRID).value == 1.1
    robust = choose(rule, trials, "stddev", GRID, late=1)
    assert robust.value in (1.5, 1.6, 1.7)
    assert len(robust.estimate) == len(GRID) and all(e["sd"] >= 0 for e in robust.estimate)
    assert robust.trial == GRID.index(robust.value) and robust.score == pytest.approx(max(e["mean"] for e in robust.estimate))


def test_pruned_trials_are_seen_but_never_chosen():
    trials = [trial(0, 1.0, [0.80]), trial(1, 1.1, [0.99], state=TrialState.PRUNED), trial(2, 1.2, [0.85])]
    for rule in ("argmax", "robust", "trend"):
        made = choose(rule, trials, "stddev", GRID)
        assert made.value == 1.2 and [o.pruned for o in made.observations] == [False, True, False]


@pytest.mark.parametrize("rule", ["robust", "trend"])
def test_two_points_are_compared_by_their_means_and_nothing_complete_is_no_choice(rule):
    trials = [trial(0, 1.0, [0.90]), trial(1, 1.5, [0.95]), trial(2, 1.0, [0.98])]
    assert choose("argmax", trials, "stddev", GRID).value == 1.0  # its one lucky trial
    made = choose(rule, trials, "stddev", GRID)
    assert made.value == 1.5 and made.score == pytest.approx(0.95) and made.trial == 1
    assert {e["value"]: e["mean"] for e in made.estimate}[1.0] == pytest.approx(0.94)
    assert choose(rule, [trial(0, 1.0, [0.5], state=TrialState.PRUNED)], "stddev", GRID) is None


@pytest.mark.parametrize("rule", ["robust", "trend"])
def test_a_choice_survives_json(rule):
    trials = [trial(i, v, [curve(v)]) for i, v in enumerate(GRID)]
    made = choose(rule, trials, "stddev", GRID)
    assert Choice.from_json(json.loads(json.dumps(made.to_json()))) == made


@pytest.mark.parametrize("rule", ["robust", "trend"])
def test_the_smoothed_choice_is_deterministic(rule):
    trials = [trial(i, v, [curve(v) + (0.01 if i % 3 == 0 else -0.005)]) for i, v in enumerate(GRID)]
    assert choose(rule, trials, "stddev", GRID) == choose(rule, list(reversed(trials)), "stddev", GRID)


def test_the_local_trend_follows_a_rising_curve_to_the_end_of_the_grid():
    wobble = [0.004, -0.004, 0.004, -0.004, 0.004, -0.004, 0.004, 0.008, -0.006, -0.004, -0.004]
    trials = [trial(i, v, [0.90 + 0.02 * (v - 1.0) + wobble[i]]) for i, v in enumerate(GRID)]
    assert choose("argmax", trials, "stddev", GRID).value == 1.7  # one lucky draw near the end
    made = choose("trend", trials, "stddev", GRID)
    assert made.value == 2.0
    estimate = {e["value"]: e for e in made.estimate}
    assert estimate[2.0]["mean"] == pytest.approx(0.92, abs=0.004) and estimate[2.0]["sd"] > 0


def test_the_soft_rule_scores_the_mean_true_class_probability_of_the_late_epochs():
    t = trial(0, 1.0, [0.5, 0.8, 0.9], soft=[0.4, 0.7, 0.75])
    assert trial_score(t, "soft", "val_acc", 2) == pytest.approx(0.725)
    assert trial_score(t, "trend", "val_acc", 2) == pytest.approx(0.85)
    assert trial_score(t, "soft", "test_acc", 2) == 0.9  # test has no history: as it is
    assert trial_score(trial(1, 1.1, [0.9]), "soft", "val_acc", 1) is None  # no soft scores: not comparable


def test_the_soft_rule_chooses_by_how_sure_the_classifier_is_not_by_one_flipped_image():
    # Accuracy ties everywhere but one lucky point at 1.1; the soft scores follow a curve peaking at 1.7.
    trials = [trial(i, v, [0.90 + (0.005 if v == 1.1 else 0.0)], soft=[0.85 - 0.2 * (v - 1.7) ** 2]) for i, v in enumerate(GRID)]
    assert choose("trend", trials, "stddev", GRID).value == 1.1
    made = choose("soft", trials, "stddev", GRID)
    assert made.value == 1.7 and made.score == pytest.approx(0.85, abs=0.005)  # a local line cuts a peak a little
    assert [o.score for o in made.observations] == pytest.approx([0.85 - 0.2 * (v - 1.7) ** 2 for v in GRID])
