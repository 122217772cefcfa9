"""The repository's promises to a newcomer: the README's two commands are what CI runs, CI runs
the demo, and the embedded defaults keep MLflow in mlflow.db and mlruns/ at the root, ignored by
git."""

from __future__ import annotations

import ast
import re
import subprocess
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _make_recipe(target: str) -> list[str]:
    """The command lines of a Makefile target."""
    lines = (ROOT / "Makefile").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{target}:"))
    recipe = []
    for line in lines[start + 1 :]:
        if not line.startswith("\t"):
            break
        recipe.append(line.strip())
    return recipe


def test_the_readme_commands_are_the_ones_ci_runs() -> None:
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"## Two commands.*?```sh\n(.*?)```", readme, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]
    assert commands == ["make demo", "make test"]
    ci = [
        line.strip()
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.startswith(("#", "set ", "cd "))
    ]
    assert ci == ["make test"]
    assert _make_recipe("demo") == ["$(RUN) lapse demo"]
    # the whole suite, slow tests included, on xdist workers that take whole files, heaviest first
    assert _make_recipe("test") == [
        "$(RUN) pytest -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=30"
    ]


def test_ci_runs_the_demo_end_to_end() -> None:
    """The demo test is collected by plain `pytest` (CI), not skipped, not deselected."""
    options = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]
    settings = options["ini_options"]
    assert settings["testpaths"] == ["tests"]
    assert "-m" not in settings["addopts"].split() and "not slow" not in settings["addopts"]
    source = (ROOT / "tests" / "lapse" / "test_cli.py").read_text()
    (test,) = [
        node
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.FunctionDef) and node.name == "test_demo_runs_the_whole_flow"
    ]
    marks = [ast.unparse(d) for d in test.decorator_list]
    assert marks == ["pytest.mark.slow"]  # slow, never skip/skipif/xfail
    assert "skip" not in source.split("def test_demo_runs_the_whole_flow")[0].split("# --- demo")[1]
    body = ast.unparse(test)
    assert "'demo'" in body and "service-answers.json" in body


def test_mlflow_lives_in_mlflow_db_and_mlruns_at_the_root_ignored_by_git() -> None:
    from lapse.settings import Settings

    settings = Settings.load(ROOT / "lapse.toml")
    assert settings.mlflow.tracking_uri == f"sqlite:///{ROOT / 'mlflow.db'}"
    assert settings.mlflow.artifact_location == str(ROOT / "mlruns")
    ignored = subprocess.run(
        ["git", "check-ignore", "--no-index", "mlruns/1/model.pkl", "mlflow.db", "data/x"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert ignored.stdout.split() == ["mlruns/1/model.pkl", "mlflow.db", "data/x"]


def test_every_repository_file_the_docs_name_exists() -> None:
    """A page naming a test or module that is not there sends a reader nowhere."""
    pages = [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "deploy").glob("*.md"),
             ROOT / "notebooks" / "README.md"]  # fmt: skip
    named = re.compile(
        r"\b((?:lapse|features|training|serving|base|tests|benchmarks|deploy|notebooks|docs)"
        r"/[\w/.-]+\.(?:py|md|yaml|toml|ipynb))\b"
    )
    missing = [
        f"{page.relative_to(ROOT)}: {path}"
        for page in pages
        for path in named.findall(page.read_text())
        if not (ROOT / path).exists()
    ]
    assert not missing


def test_the_files_scheduled_first_exist() -> None:
    """A renamed heavy test file would silently lose its early start (tests/conftest.py)."""
    from tests.conftest import HEAVY_FIRST, TRAINED_APP_FILES

    assert len(set(HEAVY_FIRST)) == len(HEAVY_FIRST)
    assert [name for name in HEAVY_FIRST if not (ROOT / name).is_file()] == []
    assert [name for name in TRAINED_APP_FILES if not (ROOT / name).is_file()] == []
