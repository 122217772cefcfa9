"""docs/settings.md is what the settings models render now (so it cannot go stale), lists every
setting with its variable, type and default, and marks the secrets as environment-only."""

from __future__ import annotations

from pathlib import Path

import pytest

from lapse import reference
from lapse.settings import Settings


def test_the_committed_page_is_what_the_models_render_now() -> None:
    assert reference.REFERENCE.read_text() == reference.settings_reference(), (
        "docs/settings.md is stale: run `python -m lapse.reference`"
    )


def test_every_setting_has_a_row_with_its_variable_type_default_and_description() -> None:
    page = reference.settings_reference()
    rows = {line.split(" | ")[0].strip("| `"): line for line in page.splitlines()
            if line.startswith("| `")}  # fmt: skip
    expected = {f"{section}.{key}" for section, info in Settings.model_fields.items()
                for key in info.annotation.model_fields}  # fmt: skip
    assert set(rows) == expected
    assert rows["store.path"] == (
        "| `store.path` | `LAPSE_STORE__PATH` | path | `data` | Root of the Parquet event store "
        "(quarantine in &lt;path>/quarantine/, rescore scores in &lt;path>/scores/); a "
        "folder or an object-store path. |"
    )
    assert "| integer (>= 1, <= 75) | `75` |" in rows["braze.batch_size"]
    assert '| "probability" \\| "share" \\| "given" | `"probability"` |' in rows["buckets.mode"]
    assert "| number or unset (> 0) | unset |" in rows["serving.refresh_s"]
    for line in rows.values():
        assert line.rstrip(" |").rsplit(" | ", 1)[1].strip(), f"no description: {line}"


def test_secrets_are_listed_as_environment_only_without_a_default() -> None:
    page = reference.settings_reference()
    (key,) = [line for line in page.splitlines() if line.startswith("| `braze.api_key`")]
    assert key.startswith("| `braze.api_key` | `BRAZE_API_KEY` | secret or unset | - |")
    (token,) = [line for line in page.splitlines() if line.startswith("| `serving.token`")]
    assert "**Secret: environment only** (LAPSE_SERVING__TOKEN)" in token
    assert page.count("**Secret: environment only**") == 2


def test_a_changed_model_changes_the_page_and_check_says_stale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    page = tmp_path / "settings.md"
    assert reference.main([str(page)]) == 0 and reference.main(["--check", str(page)]) == 0
    field = Settings.model_fields["optuna"].annotation.model_fields["n_trials"]
    monkeypatch.setattr(field, "description", "Trials per tuning run, changed.")
    assert "Trials per tuning run, changed." in reference.settings_reference()
    assert reference.main(["--check", str(page)]) == 1


@pytest.mark.parametrize("argv", [["--help"], ["--chek"]])
def test_help_or_a_mistyped_flag_writes_no_file(
    argv: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stopped:
        reference.main(argv)
    assert stopped.value.code == (0 if argv == ["--help"] else 2)
    assert list(tmp_path.iterdir()) == []  # it used to write the page to a file named "--help"
