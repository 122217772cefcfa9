"""Run the notebooks top to bottom in this project's Python and write them with their outputs.

    python notebooks/execute.py               # every notebook, in place (`make notebooks`)
    python notebooks/execute.py --out DIR 01  # those whose name starts with 01, written to DIR

The text file of each pair (``NN-name.py``, jupytext ``py:percent``) is the source: it is read,
executed with nbclient on a kernel of ``sys.executable`` (never whatever ``python3`` kernel
Jupyter finds first), and written as ``NN-name.ipynb`` with its outputs; a failing cell stops the
run with the cell's source in the message. The kernel's working folder is ``notebooks/`` (the
notebooks read ``../lapse.toml``), and the sample app they share lives in
``<store.path>/notebooks``: ``data/notebooks``, or wherever ``LAPSE_STORE__PATH`` says.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
KERNEL = "python3"
STORE_ENV = "LAPSE_STORE__PATH"


def sources(prefixes: list[str] | None = None) -> list[Path]:
    """The paired text files, in name order (01, 02, 03 ...), those starting with a prefix."""
    found = sorted(HERE.glob("[0-9][0-9]-*.py"))
    return [p for p in found if not prefixes or p.name.startswith(tuple(prefixes))]


def kernel_home(folder: Path) -> Path:
    """A Jupyter data folder whose ``python3`` kernel runs this interpreter (put first on
    JUPYTER_PATH, it wins over any other ``python3`` kernel installed on the machine)."""
    spec = folder / "kernels" / KERNEL
    spec.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": "Python 3 (ipykernel)", "language": "python"})
    )
    return folder


def execute(source: Path, out: Path, timeout_s: float = 600, cwd: Path = HERE):
    """Execute the notebook of ``source`` (a paired .py) in ``cwd`` and write it to ``out``
    (.ipynb, with outputs); returns the executed notebook. Raises nbclient's
    CellExecutionError, which shows the failing cell's source and traceback."""
    import jupytext
    import nbformat
    from nbclient import NotebookClient

    notebook = jupytext.read(source)
    with tempfile.TemporaryDirectory(prefix="lapse-kernel-") as home:
        saved = os.environ.get("JUPYTER_PATH")
        os.environ["JUPYTER_PATH"] = os.pathsep.join(
            [str(kernel_home(Path(home))), *([saved] if saved else [])]
        )
        try:
            client = NotebookClient(
                notebook,
                timeout=timeout_s,
                kernel_name=KERNEL,
                resources={"metadata": {"path": str(cwd)}},
            )
            client.execute()
        finally:
            if saved is None:
                os.environ.pop("JUPYTER_PATH", None)
            else:
                os.environ["JUPYTER_PATH"] = saved
    out.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, out)
    return notebook


def anchor_store(environ: dict[str, str] | os._Environ, cwd: Path) -> None:
    """Make a relative ``LAPSE_STORE__PATH`` absolute against ``cwd``, the caller's folder: the
    kernels run in ``notebooks/``, where it would otherwise point (URLs are left as they are)."""
    value = environ.get(STORE_ENV)
    if value and "://" not in value and not Path(value).is_absolute():
        environ[STORE_ENV] = str((cwd / value).resolve())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prefixes", nargs="*", help="only notebooks whose name starts so")
    parser.add_argument("--out", type=Path, help="write here instead of beside the source")
    args = parser.parse_args(argv)
    anchor_store(os.environ, Path.cwd())
    for source in sources(args.prefixes):
        started = time.perf_counter()
        target = (args.out or HERE) / source.with_suffix(".ipynb").name
        execute(source, target)
        print(f"{source.name} -> {target} ({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
