"""The HTTP service, started for real (`bentoml serve` on a free loopback port) and called over
HTTP: answers equal the in-process model, /score_events equals rescore on the same events, every
bad request is a 4xx naming its field with no traceback logged, the token, a wrong model URI,
and a champion swapped under load."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from features import load_events
from features import schema as s
from features.build import build_features
from features.ingest.callbacks import stored_callbacks
from lapse import jobs
from lapse import serve as serving
from lapse.settings import Settings
from serving.rescore import rescore
from serving.scores import write_scores
from serving.scoring import score
from training.registry import champion_uri, load_model

pytestmark = pytest.mark.slow

AS_OF = "2026-04-20"  # inside the generated data (2026-01-05 + 120 days)


@pytest.fixture(scope="module")
def trained(trained_app: Settings) -> Settings:
    """The session's small generated app, ingested and trained (tests/conftest.py)."""
    return trained_app


@contextlib.contextmanager
def running(settings: Settings, **env: str) -> Iterator[serving.Server]:
    import os

    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        server = serving.start_server(settings, "127.0.0.1", serving.free_port())
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def server(trained: Settings) -> Iterator[serving.Server]:
    with running(trained, LAPSE_SERVING__MAX_ROWS="50", LAPSE_SERVING__MAX_BODY_MB="1") as srv:
        yield srv


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def model(trained: Settings):
    return load_model(trained.mlflow.tracking_uri, champion_uri(trained.mlflow.registered_model))


def _feature_rows(settings: Settings, model) -> pd.DataFrame:
    events = load_events(settings.store.path, end=AS_OF)
    return build_features(events, AS_OF, model.feature_definition)


def _records(frame: pd.DataFrame) -> list[dict]:
    flat = frame.reset_index()
    return flat.astype(object).where(flat.notna(), None).to_dict("records")


def test_score_answers_equal_the_in_process_model(server, http, trained, model) -> None:
    features = _feature_rows(trained, model).head(50)
    rows = [{**row, "not_a_feature": 1} for row in _records(features)]
    answer = http.post(f"{server.url}/score", json={"rows": rows})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    expected = score(model, features)
    got = pd.DataFrame(body["scores"])
    np.testing.assert_allclose(got[s.CHURN_PROBABILITY], expected[s.CHURN_PROBABILITY], atol=1e-9)
    assert got[s.BUCKET].tolist() == expected[s.BUCKET].tolist()
    assert got[s.REASONS].tolist() == [list(r) for r in expected[s.REASONS]]
    assert got[s.USER_ID].tolist() == expected[s.USER_ID].tolist()
    unused = set(features.columns) - set(model.features_)  # dropped at training as constant
    assert body["ignored_columns"] == sorted({"not_a_feature", *unused})
    assert set(got["model_version"]) == {"1"}


@pytest.mark.parametrize("n", [5, 40])  # scored on the event loop, and in the thread pool
def test_reasons_false_gives_the_same_scores_without_reasons(server, http, trained, model, n):
    rows = _records(_feature_rows(trained, model).head(n))
    full = http.post(f"{server.url}/score", json={"rows": rows})
    bare = http.post(f"{server.url}/score", json={"rows": rows, "reasons": False})
    assert full.status_code == bare.status_code == 200, bare.text
    full_scores, bare_scores = full.json()["scores"], bare.json()["scores"]
    for key in (s.USER_ID, s.CHURN_PROBABILITY, s.BUCKET, "model_version"):
        assert [r[key] for r in bare_scores] == [r[key] for r in full_scores]
    assert all(r[s.REASONS] is None for r in bare_scores)
    assert all(isinstance(r[s.REASONS], list) for r in full_scores)


def test_a_start_failure_is_the_loaders_own_error() -> None:
    from training.pipeline import ModelVersionError
    from training.registry import ModelNotFoundError

    log = "Traceback (most recent call last):\n  File ...\n"
    found = serving._start_failure(log + "training.registry.ModelNotFoundError: m: no model", "m")
    assert isinstance(found, ModelNotFoundError) and str(found) == "m: no model"
    old = serving._start_failure(log + "training.pipeline.ModelVersionError: m: too old", "m")
    assert isinstance(old, ModelVersionError) and str(old) == "m: too old"
    other = serving._start_failure(log + "OSError: [Errno 98] in use", "m")
    assert isinstance(other, serving.RequestError)
    assert str(other) == "the service for m could not start: OSError: [Errno 98] in use"


def test_score_events_equals_rescore_on_the_same_events(
    server, http, trained, model, tmp_path: Path
) -> None:
    active = _feature_rows(trained, model).reset_index()[s.USER_ID].unique()[:6].tolist()
    objects = stored_callbacks(trained.store.path, active)
    objects.insert(3, {**objects[0], "created_at": "yesterday"})  # refused, the rest scored
    answer = http.post(f"{server.url}/score_events", json={"as_of": AS_OF, "events": objects})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert [r["index"] for r in body["rejected"]] == [3]
    assert body["rejected"][0]["reason"] == "bad_timestamp"
    # the same callbacks as a callback log, ingested and rescored
    log = tmp_path / "callbacks.log"
    import json

    log.write_text("\n".join(json.dumps(o) for o in objects) + "\n")
    store = tmp_path / "store"
    jobs.ingest(trained.updated(store={"path": store}), [log])
    expected = rescore(store, AS_OF, model, max_stale_days=365).scores
    got = pd.DataFrame(body["scores"]).sort_values(s.USER_ID).reset_index(drop=True)
    expected = expected.sort_values(s.USER_ID).reset_index(drop=True)
    assert got[s.USER_ID].tolist() == expected[s.USER_ID].tolist() and len(got) >= 1
    np.testing.assert_allclose(got[s.CHURN_PROBABILITY], expected[s.CHURN_PROBABILITY], atol=1e-9)
    assert got[s.BUCKET].tolist() == expected[s.BUCKET].tolist()
    assert got[s.REASONS].tolist() == [list(r) for r in expected[s.REASONS]]


def test_lookup_answers_from_the_newest_rescore(server, http, trained) -> None:
    scores = jobs.rescore(trained, pd.Timestamp(AS_OF).date(), dry_run=True, out=None)
    path = jobs.default_scores_path(trained, pd.Timestamp(AS_OF).date())
    write_scores(
        scores.result.scores,
        path,
        scores.sync.config.policy,
        {"as_of": AS_OF, "model": "m", "model_name": "lapse-churn", "model_version": "1"},
    )
    user = scores.result.scores[s.USER_ID].iloc[0]
    import time

    deadline = time.monotonic() + 15  # the service looks for a newer file every 5 s
    while True:
        body = http.post(f"{server.url}/lookup", json={"user_ids": [user, "nobody"]}).json()
        if body["results"][0]["scored"] or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    first, second = body["results"]
    assert first["scored"] and first[s.AS_OF] == AS_OF and first["model_version"] == "1"
    expected = scores.result.scores.set_index(s.USER_ID).loc[user]
    assert first[s.CHURN_PROBABILITY] == pytest.approx(float(expected[s.CHURN_PROBABILITY]))
    assert second == {s.USER_ID: "nobody", "scored": False}
    # regression (hostile review): the day's file rewritten in place (a rescore retried) was
    # never read again
    later = scores.result.scores.assign(**{s.CHURN_PROBABILITY: 0.123456})
    time.sleep(0.01)
    write_scores(later, path, scores.sync.config.policy, {"as_of": "2026-04-21", "model": "m"})
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        again = http.post(f"{server.url}/lookup", json={"user_ids": [user]}).json()["results"][0]
        if again[s.AS_OF] == "2026-04-21":
            break
        time.sleep(0.5)
    assert again[s.AS_OF] == "2026-04-21" and again[s.CHURN_PROBABILITY] == 0.123456


def test_metadata_names_the_model_and_its_definition(server, http, model) -> None:
    body = http.get(f"{server.url}/metadata").json()
    assert body["model"] == "lapse-churn" and body["model_version"] == "1"
    assert [f["name"] for f in body["features"]] == list(model.features_)
    assert all(f["description"] for f in body["features"])
    assert "holdout_roc_auc" in body["metrics"] and body["run_id"]
    assert body["feature_definition"]["windows"] == list(model.feature_definition.windows)


_HUGE = b"1" + b"0" * 400

BAD_REQUESTS = [
    ("/score", b"{not json", "body: malformed JSON"),
    ("/score", b'{"rowz": []}', "rows: Field required"),
    ("/score", b'{"rows": [{"user_id": "a", "sessions_28d": [1]}]}', "rows[0].sessions_28d"),
    ("/score", b'{"rows": [{"user_id": "a"}]}', "rows[0]: missing feature(s)"),
    ("/score", b'{"rows": [' + b",".join([b'{"a": 1}'] * 51) + b"]}", "at most 50"),
    ("/score_events", b'{"as_of": "soon", "events": [{}]}', "as_of: expected a date"),
    ("/score_events", b'{"as_of": "2026-01-01"}', "events: Field required"),
    ("/lookup", b'{"user_ids": "u1"}', "user_ids: Input should be a valid array"),
    ("/lookup", b'{"user_ids": ["a", 7]}', "user_ids[1]: expected an id as text, got 7 (ids are"),
    ("/score", b'[{"user_id": "a"}]', "body: Input should be an object"),
    ("/score", b"", "body: malformed JSON"),
    ("/score", b'{"rows": [{"a": 1}], "reasons": "maybe"}', "reasons: Input should be a valid"),
    # regressions (hostile review): each of these was a 500 with a logged traceback
    ("/score_events", b'{"as_of": "9999-12-31", "events": [{}]}', "between 1678 and 2261"),
    ("/score_events", b'{"as_of": "0001-01-01", "events": [{}]}', "between 1678 and 2261"),
    ("/score", b'{"rows": [' + b"1" * 5000 + b"]}", "body: malformed JSON (number out of range"),
    ("/lookup", b'{"user_ids": [' + b'"x",' * 600_000 + b'"y"]}', "body over 1 MB"),
    # regressions (hostile review): a client's long value was echoed whole
    ("/score_events", b'{"as_of": "' + b"x" * 5000 + b'", "events": [{}]}', "… (5,000 characters)"),
    ("/lookup", b'{"user_ids": [1.5e300]}', "user_ids[0]: expected an id as text, got 1.5e+300"),
]


JSON = {"content-type": "application/json"}


@pytest.mark.parametrize(("path", "body", "message"), BAD_REQUESTS)
def test_a_bad_request_is_a_4xx_naming_its_field(server, http, path, body, message) -> None:
    answer = http.post(
        f"{server.url}{path}", content=body, headers={"content-type": "application/json"}
    )
    assert 400 <= answer.status_code < 500, answer.text
    assert message in answer.json()["error"]


def test_row_values_of_the_wrong_kind_are_named_or_read_as_text(
    server, http, trained, model
) -> None:
    """Regressions (hostile review): a numeric user_id was a 500 (the answer's ids are text);
    a huge number and a boolean category were taken in silently or crashed."""
    row = _records(_feature_rows(trained, model).head(1))[0]
    answer = http.post(f"{server.url}/score", json={"rows": [{**row, "user_id": 5}]})
    assert answer.status_code == 200 and answer.json()["scores"][0]["user_id"] == "5"
    category = next(f for f in model.features_ if f in ("status", "country", "network"))
    answer = http.post(f"{server.url}/score", json={"rows": [{**row, category: True}]})
    assert answer.status_code == 400 and f"field {category!r}: expected text" in answer.text
    feature = next(f for f in model.features_ if f not in (category,) and "days" in f)
    body = (
        b'{"rows": ['
        + json.dumps({**row, feature: 0})
        .encode()
        .replace(f'"{feature}": 0'.encode(), f'"{feature}": '.encode() + _HUGE)
        + b"]}"
    )
    answer = http.post(f"{server.url}/score", content=body, headers=JSON)
    assert answer.status_code == 400 and f"field {feature!r}" in answer.text


def test_a_chunked_body_over_the_limit_is_refused(server, http) -> None:
    """Regression (hostile review): without Content-Length the 1 MB limit was not applied."""

    def chunks():
        yield b'{"user_ids": ["'
        for _ in range(40):
            yield b"x" * 65_536
        yield b'"]}'

    answer = http.post(f"{server.url}/lookup", content=chunks(), headers=JSON)
    assert answer.status_code == 413 and "serving.max_body_mb" in answer.json()["error"]
    small = http.post(f"{server.url}/lookup", content=iter([b'{"user_ids": ["a"]}']), headers=JSON)
    assert small.status_code == 200


def test_clients_mistakes_leave_no_traceback_in_the_log(server, http) -> None:
    for path, body, _ in BAD_REQUESTS[:-1]:
        http.post(f"{server.url}{path}", content=body)
    assert "Traceback" not in server.log.read_text()


def test_an_unknown_event_is_reported_back_and_the_others_scored(server, http) -> None:
    events = [{"activity_kind": "teleport", "created_at": 1767574008, "adid": "a"}]
    body = http.post(
        f"{server.url}/score_events", json={"as_of": "2026-02-01", "events": events}
    ).json()
    assert body["rejected"][0]["index"] == 0 and body["scores"] == []


@pytest.mark.parametrize("path", ["/score_events", "/lookup"])
@pytest.mark.parametrize("content_type", [None, "application/x-www-form-urlencoded"])
def test_a_json_body_is_read_whatever_its_content_type(server, http, path, content_type) -> None:
    """Regression (hostile review): `curl -d` sends JSON as a form; /score and /lookup took it,
    /score_events answered "body: Input should be a valid dictionary" (a 422 for a good body)."""
    body = {"as_of": "2026-02-01", "events": [{"adid": "a"}]}
    body = body if path == "/score_events" else {"user_ids": ["nobody"]}
    raw = json.dumps(body).encode()
    expected = http.post(f"{server.url}{path}", content=raw, headers=JSON)
    headers = {"content-type": content_type} if content_type else {}
    answer = http.post(f"{server.url}{path}", content=raw, headers=headers)
    assert expected.status_code == answer.status_code == 200, answer.text
    assert answer.json() == expected.json()


def test_a_token_guards_every_endpoint_but_the_probes(trained, http) -> None:
    with running(trained, LAPSE_SERVING__TOKEN="t0k3n-for-tests") as srv:
        assert http.get(f"{srv.url}/readyz").status_code == 200
        assert http.get(f"{srv.url}/metadata").status_code == 401
        wrong = {"authorization": "Bearer nope"}
        assert http.get(f"{srv.url}/metadata", headers=wrong).status_code == 401
        right = {"authorization": "Bearer t0k3n-for-tests"}
        assert http.get(f"{srv.url}/metadata", headers=right).status_code == 200
        lower = {"authorization": "bearer t0k3n-for-tests"}  # the scheme is case-insensitive
        assert http.get(f"{srv.url}/metadata", headers=lower).status_code == 200
        assert http.get(f"{srv.url}/metrics").status_code == 401
        # regression (hostile review): of two Authorization headers the last one won
        twice = httpx.Headers([("authorization", "Bearer nope"), *right.items()])
        answer = http.get(f"{srv.url}/metadata", headers=twice)
        assert answer.status_code == 400 and answer.json() == {
            "error": "Authorization: sent more than once; send one"
        }
        twice = httpx.Headers([*right.items(), *right.items()])
        assert http.get(f"{srv.url}/metadata", headers=twice).status_code == 400
        assert http.get(f"{srv.url}/docs.json").status_code == 200
        assert "t0k3n-for-tests" not in srv.log.read_text()


def test_a_busy_port_is_one_line_not_someone_elses_readyz(server, trained) -> None:
    """Regression (hostile review): another server's /readyz was taken as ours."""
    port = int(server.url.rsplit(":", 1)[1])
    with pytest.raises(serving.RequestError, match=rf"^--port {port}: cannot listen"):
        serving.start_server(trained, "127.0.0.1", port)


def test_a_killed_lapse_serve_takes_its_server_with_it(trained, http) -> None:
    """Regression (hostile review): SIGKILL of `lapse serve` left BentoML serving, orphaned."""
    import os
    import signal
    import subprocess
    import sys
    import time

    port = serving.free_port()
    command = [sys.executable, "-m", "lapse.cli", "--config", str(trained.config_file), "serve",
               "--port", str(port)]  # fmt: skip
    cli = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if http.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            time.sleep(0.5)
        os.kill(cli.pid, signal.SIGKILL)
        cli.wait()
        deadline = time.monotonic() + 30
        alive = True
        while alive and time.monotonic() < deadline:
            try:
                http.get(f"{url}/livez", timeout=1)
                time.sleep(0.5)
            except httpx.HTTPError:
                alive = False
        assert not alive, "the server outlived the lapse serve that started it"
    finally:
        if cli.poll() is None:
            cli.kill()


def test_an_interrupted_start_leaves_no_server_running(
    trained, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while waiting for /readyz (the demo's, `lapse serve`'s) stops the started server."""
    import subprocess

    started: list[subprocess.Popen] = []
    real = subprocess.Popen

    def popen(*args, **kwargs):
        started.append(real(*args, **kwargs))
        return started[-1]

    def interrupt(elapsed: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(serving.subprocess, "Popen", popen)
    with pytest.raises(KeyboardInterrupt):
        serving.start_server(trained, "127.0.0.1", serving.free_port(), waiting=interrupt)
    (process,) = started
    assert process.poll() is not None  # stopped, not left behind


@pytest.mark.parametrize(
    ("uri", "why"),
    [
        ("models:/nope@champion", "Registered Model with name=nope not found"),
        ("models:/lapse-churn@nope", "alias nope not found"),
        ("models:/lapse-churn/99", "version=99"),
    ],
)
def test_a_model_uri_that_does_not_exist_fails_at_start_in_one_line(
    trained, monkeypatch: pytest.MonkeyPatch, uri: str, why: str
) -> None:
    """Refused by this process before BentoML starts (it used to wait ~35 s for the worker to
    fail): no server is started, nothing waits for /readyz."""
    from training.registry import ModelNotFoundError

    started: list[subprocess.Popen] = []
    real = subprocess.Popen

    def popen(*args, **kwargs):
        started.append(real(*args, **kwargs))
        return started[-1]

    waited: list[float] = []
    monkeypatch.setattr(serving.subprocess, "Popen", popen)
    with pytest.raises(ModelNotFoundError, match=rf"^{re.escape(uri)}: no model to score") as e:
        serving.start_server(trained, uri=uri, port=serving.free_port(), waiting=waited.append)
    assert why in str(e.value) and "\n" not in str(e.value)
    assert not waited and not started


def test_refresh_swaps_to_a_new_champion_without_a_failed_request(trained, http, model) -> None:
    import mlflow
    from mlflow.tracking import MlflowClient

    rows = _records(_feature_rows(trained, model).head(3))
    with running(trained, LAPSE_SERVING__REFRESH_S="0.5") as srv:
        failures, versions, stop = [], set(), threading.Event()

        def load() -> None:
            while not stop.is_set():
                answer = http.post(f"{srv.url}/score", json={"rows": rows})
                if answer.status_code != 200:
                    failures.append(answer.text)
                else:
                    versions.update(r["model_version"] for r in answer.json()["scores"])

        workers = [threading.Thread(target=load) for _ in range(2)]
        for w in workers:
            w.start()
        mlflow.set_tracking_uri(trained.mlflow.tracking_uri)
        client = MlflowClient()
        name = trained.mlflow.registered_model
        current = client.get_model_version_by_alias(name, "champion")
        new = client.create_model_version(name, current.source, run_id=current.run_id)
        client.set_registered_model_alias(name, "champion", new.version)
        import time

        deadline = time.monotonic() + 30
        while str(new.version) not in versions and time.monotonic() < deadline:
            time.sleep(0.2)
        stop.set()
        for w in workers:
            w.join()
        client.set_registered_model_alias(name, "champion", current.version)
        assert not failures and {"1", str(new.version)} <= versions
        assert http.get(f"{srv.url}/metadata").json()["model_version"] == str(new.version)


def test_a_built_bento_carries_the_model_and_answers(trained, http, tmp_path: Path) -> None:
    """`lapse serve --build` into a temporary BENTOML_HOME; the Bento serves from another
    folder, with no MLflow at hand, the model it carries."""
    import os
    import subprocess
    import sys
    import time

    env = {**os.environ, "BENTOML_HOME": str(tmp_path / "bentoml")}
    config = str(trained.config_file)
    done = subprocess.run(
        [sys.executable, "-m", "lapse.cli", "--config", config, "serve", "--build"],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    tag = re.search(r"Built Bento (\S+) carrying lapse-churn version \d+", done.stdout)[1]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    port = serving.free_port()
    command = [sys.executable, "-m", "bentoml", "serve", tag, "--port", str(port)]
    with (tmp_path / "bento.log").open("wb") as log:
        process = subprocess.Popen(
            command, cwd=elsewhere, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if http.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        body = http.get(f"http://127.0.0.1:{port}/metadata").json()
        assert body["model"] == "lapse-churn" and body["model_version"] == "1"
    finally:
        serving.stop_server(process)


def test_the_bentos_requirements_are_the_lock_files() -> None:
    """bentofile.yaml installs requirements-serve.txt: it must be uv.lock's runtime set."""
    import shutil
    import subprocess

    root = Path(__file__).resolve().parents[2]
    # uv is where the Makefile put it: beside the interpreter that made the venv, or on PATH
    uv = [shutil.which("uv")] if shutil.which("uv") else [shutil.which("python3"), "-m", "uv"]
    exported = subprocess.run(
        [*uv, "export", "--frozen", "--no-dev", "--no-emit-project", "--no-hashes",
         "--no-annotate"],
        cwd=root, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert (root / "requirements-serve.txt").read_text() == exported, (
        "requirements-serve.txt is stale: regenerate it with the command in its first lines"
    )


def test_schemathesis_finds_no_server_error(server, tmp_path: Path) -> None:
    """Property-based requests generated from the OpenAPI page BentoML serves (bounded in
    examples and time): no answer is a 5xx."""
    import subprocess
    import sys

    cli = Path(sys.executable).with_name("schemathesis")
    done = subprocess.run(
        [str(cli), "run", f"{server.url}/docs.json", "--checks", "not_a_server_error",
         "--max-examples", "25", "--request-timeout", "20", "--seed", "7",
         "--phases", "examples,coverage,fuzzing", "--max-time", "60"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
        env={**__import__("os").environ, "SCHEMATHESIS_HOOKS": ""},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[done.stdout.find("FAILURES") :][:4000]
    assert "Traceback" not in server.log.read_text()


def test_stopping_a_server_ends_its_process_and_removes_its_log(tmp_path: Path) -> None:
    log = tmp_path / "lapse-serve-x.log"
    log.write_text("Starting production HTTP BentoServer\n")
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    server = serving.Server(process, "http://127.0.0.1:1", None, log)  # type: ignore[arg-type]
    server.stop()  # the notebook and the tests used to stop the process only: a log per run
    assert process.returncode is not None and not log.exists()


def _timeout_run(app, timeout: float) -> tuple[list[dict], list[asyncio.TimerHandle]]:
    """Run one GET through the service's timeout middleware around ``app``: what it sent, and
    the timers it scheduled."""
    from lapse.service import CancellingTimeout

    sent: list[dict] = []
    timers: list[asyncio.TimerHandle] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        schedule = loop.call_later

        def recording(*args, **kwargs):
            timers.append(schedule(*args, **kwargs))
            return timers[-1]

        loop.call_later = recording

        async def receive():
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "method": "GET", "path": "/x", "headers": []}
        await CancellingTimeout(app, timeout=timeout)(scope, receive, send)

    asyncio.run(main())
    return sent, timers


def test_the_timeout_timer_is_cancelled_once_the_answer_starts() -> None:
    """BentoML's timeout left each request's timer (holding its future and context) alive for
    the whole timeout, ~1M live objects for every full GC to walk at 400 requests/s: the
    service's own cancels it, and still answers 504 when no answer starts in time."""
    from bentoml._internal.server.http import traffic

    import lapse.service as service

    assert traffic.TimeoutMiddleware is service.CancellingTimeout  # what BentoML will build

    async def quick(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    sent, timers = _timeout_run(quick, timeout=120)
    assert [m.get("status") for m in sent] == [200, None] and sent[1]["body"] == b"ok"
    assert len(timers) == 1 and timers[0].cancelled()

    async def slow(scope, receive, send):
        await asyncio.sleep(5)

    sent, timers = _timeout_run(slow, timeout=0.05)
    assert sent[0]["status"] == 504
    assert json.loads(sent[1]["body"])["error"].startswith("Not able to process the request")


def test_the_service_freezes_its_loaded_heap_out_of_full_collections(trained, monkeypatch):
    """The loaded libraries and model are permanent: the service moves them out of the GC's
    generations once loaded, so that a full collection does not walk them (a pass over them
    stalled the worker for a quarter of a second)."""
    import gc

    import lapse.service as service
    from lapse.settings import CONFIG_ENV

    monkeypatch.setenv(CONFIG_ENV, str(trained.config_file))
    gc.unfreeze()
    try:
        instance = service.LapseChurn.inner()  # what the worker runs once it has started
        assert instance.served.info.version == "1"
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_telemetry_on_serves_bentomls_metrics_and_the_same_answers(
    server, trained, http, model
) -> None:
    """serving.telemetry = false (the default): no /metrics (BentoML's Prometheus middleware
    is not built); on, /metrics is served and the endpoints answer as before."""
    assert http.get(f"{server.url}/metrics").status_code == 404
    rows = _records(_feature_rows(trained, model).head(2))
    expected = http.post(f"{server.url}/score", json={"rows": rows}).json()
    with running(trained, LAPSE_SERVING__TELEMETRY="true") as srv:
        assert http.get(f"{srv.url}/metrics").status_code == 200
        answer = http.post(f"{srv.url}/score", json={"rows": rows})
        assert answer.status_code == 200 and answer.json() == expected


def test_a_long_value_is_cut_in_the_error_that_names_it(server, http, trained, model) -> None:
    """Regression (hostile review): an error repeated a client's value whole (here 100,000
    characters, back in the answer)."""
    row = _records(_feature_rows(trained, model).head(1))[0]
    feature = next(f for f in model.features_ if "days" in f)
    answer = http.post(f"{server.url}/score", json={"rows": [{**row, feature: "9" * 99_999 + "x"}]})
    assert answer.status_code == 400 and len(answer.text) < 400
    error = answer.json()["error"]
    assert error == (
        f"row 0, field {feature!r}: expected a number or null, got '{'9' * 79}… "
        "(100,000 characters)"
    )


# --- warm-up -------------------------------------------------------------------------------------


def test_the_service_is_ready_only_once_warmed_up(server, http, trained) -> None:
    """Every path was taken before /readyz answered: the line saying so is in the log when the
    start returns (it waits for /readyz), and no warm-up failed."""
    log = server.log.read_text()
    assert re.search(r"warmed up /score, /score_events(, /lookup)? in \d+ ms", log), log[-2000:]
    assert "warm-up failed" not in log


def test_readiness_waits_for_the_warm_up_in_the_worker(trained, monkeypatch) -> None:
    """In the worker's own object: not ready while it warms up, ready after."""
    import lapse.service as service
    from lapse.settings import CONFIG_ENV

    monkeypatch.setenv(CONFIG_ENV, str(trained.config_file))
    seen = []
    warm = service.LapseChurn.inner._warm_up

    def spy(self, served) -> None:
        seen.append(("before", self.__is_ready__()))
        warm(self, served)
        seen.append(("after", self.__is_ready__()))

    monkeypatch.setattr(service.LapseChurn.inner, "_warm_up", spy)
    try:
        instance = service.LapseChurn.inner()
    finally:
        import gc

        gc.unfreeze()
    assert seen == [("before", False), ("after", False)] and instance.__is_ready__()


def test_the_warm_up_leaves_no_trace(server, http, trained) -> None:
    """The synthetic subscriber is nowhere: not in /lookup, not in the store, and /metadata is
    the model's and the scores' own."""
    answer = http.post(f"{server.url}/lookup", json={"user_ids": [serving.WARM_UP_ID]}).json()
    assert answer == {"results": [{s.USER_ID: serving.WARM_UP_ID, "scored": False}]}
    events = load_events(trained.store.path)
    assert serving.WARM_UP_ID not in set(events[s.USER_ID])
    assert not any(serving.WARM_UP_ID in p.name for p in trained.store.path.rglob("*"))
    served = serving.load_served_model(trained)
    folder = serving.scores_folder(trained)
    expected = serving.metadata(served, serving.ScoresCache(folder).latest)
    assert http.get(f"{server.url}/metadata").json() == json.loads(json.dumps(expected))


def test_a_failed_warm_up_is_one_warning_and_the_service_answers(trained, http) -> None:
    """serving.max_events = 1 refuses the warm-up's two callbacks: the service starts, says what
    was not warmed in one line, and /score_events answers (its first request pays)."""
    with running(trained, LAPSE_SERVING__MAX_EVENTS="1") as srv:
        log = srv.log.read_text()
        warnings = [line for line in log.splitlines() if "warm-up failed" in line]
        assert len(warnings) == 1 and "warm-up failed for /score_events" in warnings[0]
        assert "at most 1 (serving.max_events)" in warnings[0]
        assert "Traceback" not in log
        event = {
            "activity_kind": "session",
            "created_at": 1767574008,
            "adid": "a",
            "os_name": "ios",
        }
        answer = http.post(f"{srv.url}/score_events", json={"as_of": AS_OF, "events": [event]})
        assert answer.status_code == 200, answer.text


# --- damaged scores files ------------------------------------------------------------------------


def _scores_files(trained: Settings, store: Path) -> pd.DataFrame:
    """A readable scores file of 2026-04-19 and a damaged one of 2026-04-20 under ``store``."""
    scored = jobs.rescore(trained, pd.Timestamp(AS_OF).date(), dry_run=True, out=None)
    older = store / "scores" / "scores-2026-04-19.parquet"
    write_scores(scored.result.scores, older, None, {"as_of": "2026-04-19", "model": "m"})
    (store / "scores" / "scores-2026-04-20.parquet").write_bytes(b"PAR1 cut short")
    return scored.result.scores


def test_a_damaged_newest_scores_file_does_not_stop_the_service(
    trained, http, tmp_path: Path
) -> None:
    """Regression (hostile review): a damaged newest scores file failed the start; now /lookup
    answers from the newest readable one, and one warning names the damaged file."""
    store = tmp_path / "store"
    scores = _scores_files(trained, store)
    user = scores[s.USER_ID].iloc[0]
    with running(trained.updated(store={"path": store})) as srv:
        body = http.post(f"{srv.url}/lookup", json={"user_ids": [user]}).json()
        assert body["results"][0]["scored"] and body["results"][0][s.AS_OF] == "2026-04-19"
        source = http.get(f"{srv.url}/metadata").json()["lookup_scores"]
        assert source["file"] == "scores-2026-04-19.parquet" and source["as_of"] == "2026-04-19"
        assert [d["file"] for d in source["damaged"]] == ["scores-2026-04-20.parquet"]
        damaged = [line for line in srv.log.read_text().splitlines() if "damaged scores" in line]
        assert len(damaged) == 1 and "scores-2026-04-20.parquet" in damaged[0]
        assert "answers from scores-2026-04-19.parquet (as_of 2026-04-19)" in damaged[0]
