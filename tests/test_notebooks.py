"""The notebooks: each runs top to bottom on a kernel of this interpreter (executed copies are
written to a temporary folder, never over the committed ones), a failing cell fails the test
with its source, and the committed notebooks match their paired text files and carry their
outputs."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from notebooks.execute import HERE, anchor_store, execute, kernel_home, sources

NOTEBOOKS = sources()


def test_there_are_three_notebooks_each_paired_with_its_text() -> None:
    assert [p.stem for p in NOTEBOOKS] == [
        "01-explore",
        "02-train-and-explain",
        "03-score-and-sync",
    ]
    assert all(p.with_suffix(".ipynb").is_file() for p in NOTEBOOKS)


@pytest.mark.parametrize("source", NOTEBOOKS, ids=lambda p: p.stem)
def test_the_committed_notebook_is_its_text_file_with_outputs(source: Path) -> None:
    """Edit the .py, then `make notebooks`; after editing the .ipynb in Jupyter without
    jupytext, `jupytext --sync notebooks/*.ipynb` brings the .py up to date."""
    import jupytext
    import nbformat

    text = jupytext.read(source)
    committed = nbformat.read(source.with_suffix(".ipynb"), as_version=4)
    cells = [(c.cell_type, c.source) for c in committed.cells]
    assert cells == [(c.cell_type, c.source) for c in text.cells], (
        f"{source.name} and its .ipynb differ: run `make notebooks`"
    )
    code = [c for c in committed.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code), f"{source.stem}: not executed"
    outputs = [o for c in code for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), "no plot in the outputs"


@pytest.fixture(scope="module")
def environment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh store for the sample app and no Lapse or Braze variables of the caller."""
    store = tmp_path_factory.mktemp("notebook-store")
    with pytest.MonkeyPatch.context() as patch:
        for name in list(os.environ):
            if name.upper().startswith("LAPSE_") or name.upper() == "BRAZE_API_KEY":
                patch.delenv(name)
        patch.setenv("LAPSE_STORE__PATH", str(store))
        yield store


def test_a_relative_store_path_is_the_callers_not_the_kernels(tmp_path: Path) -> None:
    environ = {"LAPSE_STORE__PATH": "my data"}  # the kernels run in notebooks/
    anchor_store(environ, tmp_path)
    assert environ["LAPSE_STORE__PATH"] == str(tmp_path / "my data")
    for kept in ("/srv/lapse", "s3://bucket/lapse"):
        environ = {"LAPSE_STORE__PATH": kept}
        anchor_store(environ, tmp_path)
        assert environ["LAPSE_STORE__PATH"] == kept
    anchor_store(environ := {}, tmp_path)
    assert environ == {}


@pytest.mark.slow
def test_the_kernel_is_this_interpreter(environment: Path, tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("# %%\nimport sys\nprint(sys.executable)\n")
    notebook = execute(probe, tmp_path / "probe.ipynb", timeout_s=120)
    assert notebook.cells[0].outputs[0].text.strip() == sys.executable
    spec = kernel_home(tmp_path / "home") / "kernels" / "python3" / "kernel.json"
    assert sys.executable in spec.read_text()


@pytest.mark.slow
def test_a_failing_cell_fails_with_its_source(environment: Path, tmp_path: Path) -> None:
    from nbclient.exceptions import CellExecutionError

    broken = tmp_path / "broken.py"
    broken.write_text("# %%\nx = 1\n\n# %%\ny = x + 1\nno_such_job(y)\n")
    with pytest.raises(CellExecutionError, match=r"(?s)y = x \+ 1\nno_such_job\(y\).*NameError"):
        execute(broken, tmp_path / "broken.ipynb", timeout_s=120)


@pytest.mark.slow
@pytest.mark.parametrize("source", NOTEBOOKS, ids=lambda p: p.stem)
def test_the_notebook_runs_top_to_bottom(environment: Path, source: Path, tmp_path: Path) -> None:
    """In order (01 makes the sample app, 02 the champion that 03 scores with), into copies."""
    committed = source.with_suffix(".ipynb")
    before = committed.read_bytes()
    out = tmp_path / committed.name
    notebook = execute(source, out, timeout_s=900, cwd=HERE)
    assert out.is_file() and committed.read_bytes() == before
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
    assert any("image/png" in o.get("data", {}) for o in outputs)
    assert (environment / "notebooks" / "sample.json").is_file()
