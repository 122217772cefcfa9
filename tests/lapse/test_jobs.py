"""Jobs the notebooks start from: a sample app made once and reused, refused over a folder that
is not one, and the snapshots training learns from."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from features import schema as s
from features.ingest import StoreError
from lapse import jobs
from lapse.settings import Settings


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Settings:
    """A tiny sample app's settings in an empty folder, no Lapse variables."""
    for name in list(os.environ):
        if name.upper().startswith("LAPSE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    base = jobs.sample_settings(Settings.load(store={"path": tmp_path}), "app", users=40)
    return base.updated(synthetic={"days": 45}, labels={"horizon_days": 7})


def test_a_sample_app_is_made_once_and_reused(settings: Settings) -> None:
    made = jobs.sample_app(settings)
    assert not made.reused and made.ingest is not None and made.ingest.rows_stored > 0
    root = settings.store.path
    assert root == settings.store.path.parent / "app"
    assert settings.mlflow.tracking_uri == f"sqlite:///{(root / 'mlflow.db').resolve()}"
    assert (root / jobs.SAMPLE_MARK).is_file()
    again = jobs.sample_app(settings)
    assert again.reused and again.generation is None
    # other generator settings: the old sample app is replaced, not mixed in
    other = settings.updated(synthetic={"users": 20})
    assert not jobs.sample_app(other).reused
    assert jobs.sample_app(other).reused


def test_a_folder_that_is_not_a_sample_app_is_refused(settings: Settings) -> None:
    root = settings.store.path
    root.mkdir(parents=True)
    (root / "precious.txt").write_text("keep me")
    with pytest.raises(StoreError, match="not empty and not a sample app .*LAPSE_STORE__PATH"):
        jobs.sample_app(settings)
    assert (root / "precious.txt").read_text() == "keep me"


def test_training_snapshots_are_cut_at_the_ground_truths_cutoffs(settings: Settings) -> None:
    jobs.sample_app(settings)
    frame = jobs.training_snapshots(settings)
    truth = pd.read_parquet(settings.store.path / "synthetic" / "truth" / "churn_truth.parquet")
    cutoffs = frame.index.get_level_values(s.AS_OF).unique()
    assert sorted(cutoffs) == sorted(pd.to_datetime(truth[s.AS_OF], utc=True).unique())
    assert frame[s.CHURNED].notna().sum() > 0
    assert {"tenure_days", "status"} <= set(frame.columns)


def test_a_sample_app_killed_half_way_is_replaced_by_the_next_run(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    def killed(settings, folder, *args, **kwargs):
        (folder / "raw").mkdir(parents=True)
        (folder / "raw" / "half.csv").write_text("app_token,")
        raise KeyboardInterrupt  # Ctrl-C (or a kernel restart) in the middle of generating

    with monkeypatch.context() as patched:
        patched.setattr(jobs.sample, "generate", killed)  # what sample_app calls
        with pytest.raises(KeyboardInterrupt):
            jobs.sample_app(settings)
    made = jobs.sample_app(settings)  # used to refuse: "not empty and not a sample app"
    assert not made.reused and made.ingest is not None and made.ingest.rows_stored > 0
    assert not (settings.store.path / "synthetic" / "raw" / "half.csv").exists()
    assert jobs.sample_app(settings).reused


def test_a_demo_app_too_small_to_train_says_to_raise_users(tmp_path: Path) -> None:
    """The split's counts come with the demo's own remedy (`--users`), not only the settings."""
    from training.splits import DataSufficiencyError

    small = Settings.load(store={"path": tmp_path}).updated(
        synthetic={"users": 150, "days": 60}, labels={"horizon_days": 7}
    )
    with pytest.raises(DataSufficiencyError) as caught:
        jobs.demo(small, trials=1)
    message = str(caught.value)
    assert "each split needs at least 50 churners" in message
    assert "The demo's app of 150 users is too small" in message and "--users N" in message
    assert (tmp_path / "demo" / "synthetic" / "raw").is_dir()  # what it generated is kept
