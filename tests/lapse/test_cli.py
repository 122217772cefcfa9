"""The `lapse` command line: help, version, generate and demo, exit codes and one-line errors."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from lapse import __version__, render
from lapse.cli import app, main
from lapse.settings import API_KEY_ENV, ENV_PREFIX

LAPSE = Path(sys.executable).parent / "lapse"
SECRET = "sk-secret-123"
SMALL = ["--users", "200", "--days", "40"]
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _plain(text: str) -> str:
    """Drop terminal colour codes, in case FORCE_COLOR or a terminal turned them on."""
    return _ANSI.sub("", text)


def _lines(text: str) -> list[str]:
    """The non-blank lines of some output."""
    return [line for line in _plain(text).splitlines() if line.strip()]


def _clean_environ() -> dict[str, str]:
    """The current environment without Lapse or Braze variables and without forced colour."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.upper().startswith(ENV_PREFIX)
        and k.upper() not in {API_KEY_ENV, "FORCE_COLOR", "COLUMNS"}
    }


def run_lapse(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run the installed `lapse` console script in a subprocess, with a clean environment."""
    return subprocess.run(
        [str(LAPSE), *args],
        cwd=cwd,
        env={**_clean_environ(), "NO_COLOR": "1", **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def invoke(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Call `lapse.cli.main` in-process; return (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as exited:
        main(list(args))
    captured = capsys.readouterr()
    code = exited.value.code
    return (0 if code is None else code), _plain(captured.out), _plain(captured.err)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Run each test in an empty folder (no ./lapse.toml) with no Lapse or Braze variables."""
    for name in list(os.environ):
        if name.upper().startswith(ENV_PREFIX) or name.upper() == API_KEY_ENV:
            monkeypatch.delenv(name)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def _manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


# --- help and version ---------------------------------------------------------------------------


def test_version_subprocess(clean_env: Path) -> None:
    """`lapse --version` prints `lapse <version>` and exits 0."""
    done = run_lapse("--version", cwd=clean_env)
    assert done.returncode == 0, done.stderr
    assert _plain(done.stdout).strip() == f"lapse {__version__}"


@pytest.mark.parametrize(
    ("args", "options"),
    [
        (["--help"], ["--config", "--verbose", "--version", "generate", "demo"]),
        (
            ["generate", "--help"],
            [
                "--out",
                "--users",
                "--seed",
                "--start",
                "--days",
                "--horizon-days",
                "--cutoff",
                "--legacy-share",
                "--overwrite",
                "--drift",
            ],
        ),
        (["demo", "--help"], ["--users", "--trials", "/score_events", "/lookup"]),
        (["rescore", "--help"], ["--fail-on-drift", "status 3"]),
        (["train", "--help"], ["--if-due", "training.max_age_days"]),
    ],
)
def test_help_lists_options(args: list[str], options: list[str]) -> None:
    """`--help` on the app and on each command exits 0 and lists its options."""
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    text = _plain(result.stdout)
    for option in options:
        assert option in text


def test_version_in_process() -> None:
    """`--version` through the typer app prints the installed version."""
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert _plain(result.stdout).strip() == f"lapse {__version__}"


# --- generate -----------------------------------------------------------------------------------


def test_generate_end_to_end(clean_env: Path) -> None:
    """A small `generate` writes the raw export, the truth and the manifest and prints a summary."""
    out = clean_env / "data"
    done = run_lapse("generate", "--out", str(out), *SMALL, cwd=clean_env)
    assert done.returncode == 0, done.stderr
    stdout = _plain(done.stdout)
    assert "ground-truth rows" in stdout
    assert re.search(r"^\W*rows\b", stdout, re.MULTILINE)
    assert "Traceback" not in done.stdout + done.stderr
    assert list((out / "raw").glob("*.csv.gz"))
    assert (out / "truth" / "churn_truth.parquet").is_file()
    assert (out / "manifest.json").is_file()
    assert _manifest(out)["users"] == 200


def test_generate_refuses_existing_data_without_overwrite(
    clean_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Re-generating into a folder with data exits 1 naming --overwrite; --overwrite works."""
    out = clean_env / "data"
    code, _, _ = invoke(capsys, "generate", "--out", str(out), *SMALL)
    assert code == 0
    code, stdout, stderr = invoke(capsys, "generate", "--out", str(out), *SMALL)
    assert code == 1
    assert stdout == ""
    lines = _lines(stderr)
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error:")
    assert "--overwrite" in lines[0]
    assert "Traceback" not in stderr
    code, stdout, _ = invoke(capsys, "generate", "--out", str(out), *SMALL, "--overwrite")
    assert code == 0
    assert "ground-truth rows" in stdout
    assert (out / "truth" / "churn_truth.parquet").is_file()


def test_days_below_minimum_is_a_usage_error(
    clean_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--days 3` is rejected by typer's validation with exit 2, naming --days."""
    code, _, stderr = invoke(capsys, "generate", "--out", str(clean_env / "d"), "--days", "3")
    assert code == 2
    assert "--days" in stderr
    assert "Traceback" not in stderr
    assert not (clean_env / "d").exists()


@pytest.mark.slow  # subprocess runs of the generator
def test_cutoff_outside_period_is_one_line(clean_env: Path) -> None:
    """A cut-off outside the period exits 1 with one line naming the date and no traceback."""
    done = run_lapse("generate", "--out", "d", *SMALL, "--cutoff", "2027-01-01", cwd=clean_env)
    assert done.returncode == 1
    lines = _lines(done.stderr)
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error:")
    assert "2027-01-01" in lines[0]
    assert "outside" in lines[0]
    assert "Traceback" not in done.stdout + done.stderr
    assert not (clean_env / "d" / "raw").exists()


@pytest.mark.slow  # subprocess runs of the generator
def test_cutoff_outside_period_verbose_shows_traceback(clean_env: Path) -> None:
    """With -v the same error prints the traceback on stderr, then the one-line reason."""
    # -v after the command works too, as the error hint invites
    done = run_lapse(
        "generate", "--out", "d", *SMALL, "--cutoff", "2027-01-01", "-v", cwd=clean_env
    )
    assert done.returncode == 1
    stderr = _plain(done.stderr)
    assert "Traceback (most recent call last)" in stderr
    assert "GenerationError" in stderr
    assert _lines(stderr)[-1].startswith("error:")
    assert "2027-01-01" in _lines(stderr)[-1]
    assert "Traceback" not in done.stdout


# --- settings -----------------------------------------------------------------------------------


def test_bad_config_file_is_one_line_naming_file_and_key(
    clean_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A config value of the wrong type exits 1 with one line naming the file, key and value."""
    bad = clean_env / "bad.toml"
    bad.write_text('[synthetic]\nusers = "many"\n')
    code, stdout, stderr = invoke(capsys, "--config", str(bad), "generate", "--out", "d")
    assert code == 1
    assert stdout == ""
    lines = _lines(stderr)
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error:")
    assert str(bad) in lines[0]
    assert "users" in lines[0]
    assert "'many'" in lines[0]
    assert "Traceback" not in stderr
    assert not (clean_env / "d").exists()


def test_bad_config_message_names_the_section(
    clean_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The one-line settings error keeps the `[synthetic] users` location intact."""
    bad = clean_env / "bad.toml"
    bad.write_text('[synthetic]\nusers = "many"\n')
    code, _, stderr = invoke(capsys, "--config", str(bad), "generate", "--out", "d")
    assert code == 1
    assert f"{bad}: [synthetic] users:" in stderr


def test_missing_config_file_fails(clean_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A --config path that does not exist exits non-zero with one line naming it."""
    code, _, stderr = invoke(capsys, "--config", "nope.toml", "generate", "--out", "d")
    assert code == 1
    lines = _lines(stderr)
    assert len(lines) == 1, stderr
    assert "nope.toml" in lines[0]
    assert "Traceback" not in stderr
    assert not (clean_env / "d").exists()


def test_bad_env_value_is_one_line(
    clean_env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A LAPSE_* variable of the wrong type exits 1 with one line naming the variable."""
    monkeypatch.setenv("LAPSE_SYNTHETIC__USERS", "abc")
    code, _, stderr = invoke(capsys, "generate", "--out", "d")
    assert code == 1
    lines = _lines(stderr)
    assert len(lines) == 1, stderr
    assert "LAPSE_SYNTHETIC__USERS" in lines[0]
    assert "Traceback" not in stderr


def test_env_overrides_users_and_flag_beats_env(
    clean_env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """LAPSE_SYNTHETIC__USERS sets the users; a --users flag beats the variable."""
    monkeypatch.setenv("LAPSE_SYNTHETIC__USERS", "150")
    code, stdout, _ = invoke(capsys, "generate", "--out", "env", "--days", "40")
    assert code == 0
    assert _manifest(clean_env / "env")["users"] == 150
    assert re.search(r"^\W*users\W+150\b", stdout, re.MULTILINE), stdout

    code, stdout, _ = invoke(capsys, "generate", "--out", "flag", "--days", "40", "--users", "120")
    assert code == 0
    assert _manifest(clean_env / "flag")["users"] == 120
    assert re.search(r"^\W*users\W+120\b", stdout, re.MULTILINE), stdout


@pytest.mark.slow  # subprocess runs of the generator
def test_braze_key_never_printed(clean_env: Path) -> None:
    """BRAZE_API_KEY never appears in the output of a generate run or of error runs (even -v)."""
    env = {API_KEY_ENV: SECRET}
    bad = clean_env / "bad.toml"
    bad.write_text("[braze]\nbatch_size = 500\n\n[synthetic]\nusers = 0\n")
    runs = [
        run_lapse("generate", "--out", "d", *SMALL, cwd=clean_env, env=env),
        run_lapse("generate", "--out", "d", *SMALL, cwd=clean_env, env=env),  # exists: error
        run_lapse("-v", "--config", str(bad), "generate", "--out", "e", cwd=clean_env, env=env),
        run_lapse(
            "-v",
            "generate",
            "--out",
            "f",
            *SMALL,
            "--cutoff",
            "2030-01-01",
            cwd=clean_env,
            env=env,
        ),
    ]
    assert [r.returncode for r in runs] == [0, 1, 1, 1]
    assert "batch_size" in runs[2].stderr  # the error run really went through the Braze section
    for done in runs:
        assert SECRET not in done.stdout + done.stderr


# --- demo ---------------------------------------------------------------------------------------


def _demo_config(folder: Path, *, horizon_days: int | None) -> Path:
    labels = f"[labels]\nhorizon_days = {horizon_days}\n\n" if horizon_days else ""
    config = folder / "demo.toml"
    config.write_text(
        f"[store]\npath = {json.dumps(str(folder / 'store'))}\n\n"
        f"{labels}[synthetic]\nusers = 300\ndays = 40\n"
    )
    return config


@pytest.mark.slow
def test_demo_runs_the_whole_flow(clean_env: Path) -> None:
    """`demo` generates, ingests, trains, rescores and syncs to the emulator, then syncs nothing;
    then it scores one subscriber over HTTP (equal to the rescore) and stops the service."""
    config = clean_env / "demo.toml"
    config.write_text(
        f"[store]\npath = {json.dumps(str(clean_env / 'store'))}\n\n"
        '[mlflow]\ntracking_uri = "sqlite:///mlflow.db"\nartifact_location = "mlruns"\n\n'
        '[optuna]\nstorage = "sqlite:///optuna.db"\n\n'
        "[synthetic]\nusers = 1500\n"
        # a fifth of 1,500 subscribers validates: fewer churners than the production floor
        "[training]\nmin_churners = 20\nmin_non_churners = 20\n"
    )
    done = run_lapse("--config", str(config), "demo", "--trials", "2", cwd=clean_env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    stdout = _plain(done.stdout)
    assert "Traceback" not in done.stdout + done.stderr
    for title in ("Ground truth vs realised outcomes", "Ingested", "Hold-out metrics", "Rescored"):
        assert title in stdout
    root = clean_env / "store" / "demo"
    assert _manifest(root / "synthetic")["users"] == 1500
    # the demo's own registry in its folder: the configured one (a real champion) is untouched
    assert (root / "mlflow.db").is_file() and not (clean_env / "mlflow.db").exists()
    scores = list((root / "scores").glob("scores-*.parquet"))
    assert len(scores) == 1
    scored = len(pd.read_parquet(scores[0]))
    syncs = re.findall(r"│ sent\s+│\s+([\d,]+) │", stdout)
    assert [int(n.replace(",", "")) for n in syncs] == [scored, 0]
    # the service over HTTP: the riskiest subscriber by /score_events and /lookup, then stopped
    answers = json.loads((root / "service-answers.json").read_text())
    frame = pd.read_parquet(scores[0]).set_index(["user_id", "platform"])
    mine = frame.loc[(answers["user_id"], answers["platform"])]
    assert mine["churn_probability"] == frame["churn_probability"].max()
    (by_events,) = answers["score_events"]["scores"]
    assert answers["callbacks"] > 0 and answers["score_events"]["rejected"] == []
    assert abs(by_events["churn_probability"] - mine["churn_probability"]) <= 1e-9
    assert by_events["bucket"] == mine["bucket"]
    assert by_events["reasons"] == list(mine["reasons"])
    (looked,) = answers["lookup"]["results"]
    assert looked["scored"] and looked["churn_probability"] == mine["churn_probability"]
    for seen in ("POST /score_events", "POST /lookup", "stopped again"):
        assert seen in stdout
    import socket

    with socket.socket() as probe:  # nothing listens any more where the service was
        assert probe.connect_ex(("127.0.0.1", int(answers["url"].rsplit(":", 1)[1]))) != 0
    # the closing summary: metrics against baselines and oracle, buckets, data points, MLflow
    for seen in ("oracle_ratio", "bucket bounds", "Braze data points used", "MLflow run"):
        assert seen in stdout
    tracking = f"sqlite:///{(root / 'mlflow.db').resolve()}"
    assert f"mlflow ui --backend-store-uri {tracking}" in stdout
    assert "notebooks/" in stdout


def test_demo_with_short_period_and_default_horizon(clean_env: Path) -> None:
    """`demo` over 40 days with a 30-day horizon fails up front as a user error, naming the fix."""
    config = _demo_config(clean_env, horizon_days=None)
    done = run_lapse("--config", str(config), "demo", cwd=clean_env)
    stderr = _plain(done.stderr)
    assert "Traceback" not in stderr
    assert done.returncode == 1
    assert _lines(stderr) == [_lines(stderr)[0]], stderr
    assert "synthetic.days" in stderr and "labels.horizon_days" in stderr
    assert not (clean_env / "store" / "synthetic").exists()


# --- features -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_features_end_to_end(clean_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """generate → ingest → features writes one row per active subscriber and a summary."""
    import pandas as pd

    from features.build import feature_names

    raw, store, out = clean_env / "syn", clean_env / "store", clean_env / "f.parquet"
    assert invoke(capsys, "generate", "--out", str(raw), *SMALL)[0] == 0
    assert invoke(capsys, "ingest", str(raw / "raw"), "--store", str(store))[0] == 0
    code, stdout, _ = invoke(
        capsys, "features", "--store", str(store), "--as-of", "2026-02-01", "--out", str(out)
    )
    assert code == 0
    frame = pd.read_parquet(out)
    assert len(frame) > 50 and list(frame.columns) == list(feature_names())
    assert frame.index.names == ["user_id", "platform"]
    assert re.search(rf"active subscribers\W+{len(frame):,}", stdout)
    # a cut-off before the data: nobody is active, and that is an error, not an empty file
    early = clean_env / "early.parquet"
    code, _, stderr = invoke(
        capsys, "features", "--store", str(store), "--as-of", "2020-01-01", "--out", str(early)
    )
    assert code == 1 and "no subscriber is active at 2020-01-01" in stderr
    assert "it holds no events before then" in stderr and not early.exists()


def test_features_without_a_store_is_one_line(
    clean_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, stderr = invoke(
        capsys, "features", "--store", "nowhere", "--as-of", "2026-02-01", "--out", "f.parquet"
    )
    assert code == 1
    assert _lines(stderr) == [
        f"error: {clean_env / 'nowhere'}: no event store here (no manifest.json); "
        "run `lapse ingest` first"
    ]


# --- train --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_train_end_to_end_with_the_oracle(
    clean_env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """generate → ingest → train registers a champion and compares with the ground truth."""
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("LAPSE_TRAINING__MIN_CHURNERS", "20")
    store = clean_env / "data"
    small = ["--users", "1500", "--days", "90", "--horizon-days", "14"]
    assert invoke(capsys, "generate", "--out", str(store / "synthetic"), *small)[0] == 0
    assert invoke(capsys, "ingest", str(store / "synthetic" / "raw"), "--store", str(store))[0] == 0
    args = ["train", "--store", str(store), "--trials", "3", "--horizon", "14"]
    code, stdout, _ = invoke(capsys, *args)
    assert code == 0
    assert re.search(r"oracle\W+[\d,]+ of [\d,]+ hold-out rows matched", stdout)
    assert re.search(r"roc_auc\W+0\.\d+\W+0\.\d+\W+0\.\d+\W+0\.\d+\W+0\.\d+", stdout)
    assert "champion moved to version 1" in " ".join(stdout.split())
    margin = r"LightGBM margin, PR AUC\W+valid [+-]0\.\d{4} hold-out [+-]0\.\d{4}"
    assert re.search(margin, " ".join(stdout.split())), stdout
    assert (clean_env / "mlflow.db").is_file() and (clean_env / "optuna.db").is_file()
    # same data and seed again: no move (tests/training/test_train.py, without the CLI's cost)


def test_train_without_a_store_is_one_line(
    clean_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, stderr = invoke(capsys, "train", "--store", "nowhere", "--trials", "1")
    assert code == 1
    assert _lines(stderr) == [
        f"error: {clean_env / 'nowhere'}: no event store here (no manifest.json); "
        "run `lapse ingest` first"
    ]
    assert not (clean_env / "mlflow.db").exists()


def test_serve_with_a_model_that_does_not_exist_is_one_line(clean_env: Path) -> None:
    """`lapse serve --model <wrong>` stops with the registry's answer in one line (found before
    BentoML's worker has started, not after it failed)."""
    config = clean_env / "lapse.toml"
    config.write_text('[mlflow]\ntracking_uri = "sqlite:///mlflow.db"\n')
    from mlflow import MlflowClient

    MlflowClient(f"sqlite:///{clean_env / 'mlflow.db'}").search_registered_models()  # empty
    port = str(_free_port())
    done = run_lapse("--config", str(config), "serve", "--model", "models:/nope@champion",
                     "--port", port, cwd=clean_env)  # fmt: skip
    assert done.returncode == 1, done.stderr
    (line,) = _lines(done.stderr)
    assert line.startswith("error: models:/nope@champion: no model to score with at ")
    assert "Registered Model with name=nope not found" in line and "Traceback" not in done.stderr


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_ingest_reprocess_quarantine_retries_rows_once_after_a_rule_change(
    clean_env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A row refused under one [ingest] window is stored by --reprocess-quarantine once the
    window is widened, and only once; SRC and the flag together are a usage error."""
    src = clean_env / "a.csv"
    src.write_text(
        "created_at,adid,os_name,activity_kind\n"
        "1262304000,old-device,ios,session\n"  # 2010-01-01
        "1767574008,new-device,ios,session\n"  # 2026-01-05
    )
    store = clean_env / "store"
    monkeypatch.setenv("LAPSE_INGEST__EARLIEST", "2020-01-01")
    code, stdout, _ = invoke(capsys, "ingest", str(src), "--store", str(store))
    assert code == 0 and re.search(r"implausible_time\W+1\b", stdout)
    monkeypatch.delenv("LAPSE_INGEST__EARLIEST")  # back to 2008: the 2010 row is plausible
    code, stdout, _ = invoke(capsys, "ingest", "--reprocess-quarantine", "--store", str(store))
    assert code == 0 and re.search(r"rows stored\W+1\b", stdout)
    code, stdout, _ = invoke(capsys, "ingest", "--reprocess-quarantine", "--store", str(store))
    assert code == 0 and re.search(r"rows stored\W+0\b", stdout)
    from features import load_events

    assert sorted(load_events(store)["user_id"]) == ["new-device", "old-device"]
    code, _, stderr = invoke(capsys, "ingest", str(src), "--reprocess-quarantine")
    assert code == 2 and "not both" in stderr


def test_ingest_that_stores_nothing_exits_1_and_says_why(
    clean_env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression (hostile review): an export whose every row is refused (here: before
    ingest.earliest) exited 0 and the loss surfaced only at `lapse train`."""
    src = clean_env / "old.csv"
    src.write_text("created_at,adid,os_name,activity_kind\n1262304000,d,ios,session\n")
    monkeypatch.setenv("LAPSE_INGEST__EARLIEST", "2020-01-01")
    code, _, stderr = invoke(capsys, "ingest", str(src), "--store", str(clean_env / "s"))
    assert code == 1 and "all 1 rows read were quarantined" in stderr
    assert "--reprocess-quarantine" in stderr
    code, _, stderr = invoke(capsys, "ingest", "--store", str(clean_env / "s"))
    assert code == 2 and "nothing to ingest" in stderr


def test_features_out_must_be_parquet(clean_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Regression (hostile review): --out f.csv got Parquet bytes."""
    code, _, stderr = invoke(capsys, "features", "--as-of", "2026-02-01", "--out", "f.csv")
    assert code == 1 and "--out f.csv: expected a .parquet file name" in stderr
    assert not (clean_env / "f.csv").exists()


def test_rescore_without_an_api_key_stops_before_scoring(
    clean_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Regression (hostile review): the whole scoring ran, then the sync said there was no key
    without saying where the scores went; now it stops first (a dry run needs no key)."""
    code, _, stderr = invoke(capsys, "rescore", "--as-of", "2026-02-01")
    assert code == 1 and "no Braze API key" in stderr and "--dry-run" in stderr
    code, _, stderr = invoke(capsys, "rescore", "--as-of", "2026-02-01", "--dry-run")
    assert code == 1 and "no MLflow database" in stderr  # a dry run goes on to the model


def test_drift_rows_name_unknown_exempt_names_and_skip_exempt_features_as_largest() -> None:
    """The rescore summary warns about monitoring.drift_exempt names the model lacks, and the
    largest PSI it quotes when nothing drifted is never an exempt feature's."""
    from training.drift import DriftReport

    report = DriftReport(
        threshold=0.2,
        rows=10,
        score_psi=0.01,
        feature_psi={"tenure_days": 0.15, "country": 0.05},
        exempt=("tenure_days",),
        exempt_unknown=("tenure_day",),
    )
    rows = dict(render.drift_rows(report))
    assert rows["warning"] == "monitoring.drift_exempt names no feature of this model: tenure_day"
    assert rows["drift (PSI > 0.2)"] == "none (largest: country 0.050)"


@pytest.mark.parametrize(
    ("job", "command"),
    [("train", ["train", "--trials", "1"]), ("demo", ["demo", "--users", "10"])],
)
def test_sigterm_stops_a_job_as_ctrl_c_does(monkeypatch, job: str, command: list[str]) -> None:
    """A scheduler's SIGTERM reaches a running job as an interruption (training marks its MLflow
    run KILLED and unregisters a half-published version; the demo stops the service it started)
    instead of ending the process at once, and `lapse` exits as Ctrl-C does."""
    import signal
    import time

    from lapse import jobs
    from lapse.cli import ExitCode

    interrupted = []

    def running(*args, **kwargs):
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises before this ends
        except KeyboardInterrupt:
            interrupted.append(True)
            raise

    previous = signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(jobs, job, running)
    try:
        result = CliRunner().invoke(app, command)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert result.exit_code == ExitCode.INTERRUPTED
    assert interrupted == [True]


def test_ingest_compact_rewrites_months_and_says_so(
    clean_env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Daily files give a file a month each; past store.compact_files an ingest compacts and its
    summary says so; `--compact` alone compacts what is left; with the retry it is refused."""
    from features.ingest.store import read_manifest

    store = clean_env / "store"
    monkeypatch.setenv("LAPSE_STORE__COMPACT_FILES", "2")
    for day in range(3):
        src = clean_env / f"d{day}.csv"
        when = 1767574008 + day * 86400  # 2026-01-05 and the days after
        src.write_text(f"created_at,adid,os_name,activity_kind\n{when},d{day},ios,session\n")
        code, stdout, _ = invoke(capsys, "ingest", str(src), "--store", str(store))
        assert code == 0
    assert re.search(r"months compacted\W+1 \(2026-01\)", stdout)
    assert re.search(r"event files before / after\W+3 / 1", stdout)
    assert len(read_manifest(store).event_files()) == 1
    monkeypatch.setenv("LAPSE_STORE__COMPACT_FILES", "0")
    src = clean_env / "d9.csv"
    src.write_text("created_at,adid,os_name,activity_kind\n1767574008,d9,ios,session\n")
    code, stdout, _ = invoke(capsys, "ingest", str(src), "--store", str(store))
    assert code == 0 and "months compacted" not in stdout
    assert len(read_manifest(store).event_files()) == 2
    code, stdout, _ = invoke(capsys, "ingest", "--compact", "--store", str(store))
    assert code == 0 and re.search(r"event files before / after\W+2 / 1", stdout)
    code, stdout, _ = invoke(capsys, "ingest", "--compact", "--store", str(store))
    assert code == 0 and "none (no month holds several files)" in stdout
    code, _, stderr = invoke(capsys, "ingest", "--compact", "--reprocess-quarantine")
    assert code == 2 and "--compact, not both" in re.sub(r"[\s│]+", " ", stderr)
