"""deploy/: the crontab and Kubernetes manifests an operator applies. Each manifest validates
offline against the Kubernetes JSON schemas (strict: an unknown field fails), names only real
settings and commands, and keeps the scheduling promises (daily rescore that never overlaps,
weekly training, probes on /readyz and /livez, the Braze key from a Secret)."""

from __future__ import annotations

import copy
import re
import shlex
from pathlib import Path

import kubernetes_validate
import pytest
import typer
import yaml

from lapse.cli import app
from lapse.settings import API_KEY_ENV, ENV_PREFIX, Settings

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
KUBERNETES = "1.37"


def _resources() -> list[dict]:
    found = []
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        found += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return found


def _named(kind: str, name: str) -> dict:
    return next(r for r in _resources() if (r["kind"], r["metadata"]["name"]) == (kind, name))


def _validate(resource: dict) -> None:
    kubernetes_validate.validate(resource, KUBERNETES, strict=True)


def _pod(resource: dict) -> dict:
    if resource["kind"] == "CronJob":
        return resource["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return resource["spec"]["template"]["spec"]


def test_every_manifest_validates_against_the_kubernetes_schemas() -> None:
    resources = _resources()
    kinds = sorted(r["kind"] for r in resources)
    assert kinds == [
        "ConfigMap", "CronJob", "CronJob", "Deployment", "PersistentVolumeClaim", "Secret",
        "Service",
    ]  # fmt: skip
    for resource in resources:
        _validate(resource)


@pytest.mark.parametrize(
    ("where", "value", "error"),
    [
        (("spec", "concurrencyPolicy"), ["Forbid"], "is not of type 'string'"),
        (("spec", "jobTemplate", "spec", "backoffLimit"), "three", "is not of type"),
        (("spec", "schedul"), "15 6 * * *", "Additional properties"),  # a typo: strict
    ],
)
def test_a_broken_manifest_fails_validation(where: tuple[str, ...], value, error: str) -> None:
    broken = copy.deepcopy(_named("CronJob", "lapse-rescore"))
    node = broken
    for key in where[:-1]:
        node = node[key]
    node[where[-1]] = value
    with pytest.raises(kubernetes_validate.ValidationError, match=error):
        _validate(broken)


def test_a_probe_without_a_port_fails_validation() -> None:
    broken = copy.deepcopy(_named("Deployment", "lapse-serve"))
    del _pod(broken)["containers"][0]["readinessProbe"]["httpGet"]["port"]
    with pytest.raises(kubernetes_validate.ValidationError, match="'port' is a required"):
        _validate(broken)


def test_rescore_runs_daily_never_twice_at_once_with_the_braze_key_from_a_secret() -> None:
    job = _named("CronJob", "lapse-rescore")
    minute, hour, *rest = job["spec"]["schedule"].split()
    assert rest == ["*", "*", "*"] and minute.isdigit() and hour.isdigit()
    assert job["spec"]["concurrencyPolicy"] == "Forbid"
    (container,) = _pod(job)["containers"]
    assert container["args"] == ["lapse", "rescore"]
    secret = _named("Secret", "lapse-secrets")
    assert API_KEY_ENV in secret["stringData"]
    assert {"secretRef": {"name": "lapse-secrets"}} in container["envFrom"]
    assert {"configMapRef": {"name": "lapse-settings"}} in container["envFrom"]
    (rule,) = [r for r in job["spec"]["jobTemplate"]["spec"]["podFailurePolicy"]["rules"]
               if r["action"] == "FailJob"]  # fmt: skip
    from lapse.cli import ExitCode

    assert rule["onExitCodes"]["values"] == [ExitCode.USAGE]


def test_train_runs_weekly_when_due_and_serve_has_both_probes() -> None:
    job = _named("CronJob", "lapse-train")
    assert job["spec"]["schedule"].split()[2:] == ["*", "*", "0"]
    assert job["spec"]["concurrencyPolicy"] == "Forbid"
    assert _pod(job)["containers"][0]["args"] == ["lapse", "train", "--if-due"]
    serve = _named("Deployment", "lapse-serve")
    (container,) = _pod(serve)["containers"]
    assert container["args"] == ["lapse", "serve"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    service = _named("Service", "lapse-serve")
    assert service["spec"]["selector"] == serve["spec"]["selector"]["matchLabels"]
    claim = _named("PersistentVolumeClaim", "lapse-store")["metadata"]["name"]
    for resource in (serve, job, _named("CronJob", "lapse-rescore")):
        volumes = _pod(resource)["volumes"]
        assert {"name": "store", "persistentVolumeClaim": {"claimName": claim}} in volumes


def _setting_exists(name: str) -> bool:
    section, _, key = name.removeprefix(ENV_PREFIX).lower().partition("__")
    field = Settings.model_fields.get(section)
    return field is not None and key in field.annotation.model_fields


def test_every_variable_the_manifests_and_crontab_set_is_a_real_setting() -> None:
    config = _named("ConfigMap", "lapse-settings")["data"]
    secret = _named("Secret", "lapse-secrets")["stringData"]
    names = [*config, *secret]
    assert names and all(n == API_KEY_ENV or _setting_exists(n) for n in names), names
    assert _setting_exists("LAPSE_SERVING__TOKEN") and not _setting_exists("LAPSE_SERVING__TOKN")
    env = {name: str(value) for name, value in config.items()}
    Settings.model_validate(  # the values type-check as the settings they name
        {
            section: {k.lower(): v for (sec, k), v in _split(env).items() if sec == section}
            for section in {sec for sec, _ in _split(env)}
        }
    )


def _split(env: dict[str, str]) -> dict[tuple[str, str], str]:
    out = {}
    for name, value in env.items():
        section, _, key = name.removeprefix(ENV_PREFIX).lower().partition("__")
        out[(section, key)] = value
    return out


def test_the_crontab_runs_real_commands_on_valid_schedules() -> None:
    commands = set(typer.main.get_command(app).commands)
    jobs = {}
    for line in (DEPLOY / "crontab").read_text().splitlines():
        if not line.strip() or line.startswith("#") or re.match(r"^\w+=", line):
            continue
        fields = line.split(None, 5)
        for value, (low, high) in zip(
            fields[:5], [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)], strict=True
        ):
            assert value == "*" or low <= int(value) <= high, line
        words = shlex.split(fields[5])
        lapse = next(i for i, w in enumerate(words) if w.endswith("/lapse"))
        assert words[lapse + 1] in commands
        assert "flock" in words  # a run still going makes the next one skip
        args = words[lapse + 1 : words.index(">>")]  # up to the log redirection
        jobs[words[lapse + 1]] = (fields[:5], args)
    assert jobs["rescore"][0][2:] == ["*", "*", "*"]  # daily
    assert jobs["train"][0][4] != "*" and jobs["train"][1] == ["train", "--if-due"]  # weekly
