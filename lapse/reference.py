"""The settings reference, ``docs/settings.md``, rendered from the settings models themselves
(every section of ``lapse.settings.Settings``: key, environment variable, type, default and
description), so it cannot drift from the code; a test compares the file with a fresh render.

Regenerate it with ``python -m lapse.reference`` (``--check`` only compares).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import types
import typing
from pathlib import Path
from typing import Any

import annotated_types
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

from lapse.settings import API_KEY_ENV, ENV_PREFIX, Settings

#: Where the reference lives in the repository.
REFERENCE = Path(__file__).resolve().parents[1] / "docs" / "settings.md"

_HEAD = """\
# Settings reference

Every setting of Lapse, generated from the settings models (`lapse/settings.py` and the
`settings` module of each package) by `python -m lapse.reference`; a test fails when this page
differs from what the models say, so regenerate it after changing a setting.

Set a key in `lapse.toml` (`[section]` then `key = value`, or `lapse --config PATH`), or in the
environment as `LAPSE_<SECTION>__<KEY>` (lists and tables as JSON, `none` to clear an optional
key); command-line flags win over both, the environment over the file. Relative paths and
`sqlite:///` URLs in the file are anchored to the file's folder. **Secrets are read only from
the environment**: a secret in `lapse.toml` is an error, and none is ever printed or logged.
"""


def settings_reference() -> str:
    """The whole reference page as Markdown: one table per section, in the settings' order."""
    parts = [_HEAD]
    for section, info in Settings.model_fields.items():
        model: type[BaseModel] = info.annotation  # type: ignore[assignment]
        summary = (model.__doc__ or "").strip().split("\n\n")[0]
        parts.append(f"## [{section}]\n\n{_prose(summary)}\n")
        rows = [
            "| setting | environment variable | type | default | description |",
            "| --- | --- | --- | --- | --- |",
        ]
        rows += [_row(section, key, field) for key, field in model.model_fields.items()]
        parts.append("\n".join(rows) + "\n")
    return "\n".join(parts)


def _row(section: str, key: str, field: FieldInfo) -> str:
    secret = _is_secret(field.annotation)
    env = API_KEY_ENV if (section, key) == ("braze", "api_key") else _env(section, key)
    default = "-" if secret else _default(field.get_default(call_default_factory=True))
    description = _prose(field.description or "")
    if secret:
        description = f"**Secret: environment only** ({env}). {description}".strip()
    cells = [f"`{section}.{key}`", f"`{env}`", _type(field), default, description]
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


def _prose(text: str) -> str:
    """Docstring or description text as one Markdown line: ``code`` as `code`, and ``<`` kept
    from reading as an HTML tag."""
    return " ".join(text.split()).replace("``", "`").replace("<", "&lt;")


def _env(section: str, key: str) -> str:
    return f"{ENV_PREFIX}{section.upper()}__{key.upper()}"


def _is_secret(annotation: Any) -> bool:
    return annotation is SecretStr or SecretStr in typing.get_args(annotation)


def _type(field: FieldInfo) -> str:
    text = _type_name(field.annotation)
    bounds = []
    for item in field.metadata:
        for name, symbol in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            if isinstance(item, getattr(annotated_types, name.capitalize())):
                bounds.append(f"{symbol} {getattr(item, name)}")
    return text + (f" ({', '.join(bounds)})" if bounds else "")


def _type_name(annotation: Any) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return " | ".join(json.dumps(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        named = [_type_name(a) for a in args if a is not type(None)]
        return " | ".join(named) + (" or unset" if type(None) in args else "")
    if origin in (tuple, list):
        return f"list of {_type_name(args[0])}"
    if origin is dict:
        return f"table of {_type_name(args[0])} to {_type_name(args[1])}"
    simple = {str: "text", int: "integer", float: "number", bool: "boolean", Path: "path"}
    if annotation in simple:
        return simple[annotation]
    if annotation is dt.date:
        return "date"
    if annotation is SecretStr:
        return "secret"
    return getattr(annotation, "__name__", str(annotation))


def _default(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    if isinstance(value, dict):
        value = {k: v.model_dump(mode="json") if isinstance(v, BaseModel) else v
                 for k, v in value.items()}  # fmt: skip
    if isinstance(value, (Path, dt.date)):
        return f"`{value}`"
    if isinstance(value, tuple):
        value = list(value)
    return f"`{json.dumps(value)}`"


def main(argv: list[str] | None = None) -> int:
    """Write ``docs/settings.md`` (or, with ``--check``, exit 1 when it is stale)."""
    parser = argparse.ArgumentParser(
        prog="python -m lapse.reference", description=main.__doc__.splitlines()[0]
    )
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when stale")
    parser.add_argument(
        "target", nargs="?", type=Path, default=REFERENCE, help="default: %(default)s"
    )
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)  # --help, a typo: exit 2
    target, check = args.target, args.check
    fresh = settings_reference()
    if check:
        current = target.read_text() if target.exists() else ""
        if current != fresh:
            print(f"{target} is stale: run `python -m lapse.reference`", file=sys.stderr)
            return 1
        return 0
    target.write_text(fresh)
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
