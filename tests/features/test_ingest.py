"""Ingest end to end: generator output in, store out; re-runs, bad files, crashes."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from features import load_events, load_quarantine
from features import schema as s
from features.ingest import IngestError, ingest
from features.synthetic import SyntheticConfig, adjust_files, generate

#: The generator's defect names → the reason ingest must give.
DEFECT_REASON = {
    "bad_created_at": "bad_timestamp",
    "missing_identity": "missing_identity",
    "truncated_row": "truncated_row",
    "unknown_event": "unknown_event",
    "negative_price": "negative_price",
    "expiry_before_purchase": "expiry_before_purchase",
}


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """300 users over 12 days (legacy vocabulary first), with every defect kind made common."""
    out = tmp_path_factory.mktemp("gen")
    rates = {"unknown_event": 0.05, "negative_price": 0.3, "expiry_before_purchase": 0.05}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            adjust_files,
            "CORRUPTIONS",
            {
                kind: (rates.get(kind, 0.01), sub)
                for kind, (_, sub) in adjust_files.CORRUPTIONS.items()
            },
        )
        generate(
            SyntheticConfig(
                users=300, seed=11, start=date(2026, 1, 5), days=12, cutoffs=(date(2026, 1, 12),)
            ),
            out,
        )
    return out


@pytest.fixture(scope="module")
def ingested(generated: Path, tmp_path_factory: pytest.TempPathFactory):
    store = tmp_path_factory.mktemp("store")
    summary = ingest([generated / "raw"], store)
    return store, summary


def test_every_injected_defect_is_quarantined_with_its_reason(generated: Path, ingested) -> None:
    store, summary = ingested
    injected = pd.read_parquet(generated / "truth" / "injected.parquet")
    assert set(injected["defect"]) == set(DEFECT_REASON)  # the fixture made every kind appear
    quarantine = load_quarantine(store)
    quarantine["file"] = quarantine[s.SOURCE].map(lambda p: Path(p).name)
    got = quarantine.set_index(["file", s.LINE])[s.REASON].sort_index()
    want = (
        injected.assign(reason=injected["defect"].map(DEFECT_REASON))
        .set_index(["file", "line"])["reason"]
        .sort_index()
    )
    want.index.names = ["file", s.LINE]
    pd.testing.assert_series_equal(got, want, check_names=False)
    assert summary.quarantined == injected["defect"].map(DEFECT_REASON).value_counts().to_dict()
    assert summary.bad_files == {}


def test_duplicates_are_dropped_and_every_row_is_accounted_for(generated: Path, ingested) -> None:
    store, summary = ingested
    events = load_events(store)
    manifest = pd.read_json(generated / "manifest.json", typ="series")
    assert summary.rows_read == manifest["rows"]
    assert summary.duplicates == manifest["duplicates"]
    assert summary.rows_stored == len(events)
    assert summary.rows_read == summary.rows_stored + summary.duplicates + summary.rows_quarantined
    assert events[s.EVENT_KEY].is_unique
    assert events[s.TS].dt.tz is not None
    assert list(events.columns) == list(s.EVENT_COLUMNS)


def test_rerun_adds_nothing(generated: Path, ingested) -> None:
    store, _ = ingested
    before = load_events(store)
    again = ingest([generated / "raw"], store)
    assert (again.rows_stored, again.rows_read, again.commits) == (0, 0, 0)
    assert again.files_skipped == again.files
    pd.testing.assert_frame_equal(load_events(store), before)


def test_missing_source_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(IngestError, match="no such file"):
        ingest([tmp_path / "nope"], tmp_path / "store")
