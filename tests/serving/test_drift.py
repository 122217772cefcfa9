"""Drift at every rescore: records in the store, the rescore result and summary, --fail-on-drift,
and the generator's drift switch caught by PSI on the features it changes."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from serving.drift import DriftRecord, DriftRecordError, drift_path, newest_drift, write_drift
from serving.rescore import rescore
from tests.serving.conftest import enter_registry_folder, publish_champion
from training import drift
from training.drift import DriftReport


def _report(flagged=("network",)) -> DriftReport:
    return DriftReport(0.2, 120, 0.01, {"network": 0.31, "tenure_days": 0.05}, tuple(flagged))


def test_records_are_written_atomically_and_the_newest_day_is_read(tmp_path) -> None:
    assert newest_drift(tmp_path) is None
    for day in (date(2026, 3, 2), date(2026, 3, 9), date(2026, 2, 23)):
        write_drift(tmp_path, DriftRecord(day, "lapse-churn", "3", _report()))
    newest = newest_drift(tmp_path)
    assert newest.as_of == date(2026, 3, 9) and newest.model_version == "3"
    assert newest.report == _report() and newest.path == drift_path(tmp_path, date(2026, 3, 9))
    assert newest.report.drifted
    write_drift(tmp_path, DriftRecord(date(2026, 3, 9), "lapse-churn", "4", _report(())))
    again = newest_drift(tmp_path)  # the same day rescored again replaces its record
    assert again.model_version == "4" and not again.report.drifted
    assert [p.name for p in (tmp_path / "monitoring" / "drift").iterdir() if p.name[0] == "."] == []


def test_a_damaged_record_is_named(tmp_path) -> None:
    path = drift_path(tmp_path, date(2026, 3, 9))
    path.parent.mkdir(parents=True)
    path.write_text('{"as_of": "2026-03-09"')
    with pytest.raises(DriftRecordError, match=r"drift-2026-03-09.json: not a drift record"):
        newest_drift(tmp_path)


def test_rescore_measures_drift_against_the_models_reference(small_store, model) -> None:
    """One subscriber is a population unlike the training rows: its features sit in one bin."""
    result = rescore(small_store, "2026-01-21", model, psi_threshold=0.2)
    assert result.drift.available and result.drift.rows == 1
    assert set(result.drift.feature_psi) == set(model.features_)
    assert result.drift.drifted and "sessions_28d" in result.drift.flagged
    calm = rescore(small_store, "2026-01-21", model, psi_threshold=1e6)
    assert calm.drift.flagged == () and calm.drift.feature_psi == result.drift.feature_psi


def test_a_model_without_a_reference_still_scores(small_store, model) -> None:
    import copy

    old = copy.deepcopy(model)
    del old.drift_reference_
    result = rescore(small_store, "2026-01-21", old)
    assert len(result.scores) == 1
    assert not result.drift.available and "older Lapse" in result.drift.reason


@pytest.fixture(scope="module")
def shared_champion(tmp_path_factory, model) -> str:
    """One registry with ``model`` as champion for this module: its rescores only read it, and
    a fresh MLflow database (its migrations) and a published model cost seconds each."""
    with pytest.MonkeyPatch.context() as patch:
        work = tmp_path_factory.mktemp("registry")
        enter_registry_folder(work, patch)
        return publish_champion(work, model)


@pytest.fixture
def champion(shared_champion: str, tmp_path, monkeypatch) -> str:
    """conftest's ``champion`` (LAPSE_ variables cleared, an empty working folder, the tracking
    URI set), on the module's one registry. Returns the tracking URI."""
    import mlflow

    work = tmp_path / "registry"
    work.mkdir()
    enter_registry_folder(work, monkeypatch)
    mlflow.set_tracking_uri(shared_champion)
    return shared_champion


@pytest.mark.slow  # a registered champion (the module's), a rescore in-process
def test_cli_rescore_shows_drift_and_fails_on_it_only_when_asked(
    small_store, champion: str, monkeypatch, capsys
) -> None:
    """The summary names the drifted features; --fail-on-drift exits 3 after the scores are
    written; a real run keeps the record in the store (drift record line), a dry run none."""
    from pathlib import Path

    from lapse.cli import ExitCode, main

    work = Path.cwd()
    monkeypatch.setenv("LAPSE_MLFLOW__TRACKING_URI", champion)
    monkeypatch.setenv("LAPSE_LEDGER__URL", f"sqlite:///{(work / 'ledger.db').resolve()}")
    args = ["rescore", "--store", str(small_store), "--as-of", "2026-01-21", "--dry-run"]
    args += ["--out", str(work / "s.parquet")]
    with pytest.raises(SystemExit) as exited:
        main(args)
    text = capsys.readouterr()
    out = " ".join(text.out.split())
    assert exited.value.code in (0, None)
    assert "DRIFT (PSI > 0.2)" in out and "sessions_28d" in out
    assert "drift record │ (not kept: dry run)" in out
    with pytest.raises(SystemExit) as exited:
        main([*args, "--fail-on-drift"])
    assert exited.value.code == ExitCode.DRIFT == 3
    assert "sessions_28d" in capsys.readouterr().err and (work / "s.parquet").is_file()
    assert newest_drift(small_store) is None  # dry runs keep no record
    monkeypatch.setenv("LAPSE_MONITORING__PSI_THRESHOLD", "1000000")
    with pytest.raises(SystemExit) as exited:
        main([*args, "--fail-on-drift"])
    assert exited.value.code in (0, None)
    assert "drift (PSI > 1e+06) │ none (largest: " in " ".join(capsys.readouterr().out.split())


@pytest.mark.slow  # a registered champion (the module's), a rescore with a sync
def test_a_real_rescore_keeps_its_drift_record(
    small_store, champion: str, tmp_path, monkeypatch, emulator
) -> None:
    from lapse import jobs
    from lapse.settings import Settings
    from tests.serving.conftest import KEY

    monkeypatch.setenv("BRAZE_API_KEY", KEY)
    uri = champion
    settings = Settings(
        store={"path": small_store},
        mlflow={"tracking_uri": uri},
        ledger={"url": f"sqlite:///{(tmp_path / 'ledger.db').resolve()}"},
        braze={"url": emulator.url},
    )
    outcome = jobs.rescore(settings, date(2026, 1, 21))
    record = newest_drift(small_store)
    assert outcome.drift_path == record.path == drift_path(small_store, date(2026, 1, 21))
    assert record.model_name == "lapse-churn" and record.model_version == "1"
    assert record.report == outcome.result.drift


# --- the generator's drift switch ----------------------------------------------------------------

START = date(2026, 1, 5)


@pytest.fixture(scope="module")
def apps(tmp_path_factory) -> dict[str, pd.DataFrame]:
    """The same seed generated stable and with the acquisition drift, each ingested."""
    from features import load_events
    from features.ingest import ingest
    from features.synthetic import SyntheticConfig, generate

    root = tmp_path_factory.mktemp("drift-apps")
    events = {}
    for mode in ("none", "acquisition"):
        config = SyntheticConfig(users=1000, seed=3, start=START, days=120, drift=mode)
        generate(config, root / mode / "app")
        ingest([root / mode / "app" / "raw"], root / mode / "store")
        events[mode] = load_events(root / mode / "store")
    return events


@pytest.mark.slow
def test_the_acquisition_switch_is_flagged_on_the_network_and_a_stable_app_is_not(apps) -> None:
    """The reference is what training keeps: the newest cut-off of the stable app (day 105);
    both apps are scored a week later, when a weekly `lapse train --if-due` would next run
    (fixed seeds: the same numbers every run). With the default settings (PSI 0.2, the calendar
    features exempt) the drifted app is flagged on the acquisition network and the stable app
    on nothing; its calendar features are reported as exempt (this export starts every
    subscriber's history at its first day, so tenure moves by a whole decile a week)."""
    from features import build_features
    from features.build import feature_registry
    from serving.settings import MonitoringSettings
    from training.pipeline import feature_types

    def at(events: pd.DataFrame, day: int) -> pd.DataFrame:
        return build_features(events, pd.Timestamp(START + timedelta(day), tz="UTC"))

    monitoring = MonitoringSettings()
    newest = at(apps["none"], 105)
    types = feature_types(newest, feature_registry())
    kinds = {c: "categorical" for c in types.categorical} | {c: "boolean" for c in types.boolean}
    reference = drift.reference(newest, np.zeros(len(newest)), kinds)
    reports = {
        mode: drift.population_stability(
            reference,
            (frame := at(events, 112)),
            np.zeros(len(frame)),
            monitoring.psi_threshold,
            monitoring.drift_exempt,
        )
        for mode, events in apps.items()
    }
    stable, drifted = reports["none"], reports["acquisition"]
    assert drifted.feature_psi["network"] > 1.5 * monitoring.psi_threshold
    assert stable.feature_psi["network"] < monitoring.psi_threshold / 10
    assert drifted.flagged == ("network",)
    assert stable.flagged == ()
    assert "tenure_days" in stable.exempted and "tenure_days" in drifted.exempted
    # pooled over the weekly cut-offs of days 63-105 instead, the stable app's price (it rises
    # at 60% of the period) and its renewals would be flagged too: why training keeps the newest
    pooled = pd.concat([at(apps["none"], d) for d in range(63, 106, 7)])
    old = drift.reference(pooled, np.zeros(len(pooled)), kinds)
    frame = at(apps["none"], 112)
    aged = drift.population_stability(
        old, frame, np.zeros(len(frame)), monitoring.psi_threshold, monitoring.drift_exempt
    )
    assert {"price", "renewals"} <= set(aged.flagged)
