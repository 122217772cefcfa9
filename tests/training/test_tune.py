"""training.tune: TPE + pruning on SQLite and PostgreSQL, resuming, nested MLflow runs, and the
one-standard-error rule that picks the trial kept."""

import math
import uuid

import mlflow
import optuna
import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from base import safe_url
from features import schema
from training.evaluate import CLUSTERED_SE, clustered_auc_standard_error, subscriber_clusters
from training.pipeline import classifier, feature_types, fit_classifier, preprocessor
from training.settings import OptunaSettings, TrainingSettings
from training.splits import time_split
from training.tune import (
    HANLEY_MCNEIL,
    SE_ATTR,
    TuneConfig,
    TuningError,
    first_trial,
    max_child_samples,
    search_space,
    select_trial,
    storage,
    tune,
)


def tune_config(url: str, name: str, n_trials: int, seed: int = 0, stop: int = 50) -> TuneConfig:
    training = TrainingSettings(seed=seed, early_stopping_rounds=stop)
    return TuneConfig(OptunaSettings(storage=url, n_trials=n_trials), name, training)


POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@pytest.fixture(scope="module")
def prepared(snapshots):
    frame, _ = snapshots
    split = time_split(frame.index.get_level_values(schema.AS_OF).unique(), horizon_days=14)
    train, valid = split.part(frame, "train"), split.part(frame, "valid")
    X, y = train.drop(columns=schema.CHURNED), train[schema.CHURNED].astype(int)
    Xv, yv = valid.drop(columns=schema.CHURNED), valid[schema.CHURNED].astype(int)
    pre = preprocessor(feature_types(X)).fit(X, y)
    return pre.transform(X), y, pre.transform(Xv), yv


def test_sqlite_study_resumes_to_the_trial_budget(prepared, tmp_path) -> None:
    url = f"sqlite:///{(tmp_path / 'optuna.db').resolve()}"
    seen = []
    config = tune_config(url, "s", 3, seed=1, stop=10)
    result = tune(*prepared, config, progress=lambda *a: seen.append(a))
    assert result.finished == 3
    assert seen[0] == ("tune", 0, 3) and seen[-1] == ("tune", 3, 3)
    assert 0.6 < result.best_value <= 1.0
    assert result.best_iteration >= 1 and "num_leaves" in result.best_params
    more = tune(*prepared, tune_config(url, "s", 5, seed=1, stop=10))
    assert more.finished == 5
    assert more.best_value >= result.best_value
    assert stored_trials(url, "s") == 5


def stored_trials(url: str, name: str) -> int:
    rdb = storage(url)
    try:
        return len(optuna.load_study(study_name=name, storage=rdb).trials)
    finally:
        rdb.engine.dispose()


def test_trials_are_nested_mlflow_runs(prepared, tmp_path, mlflow_env) -> None:
    url = f"sqlite:///{(tmp_path / 'optuna.db').resolve()}"
    _, artifacts = mlflow_env
    experiment = mlflow.create_experiment("tune-test", artifact_location=artifacts)
    with mlflow.start_run(experiment_id=experiment) as parent:
        tune(*prepared, tune_config(url, "n", 2, stop=5))
    runs = mlflow.search_runs(
        [experiment], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert sorted(runs["tags.mlflow.runName"]) == ["trial-0", "trial-1"]
    assert runs["params.num_leaves"].notna().all()


def test_a_new_study_starts_from_the_safe_point_sized_to_the_rows(prepared, tmp_path) -> None:
    Xt, y, *_ = prepared
    url = f"sqlite:///{(tmp_path / 'optuna.db').resolve()}"
    tune(*prepared, tune_config(url, "first", 2, stop=5))
    rdb = storage(url)
    trials = optuna.load_study(study_name="first", storage=rdb).get_trials()
    rdb.engine.dispose()
    start = first_trial(len(y))
    assert {k: trials[0].params[k] for k in start} == start
    assert len(y) == 1800 and start["min_child_samples"] == 18  # a hundredth of the rows
    assert trials[1].params != trials[0].params  # then the search proper
    # a leaf of a small app may need no more than an eighth of its rows; large apps keep 800
    assert (max_child_samples(2400), max_child_samples(100), max_child_samples(10**6)) == (
        300,
        20,
        800,
    )


def test_the_search_has_no_stumps() -> None:
    """Leaves from 4 (the first trial's): the one-SE rule kept a 2-leaf trial within noise that
    lost 0.015 oracle_ratio on a later day (docs/benchmarks.md, "No stumps")."""
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    search_space(trial, rows=2400)
    assert trial.distributions["num_leaves"] == IntDistribution(4, 63, log=True)
    assert trial.distributions["min_child_samples"] == IntDistribution(10, 300, log=True)
    assert "scale_pos_weight" not in trial.params  # one weight: nothing to choose


def test_postgresql_storage(prepared) -> None:
    try:
        with psycopg.connect(POSTGRES.replace("+psycopg", ""), connect_timeout=5):
            pass
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable at {POSTGRES}: {exc}")
    name = f"lapse-test-{uuid.uuid4().hex}"
    try:
        study = tune(
            *prepared,
            tune_config(POSTGRES, name, 2, stop=5),
        )
        assert stored_trials(POSTGRES, name) == 2
        assert study.finished == 2 and study.best_value > 0.6
    finally:
        rdb = storage(POSTGRES)
        optuna.delete_study(study_name=name, storage=rdb)
        rdb.engine.dispose()


def test_no_completed_trial_is_an_error(prepared, tmp_path) -> None:
    url = f"sqlite:///{(tmp_path / 'optuna.db').resolve()}"
    config = tune_config(url, "pruned-only", 1)
    rdb = storage(url)
    study = optuna.create_study(study_name=config.study_name, storage=rdb, direction="maximize")
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.PRUNED))
    rdb.engine.dispose()
    with pytest.raises(TuningError, match="'pruned-only' in sqlite:///.* no completed trial"):
        tune(*prepared, config)


def test_safe_url_masks_the_password() -> None:
    assert (
        safe_url("postgresql+psycopg://u:secret@db/optuna")
        == "postgresql+psycopg://u:***@db/optuna"
    )


# --- the one-standard-error rule -------------------------------------------------------------

DISTRIBUTIONS = {
    "num_leaves": IntDistribution(2, 63, log=True),
    "min_child_samples": IntDistribution(10, 800, log=True),
    "learning_rate": FloatDistribution(0.01, 0.2, log=True),
    "reg_lambda": FloatDistribution(1e-3, 30.0, log=True),
    "reg_alpha": FloatDistribution(1e-3, 10.0, log=True),
}


def trial(
    number,
    value,
    leaves,
    samples=20,
    rate=0.1,
    l2=1.0,
    l1=0.01,
    state=TrialState.COMPLETE,
    se=None,
):
    params = {
        "num_leaves": leaves,
        "min_child_samples": samples,
        "learning_rate": rate,
        "reg_lambda": l2,
        "reg_alpha": l1,
    }
    made = create_trial(
        state=state,
        value=value if state == TrialState.COMPLETE else None,
        params=params,
        distributions=DISTRIBUTIONS,
        user_attrs={"best_iteration": 10 + number} | ({SE_ATTR: se} if se is not None else {}),
        intermediate_values={} if state == TrialState.COMPLETE else {10: value},
    )
    made.number = number
    return made


def hanley_mcneil(auc: float, pos: int, neg: int) -> float:
    """The standard error written out from the paper's formula, independently of evaluate.py."""
    q1 = auc / (2 - auc)
    q2 = 2 * auc * auc / (1 + auc)
    return math.sqrt(
        (auc * (1 - auc) + (pos - 1) * (q1 - auc * auc) + (neg - 1) * (q2 - auc * auc))
        / (pos * neg)
    )


def test_the_fewest_leaves_within_one_standard_error_is_kept() -> None:
    se = hanley_mcneil(0.80, 100, 900)
    assert 0.02 < se < 0.03  # ~1,000 validation rows: the noise the rule is about
    trials = [
        trial(0, 0.80, leaves=31),  # the best
        trial(1, 0.80 - 0.5 * se, leaves=4, samples=50),
        trial(2, 0.80 - 0.2 * se, leaves=4, samples=20),  # 4 leaves too, higher AUC: kept
        trial(3, 0.80 - 1.5 * se, leaves=2, samples=200),  # the simplest, but too far below
        trial(4, 0.79, leaves=2, state=TrialState.PRUNED),  # pruned: never a candidate
        trial(5, 0.80 - 0.9 * se, leaves=8),
    ]
    chosen, why = select_trial(trials, 100, 900, width=1.0)
    assert chosen.number == 2 and why.chosen_trial == 2 and why.rule == "one_se"
    assert (why.best_trial, why.best_value) == (0, 0.80)
    assert why.standard_error == pytest.approx(se, rel=1e-12)
    assert why.standard_error_method == HANLEY_MCNEIL  # no trial stored its own
    assert why.threshold == pytest.approx(0.80 - se, rel=1e-12)
    assert why.candidates == (0, 1, 2, 5)
    assert "trial 2: the fewest leaves of the 4 trials within 1 SE" in why.reason()
    # a wider band reaches the stump; width 0 turns the rule off: the best trial
    assert select_trial(trials, 100, 900, width=2.0)[0].number == 3
    best, off = select_trial(trials, 100, 900, width=0.0)
    assert best.number == 0 and off.rule == "best" and math.isnan(off.standard_error)
    assert off.standard_error_method == "none"
    assert off.reason() == "trial 0: best validation ROC AUC 0.8000"
    # the best trial is kept when nothing simpler is within reach
    kept, why = select_trial(
        [trials[0], trials[3], trial(5, 0.80 - 0.9 * se, leaves=63)], 100, 900, width=1.0
    )
    assert kept.number == 0 and why.candidates == (0, 5)
    assert why.reason().endswith(
        f"none of the 1 other trial(s) within 1 SE ({se:.4f}) of it has fewer leaves"
    )


def test_the_best_trials_own_clustered_standard_error_sets_the_band() -> None:
    """Validation over several cut-offs: the best trial's standard error by subscriber (wider
    than Hanley-McNeil's here) reaches a simpler trial the row-wise band would not."""
    hm = hanley_mcneil(0.80, 100, 900)
    trials = [
        trial(0, 0.80, leaves=31, se=1.5 * hm),
        trial(1, 0.80 - 1.2 * hm, leaves=4, se=0.001),  # another trial's own SE plays no part
        trial(2, 0.80 - 0.5 * hm, leaves=8),
    ]
    chosen, why = select_trial(trials, 100, 900, width=1.0)
    assert chosen.number == 1 and why.standard_error == 1.5 * hm
    assert why.standard_error_method == CLUSTERED_SE and why.candidates == (0, 1, 2)
    unstored = [trial(0, 0.80, leaves=31), trials[1], trials[2]]
    assert select_trial(unstored, 100, 900, width=1.0)[0].number == 2


def test_ties_in_leaves_go_to_the_higher_auc_then_the_earlier_trial() -> None:
    se = hanley_mcneil(0.75, 60, 600)
    trials = [
        trial(0, 0.75, leaves=40),
        trial(1, 0.75 - 0.6 * se, leaves=3, samples=200, rate=0.01, l2=30.0),
        trial(2, 0.75 - 0.3 * se, leaves=3),
        trial(3, 0.75 - 0.3 * se, leaves=3),
    ]
    assert select_trial(trials, 60, 600)[0].number == 2
    # equal best values: Optuna's best_trial is the first, and so is the rule's "best"
    assert select_trial([trial(0, 0.7, 5), trial(1, 0.7, 3)], 60, 600, 0.0)[0].number == 0


def test_no_completed_trial_cannot_be_selected() -> None:
    with pytest.raises(ValueError, match="at least one completed trial"):
        select_trial([trial(0, 0.7, 4, state=TrialState.PRUNED)], 50, 500)


def reference_choice(trials, pos, neg, width):
    """A slow, obvious one-SE rule: keep every completed trial within width SE of the best, then
    drop any trial another candidate beats (fewer leaves, or as many with a higher AUC, or equal
    in both and earlier); the survivor is the choice."""
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best_value = max(t.value for t in complete)
    best = next(t for t in complete if t.value == best_value)
    own = best.user_attrs.get(SE_ATTR)
    band = width * (own if own is not None else hanley_mcneil(best_value, pos, neg))
    candidates = [t for t in complete if t.value >= best_value - band]

    def beats(a, b) -> bool:
        if a.params["num_leaves"] != b.params["num_leaves"]:
            return a.params["num_leaves"] < b.params["num_leaves"]
        if a.value != b.value:
            return a.value > b.value
        return a.number < b.number

    survivors = [t for t in candidates if not any(beats(o, t) for o in candidates if o is not t)]
    assert len(survivors) == 1
    return survivors[0].number


drawn_trial = st.tuples(
    st.sampled_from([0.70, 0.71, 0.72, 0.73, 0.74, 0.75]),
    st.sampled_from([2, 4, 8, 31]),
    st.sampled_from([10, 20, 80]),
    st.sampled_from([0.01, 0.03, 0.1]),
    st.sampled_from([0.1, 3.0]),
    st.sampled_from([0.001, 1.0]),
    st.booleans(),
)


@given(
    st.lists(drawn_trial, min_size=1, max_size=12),
    st.sampled_from([0.5, 1.0, 2.0]),
    st.sampled_from([(30, 300), (120, 900)]),
)
def test_the_rule_agrees_with_the_slow_reference(drawn, width, counts) -> None:
    trials = [
        trial(
            i,
            v,
            leaves,
            samples,
            rate,
            l2,
            l1,
            TrialState.PRUNED if pruned else TrialState.COMPLETE,
        )
        for i, (v, leaves, samples, rate, l2, l1, pruned) in enumerate(drawn)
    ]
    if all(t.state == TrialState.PRUNED for t in trials):
        trials.append(trial(len(trials), 0.7, 4))
    chosen, why = select_trial(trials, *counts, width=width)
    assert chosen.number == why.chosen_trial == reference_choice(trials, *counts, width)
    assert chosen.value >= why.threshold


def test_tune_keeps_the_trial_the_rule_selects(prepared, tmp_path) -> None:
    url = f"sqlite:///{(tmp_path / 'optuna.db').resolve()}"
    _, _, _, yv = prepared
    result = tune(*prepared, tune_config(url, "rule", 4, stop=10))
    rdb = storage(url)
    trials = optuna.load_study(study_name="rule", storage=rdb).get_trials()
    rdb.engine.dispose()
    pos = int(yv.sum())
    expected = reference_choice(trials, pos, len(yv) - pos, 1.0)
    kept = trials[expected]
    assert result.selection.chosen_trial == expected and result.best_params == kept.params
    assert result.best_value == kept.value
    assert result.best_iteration == kept.user_attrs["best_iteration"]
    best = max(t.value for t in trials if t.state == TrialState.COMPLETE)
    assert result.selection.best_value == best
    # the best trial's own standard error, by subscriber, on its validation scores: fitted
    # again with its parameters (one cut-off, so one row per subscriber: DeLong's)
    top = next(t for t in trials if t.value == best and t.state == TrialState.COMPLETE)
    assert result.selection.standard_error_method == CLUSTERED_SE
    assert result.selection.standard_error == top.user_attrs[SE_ATTR]
    Xt, y, Xvt, _ = prepared
    again = fit_classifier(classifier(top.params, 0), Xt, y, Xvt, yv, early_stopping_rounds=10)
    scores = again.predict_proba(Xvt)[:, 1]
    expected = clustered_auc_standard_error(yv, scores, subscriber_clusters(yv.index))
    assert top.user_attrs[SE_ATTR] == pytest.approx(expected, rel=1e-9)
    assert 0.5 < expected / hanley_mcneil(best, pos, len(yv) - pos) < 2
    off = tune(
        *prepared,
        TuneConfig(
            OptunaSettings(storage=url, n_trials=4, selection_se=0.0),
            "rule",
            TrainingSettings(seed=0, early_stopping_rounds=10),
        ),
    )  # the same finished study, the rule off: Optuna's best trial
    assert (
        off.selection.chosen_trial
        == off.selection.best_trial
        == max((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: t.value).number
    )
