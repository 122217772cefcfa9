"""Lapse configuration: one typed `Settings` object, loaded once at the CLI edge and passed down.

Load it with `Settings.load(config=None, **overrides)`. Precedence, highest first: overrides passed
in code (the CLI's flags) > environment (`LAPSE_<SECTION>__<KEY>`) > the TOML file > defaults.
The Braze API key is read only from the `BRAZE_API_KEY` environment variable.
"""

import json
import os
import re
import tomllib
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    Field,
    PrivateAttr,
    ValidationError,
)
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)
from pydantic_settings import SettingsError as _SourceError

from base import LapseError, resolve_sqlite_url, safe_url
from features.settings import (
    DaskSettings,
    FeatureConfig,
    IngestSettings,
    LabelSettings,
    StoreSettings,
)
from features.synthetic.settings import SyntheticSettings
from serving.settings import (
    BrazeSettings,
    LedgerSettings,
    MonitoringSettings,
    ServingSettings,
    api_key_problem,
)
from training.settings import BucketSettings, MlflowSettings, OptunaSettings, TrainingSettings

__all__ = [
    "API_KEY_ENV",
    "CONFIG_ENV",
    "DEFAULT_CONFIG",
    "ENV_PREFIX",
    "BrazeSettings",
    "BucketSettings",
    "DaskSettings",
    "IngestSettings",
    "LabelSettings",
    "LedgerSettings",
    "MlflowSettings",
    "MonitoringSettings",
    "OptunaSettings",
    "ServingSettings",
    "Settings",
    "SettingsError",
    "StoreSettings",
    "SyntheticSettings",
    "TrainingSettings",
    "resolve_sqlite_url",
]

DEFAULT_CONFIG = Path("lapse.toml")
#: The settings file when no --config is given (a deployment mounts one here), else ./lapse.toml.
CONFIG_ENV = "LAPSE_CONFIG"
ENV_PREFIX = "LAPSE_"
API_KEY_ENV = "BRAZE_API_KEY"

_SCALARS = (str, int, float, bool, date)


class SettingsError(LapseError, ValueError):
    """Unusable configuration; the message names the file or variable, the key and the reason."""


@dataclass
class _Load:
    """What one `Settings.load` call read, so errors and relative paths can tell their origin."""

    config: Path | None
    env: dict[str, Any] = field(default_factory=dict)
    file: dict[str, Any] = field(default_factory=dict)


_LOADING: ContextVar[_Load | None] = ContextVar("lapse_settings_load", default=None)


class _EnvSource(EnvSettingsSource):
    """LAPSE_<SECTION>__<KEY> variables; refuses the Braze key, which has its own variable."""

    def __init__(self, settings_cls: type[BaseSettings], record: _Load | None) -> None:
        super().__init__(settings_cls)
        self._record = record

    def __call__(self) -> dict[str, Any]:
        _check_env_sections(self.settings_cls)
        for name, value in os.environ.items():
            if name.upper().startswith(ENV_PREFIX) and not value.strip():
                raise SettingsError(
                    f"{name}: empty; expected a value (or unset it to use lapse.toml or the "
                    "default; 'none' clears an optional key)"
                )
        data = super().__call__()
        braze = data.get("braze")
        if isinstance(braze, Mapping) and "api_key" in braze:
            raise SettingsError(
                f"{ENV_PREFIX}BRAZE__API_KEY: not used; "
                f"the Braze API key is read only from {API_KEY_ENV}"
            )
        if self._record is not None:
            self._record.env = data
        return data


class _TomlSource(TomlConfigSettingsSource):
    """The TOML config file, with errors that name it; refuses secrets."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path | None) -> None:
        try:
            super().__init__(settings_cls, toml_file=path)
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"{path}: invalid TOML: {exc}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise SettingsError(f"{path}: cannot read: {exc}") from None
        for loc in _PATH_KEYS:
            value = _lookup(self.toml_data, loc)
            if isinstance(value, str) and not value.strip():
                raise SettingsError(
                    f"{path}: [{loc[0]}] {loc[1]}: empty; expected a path (or leave the key "
                    "out to use the default)"
                )
        braze = _lookup(self.toml_data, ("braze",))
        if isinstance(braze, Mapping) and "api_key" in braze:
            raise SettingsError(
                f"{path}: [braze] api_key: secrets must not be in the config file; "
                f"set the {API_KEY_ENV} environment variable"
            )
        serving = _lookup(self.toml_data, ("serving",))
        if isinstance(serving, Mapping) and "token" in serving:
            raise SettingsError(
                f"{path}: [serving] token: secrets must not be in the config file; "
                f"set the {ENV_PREFIX}SERVING__TOKEN environment variable"
            )

    def _read_file(self, file_path: Any) -> dict[str, Any]:
        """The file as UTF-8, a leading byte-order mark (as some Windows editors write) skipped."""
        with open(file_path, encoding="utf-8-sig") as toml_file:
            return tomllib.loads(toml_file.read())


#: Keys holding a path, where an empty value would silently mean the current folder.
_PATH_KEYS = (("store", "path"), ("training", "truth_path"), ("mlflow", "artifact_location"))


def _api_key_source(settings_cls: type[BaseSettings]) -> InitSettingsSource:
    key = os.environ.get(API_KEY_ENV, "").strip()
    problem = api_key_problem(key)
    if problem:
        raise SettingsError(f"{API_KEY_ENV}: {problem}")
    return InitSettingsSource(settings_cls, init_kwargs={"braze": {"api_key": key}} if key else {})


class Settings(BaseSettings):
    """All Lapse settings, immutable. Use `Settings.load()`.

    `Settings(...)` (for tests) reads the environment but no file and leaves relative paths alone.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        env_parse_none_str="none",
        extra="forbid",
        frozen=True,
    )

    store: StoreSettings = Field(default_factory=StoreSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    labels: LabelSettings = Field(default_factory=LabelSettings)
    features: FeatureConfig = Field(default_factory=FeatureConfig)
    mlflow: MlflowSettings = Field(default_factory=MlflowSettings)
    optuna: OptunaSettings = Field(default_factory=OptunaSettings)
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    ledger: LedgerSettings = Field(default_factory=LedgerSettings)
    braze: BrazeSettings = Field(default_factory=BrazeSettings)
    buckets: BucketSettings = Field(default_factory=BucketSettings)
    serving: ServingSettings = Field(default_factory=ServingSettings)
    monitoring: MonitoringSettings = Field(default_factory=MonitoringSettings)
    synthetic: SyntheticSettings = Field(default_factory=SyntheticSettings)
    dask: DaskSettings = Field(default_factory=DaskSettings)

    _config_file: Path | None = PrivateAttr(default=None)

    @property
    def config_file(self) -> Path | None:
        """The absolute path of the TOML file these settings were loaded from, if any."""
        return self._config_file

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Overrides > LAPSE_* environment > BRAZE_API_KEY > the TOML file `load` is reading."""
        record = _LOADING.get()
        toml = _TomlSource(settings_cls, record.config if record else None)
        if record is not None:
            record.file = toml.toml_data
        return (
            init_settings,
            _EnvSource(settings_cls, record),
            _api_key_source(settings_cls),
            toml,
        )

    @classmethod
    def load(
        cls, config: str | os.PathLike[str] | None = None, **overrides: Mapping[str, Any]
    ) -> "Settings":
        """Read `config` (default: ./lapse.toml if present), the environment and `overrides`.

        Overrides are per section, e.g. `Settings.load(path, braze={"batch_size": 50})`; keys whose
        value is None are skipped, so unset CLI flags can be passed straight through. Relative
        paths and SQLite URLs from the file (or the defaults) are anchored to the file's folder;
        those from the environment or overrides to the cwd. Raises `SettingsError` on any problem.
        """
        path = _config_path(config)
        given = _clean_overrides(overrides)
        record = _Load(path)
        token = _LOADING.set(record)
        try:
            settings = cls(**given)
        except ValidationError as exc:
            raise SettingsError(_describe(exc, record, given)) from None
        except _SourceError as exc:
            raise SettingsError(_describe_source_error(exc)) from None
        finally:
            _LOADING.reset(token)
        return _anchor(settings, record, given)

    def updated(self, **sections: Mapping[str, Any]) -> "Settings":
        """A copy with some keys of some sections changed and checked, e.g.
        ``settings.updated(optuna={"n_trials": 5})`` (paths and URLs are taken as given)."""
        update = {}
        for name, values in sections.items():
            if name.startswith("_") or name not in type(self).model_fields:
                raise SettingsError(f"override [{name}]: unknown section{_suggest(name, Settings)}")
            current = getattr(self, name)
            try:
                update[name] = type(current).model_validate({**current.model_dump(), **values})
            except ValidationError as exc:
                first = exc.errors(include_url=False)[0]
                key = ".".join(str(part) for part in first["loc"])
                raise SettingsError(f"override [{name}] {key}: {first['msg']}") from None
        copy = self.model_copy(update=update)
        copy._config_file = self._config_file
        return copy


def _resolve_path(value: str | os.PathLike[str], base: Path) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else (Path(base) / path).resolve()


def _resolve_location(value: str, base: Path) -> str:
    if "://" in value or value.startswith("file:"):
        return value
    return str(_resolve_path(value, base))


def _config_path(config: str | os.PathLike[str] | None) -> Path | None:
    if config is None and os.environ.get(CONFIG_ENV):
        config = os.environ[CONFIG_ENV]
    if config is None:
        return DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None
    path = Path(config)
    if not path.exists():
        raise SettingsError(f"{path}: config file not found")
    if not path.is_file():
        raise SettingsError(f"{path}: not a file")
    return path


def _clean_overrides(overrides: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    cleaned: dict[str, dict[str, Any]] = {}
    for section, values in overrides.items():
        if section.startswith("_") or section not in Settings.model_fields:
            raise SettingsError(
                f"override [{section}]: unknown section{_suggest(section, Settings)}"
            )
        if not isinstance(values, Mapping):
            raise SettingsError(f"override [{section}]: must be a mapping of keys to values")
        kept = {key: value for key, value in values.items() if value is not None}
        if section == "braze" and "api_key" in kept:
            raise SettingsError(
                f"override [braze] api_key: the Braze API key is read only from {API_KEY_ENV}"
            )
        for key, value in kept.items():
            if (section, key) in _PATH_KEYS and isinstance(value, str) and not value.strip():
                raise SettingsError(f"override [{section}] {key}: empty; expected a path")
        if kept:
            cleaned[section] = kept
    return cleaned


def _anchor(settings: Settings, record: _Load, overrides: Mapping[str, Any]) -> Settings:
    """Make relative paths and SQLite URLs absolute, so nothing depends on the cwd later."""
    cwd = Path.cwd()
    file_base = record.config.resolve().parent if record.config else cwd

    def base(section: str, key: str) -> Path:
        from_cwd = _has(overrides, (section, key)) or _has(record.env, (section, key))
        return cwd if from_cwd else file_base

    store, mlflow, optuna, ledger = (
        settings.store,
        settings.mlflow,
        settings.optuna,
        settings.ledger,
    )
    anchored = settings.model_copy(
        update={
            "store": store.model_copy(
                update={"path": _resolve_path(store.path, base("store", "path"))}
            ),
            "mlflow": mlflow.model_copy(
                update={
                    "tracking_uri": resolve_sqlite_url(
                        mlflow.tracking_uri, base("mlflow", "tracking_uri")
                    ),
                    "artifact_location": _resolve_location(
                        mlflow.artifact_location, base("mlflow", "artifact_location")
                    ),
                }
            ),
            "optuna": optuna.model_copy(
                update={"storage": resolve_sqlite_url(optuna.storage, base("optuna", "storage"))}
            ),
            "ledger": ledger.model_copy(
                update={"url": resolve_sqlite_url(ledger.url, base("ledger", "url"))}
            ),
            "training": settings.training.model_copy(
                update={
                    "truth_path": _resolve_path(
                        settings.training.truth_path, base("training", "truth_path")
                    )
                    if settings.training.truth_path is not None
                    else None
                }
            ),
        }
    )
    anchored._config_file = record.config.resolve() if record.config else None
    return anchored


_MISSING = object()


def _lookup(data: Any, loc: tuple[str, ...]) -> Any:
    """The value at `loc` in nested mappings, or _MISSING; section names match in any case."""
    for depth, part in enumerate(loc):
        if not isinstance(data, Mapping):
            return _MISSING
        if part in data:
            data = data[part]
        elif depth == 0:
            data = next((v for k, v in data.items() if str(k).lower() == part.lower()), _MISSING)
        else:
            return _MISSING
    return data


def _check_env_sections(settings_cls: type[BaseModel]) -> None:
    """Refuse a LAPSE_* variable that names no section: pydantic-settings would ignore it, and
    a misspelt override (LAPSE_BRAZE_URL for LAPSE_BRAZE__URL) would silently not apply."""
    sections = list(settings_cls.model_fields)
    for name in os.environ:
        if not name.upper().startswith(ENV_PREFIX) or name.upper() == CONFIG_ENV:
            continue
        section = name[len(ENV_PREFIX) :].split("__", 1)[0].lower()
        if section in sections:
            continue
        near = [sec for sec in sections if section.startswith(sec + "_")]
        if near:
            key = name[len(ENV_PREFIX) + len(near[0]) + 1 :]
            hint = f" (did you mean {ENV_PREFIX}{near[0].upper()}__{key}?)"
        else:
            hint = _suggest(section, settings_cls)
        raise SettingsError(
            f"{name}: unknown section {section!r}{hint}; expected "
            f"{ENV_PREFIX}<SECTION>__<KEY> with a section of lapse.toml ({', '.join(sections)})"
        )


def _has(data: Mapping[str, Any], loc: tuple[str, ...]) -> bool:
    return _lookup(data, loc) is not _MISSING


def _suggest(name: str, model: type[BaseModel]) -> str:
    import difflib

    close = difflib.get_close_matches(name.lower(), list(model.model_fields), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _env_name(loc: tuple[str, ...]) -> str:
    names = [ENV_PREFIX + "__".join(loc[:n]).upper() for n in range(len(loc), 0, -1)]
    present = {name.upper() for name in os.environ}
    return next((name for name in names if name in present), names[0])


def _describe(exc: ValidationError, record: _Load, overrides: Mapping[str, Any]) -> str:
    lines = []
    for error in exc.errors(include_url=False):
        loc = tuple(str(part) for part in error["loc"])
        reason = _reason(error, loc)
        key = loc[:2]  # where a value came from is a section key's, not a list item's
        named = re.match(r"^(\w+): ", reason)
        if len(loc) == 1 and named and _has_key(loc[0], named[1]):
            # a section's own check names the key: point at where that key was set
            key = loc = (loc[0], named[1])
            reason = reason[named.end() :]
        if _has(overrides, key):
            where = f"override {_section_key(loc, error.get('input'))}"
        elif _has(record.env, key):
            where = _env_name(key) + ("" if loc == key else f" (item {'.'.join(loc[2:])})")
        elif _has(record.file, key):
            where = f"{record.config}: {_section_key(loc, error.get('input'))}"
        else:
            where = f"default {_section_key(loc, error.get('input'))}"
        lines.append(f"{where}: {reason}")
    return "\n".join(lines)


def _has_key(section: str, key: str) -> bool:
    info = Settings.model_fields.get(section)
    model = info.annotation if info else None
    return isinstance(model, type) and key in getattr(model, "model_fields", {})


def _section_key(loc: tuple[str, ...], value: Any = None) -> str:
    if len(loc) > 1:
        return f"[{loc[0]}] {'.'.join(loc[1:])}"
    return (
        f"[{loc[0]}]" if isinstance(value, Mapping) or loc[0] in Settings.model_fields else loc[0]
    )


#: The settings that hold secrets: an error about one never quotes its value.
_SECRET_KEYS = (("serving", "token"), ("braze", "api_key"))


def _reason(error: Any, loc: tuple[str, ...]) -> str:
    value = error.get("input")
    if isinstance(value, str) and "://" in value:
        value = safe_url(value)  # a database URL's password is never shown
    if error["type"] == "value_error" and "error" in error.get("ctx", {}):
        error = {**error, "msg": str(error["ctx"]["error"])}  # without pydantic's "Value error, "
    if error["type"] == "extra_forbidden":
        if len(loc) == 1:
            if isinstance(value, Mapping):
                return "unknown section" + _suggest(loc[0], Settings)
            return "unknown key (top-level keys are not allowed; put it under a [section])"
        section = Settings.model_fields.get(loc[0])
        model = section.annotation if section else None
        hint = _suggest(loc[-1], model) if isinstance(model, type) else ""
        return "unknown key" + hint
    if len(loc) == 1 and error["type"] in {"model_type", "model_attributes_type", "dict_type"}:
        return f"must be a table of keys (a [{loc[0]}] section), not a single value"
    if loc in _SECRET_KEYS:
        return error["msg"]  # a secret is never shown, even a wrong one
    if isinstance(value, str):
        return f"{error['msg']} (got {value!r})"
    if isinstance(value, _SCALARS):
        return f"{error['msg']} (got {value})"
    return error["msg"]


def _unparsed_list_variables(section: str) -> list[str]:
    """``LAPSE_<SECTION>__<KEY>`` variables of list or table settings whose value is not JSON
    (``tenure_days`` where ``["tenure_days"]`` is needed)."""
    model = getattr(Settings.model_fields.get(section), "annotation", None)
    fields = getattr(model, "model_fields", {})
    prefix = f"{ENV_PREFIX}{section}__".upper()
    bad = []
    for name, value in os.environ.items():
        key = name.upper().removeprefix(prefix).lower()
        if not name.upper().startswith(prefix) or key not in fields:
            continue
        if not re.search(r"\b(list|tuple|dict)\[", str(fields[key].annotation)):
            continue
        try:
            json.loads(value)
        except ValueError:
            bad.append(name)
    return sorted(bad)


def _describe_source_error(exc: _SourceError) -> str:
    match = re.search(r'field "(\w+)" from source "(\w+)"', str(exc))
    if match and match.group(2) == _EnvSource.__name__:
        unparsed = _unparsed_list_variables(match.group(1))
        if unparsed:
            return (
                f"{', '.join(unparsed)}: cannot parse the value; a list setting takes a JSON "
                """list, e.g. '["tenure_days", "install_age_days"]' or '[7, 28]'"""
            )
        return (
            f"{ENV_PREFIX}{match.group(1).upper()}: cannot parse the value; a section variable "
            f"must hold a JSON object (or set {ENV_PREFIX}{match.group(1).upper()}__<KEY> instead)"
        )
    return str(exc)
