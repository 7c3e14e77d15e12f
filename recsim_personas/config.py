"""The one way to write a config: a dataclass that derives from :class:`Config`.

``Config`` gives every config dataclass of the library the same behaviour (after PEFT's
``PeftConfig``): :meth:`Config.from_dict` builds it from plain data and reports unknown keys (with
did-you-mean), wrong types and invalid ``Literal`` choices over the whole tree in one
:class:`ConfigError`; :meth:`Config.to_dict` is its inverse; :meth:`Config.replace` rejects unknown
fields; :meth:`Config.field_help` reads each field's ``metadata["help"]``; :meth:`Config.from_yaml`
reads a YAML file with ``key.sub=value`` overrides. Fields may nest other dataclasses. Cross-field
rules stay in each class's ``__post_init__`` (raise :class:`ConfigError`; ``from_dict`` adds them
to the same report).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import (
    Any,
    ClassVar,
    Literal,
    Self,
    TypeVar,
    Union,
    get_args,
    get_origin,
    get_type_hints,
)

import yaml

from recsim_personas.errors import ConfigError, did_you_mean, unknown_keys

__all__ = [
    "Config",
    "apply_overrides",
    "build_dataclass",
    "config_to_dict",
    "help_text",
    "load_config",
    "read_yaml",
    "refuse_unknown_keys",
]

T = TypeVar("T")


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"{path} line {line} (byte offset {exc.start}): byte 0x{raw[exc.start]:02x} is not UTF-8; "
            "save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)"
        ) from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys to values")
    return data


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with ``a.b=value`` overrides applied (values parsed as YAML)."""
    out = _deepcopy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not key=value (e.g. split.n_users=20)")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            nxt = node.get(part)
            if not isinstance(nxt, dict):
                nxt = {}
                node[part] = nxt
            node = nxt
        node[parts[-1]] = value
    return out


def _deepcopy(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _deepcopy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_deepcopy(v) for v in data]
    return data


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in get_args(tp))
    if origin in (list, tuple, Sequence):
        args = get_args(tp)
        return f"list of {_type_name(args[0])}" if args else "list"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, where: str, errors: list[str]) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin is Literal:
        choices = get_args(tp)
        if value not in choices:
            extra = did_you_mean(value, choices)
            errors.append(f"{where}: {value!r} is not one of {', '.join(map(repr, choices))}.{extra}")
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            trial: list[str] = []
            converted = _convert(value, arg, where, trial)
            if not trial:
                return converted
        errors.append(f"{where}: expected {_type_name(tp)}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            errors.append(f"{where}: expected a mapping for {tp.__name__}, got {value!r}")
            return value
        return _build(tp, value, where, errors)
    if origin in (list, tuple, Sequence):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            errors.append(f"{where}: expected {_type_name(tp)}, got {value!r}")
            return value
        args = get_args(tp)
        inner = args[0] if args else Any
        items = [_convert(v, inner, f"{where}[{i}]", errors) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            errors.append(f"{where}: expected a mapping, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            errors.append(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            errors.append(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            errors.append(f"{where}: expected a number, got {value!r}")
            return value
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            errors.append(f"{where}: expected a string, got {value!r}")
        return value
    return value


def _hints(cls: type) -> dict[str, Any]:
    """Field types of ``cls``; a name that cannot be resolved at run time counts as ``Any``."""
    try:
        return get_type_hints(cls)
    except NameError:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            try:
                out[f.name] = get_type_hints(type("_One", (), {"__annotations__": {f.name: f.type},
                                                                "__module__": cls.__module__}))[f.name]
            except NameError:
                out[f.name] = Any
        return out


def _build(cls: type[T], data: dict[str, Any], where: str, errors: list[str]) -> T:
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs: dict[str, Any] = {}
    n_errors = len(errors)
    for key, value in data.items():
        path = f"{where}.{key}" if where else key
        if key not in fields:
            extra = did_you_mean(key, fields)
            errors.append(f"{path}: unknown key.{extra} Known keys: {', '.join(fields)}")
            continue
        kwargs[key] = _convert(value, hints[key], path, errors)
    # A field with a wrong type stops here: the cross-field checks of __post_init__ would only add
    # a confusing second message about the same value.
    for name, f in fields.items():
        if name not in kwargs and f.default is dataclasses.MISSING and (
            f.default_factory is dataclasses.MISSING
        ):
            errors.append(f"{where + '.' if where else ''}{name}: required key is missing")
    if len(errors) > n_errors:
        return None  # type: ignore[return-value]
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        errors.append(f"{where or cls.__name__}: {exc}")
    except (TypeError, ValueError) as exc:
        errors.append(f"{where or cls.__name__}: {exc}")
    return None  # type: ignore[return-value]


def build_dataclass(cls: type[T], data: dict[str, Any], *, source: str = "config") -> T:
    """Build ``cls`` from ``data``; raise one ConfigError listing every problem found."""
    errors: list[str] = []
    obj = _build(cls, data, "", errors)
    if errors:
        lines = "\n".join(f"  - {e}" for e in errors)
        raise ConfigError(f"{source}: {len(errors)} error(s):\n{lines}")
    return obj


def load_config(path: str | Path, cls: type[T], overrides: Sequence[str] = ()) -> T:
    data = apply_overrides(read_yaml(path), overrides)
    return build_dataclass(cls, data, source=str(path))


def config_to_dict(obj: Any) -> dict[str, Any]:
    """A dataclass tree as plain dicts/lists (tuples become lists), for YAML/JSON."""
    def conv(v: Any) -> Any:
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        return v

    return conv(obj)



def help_text(text: str) -> dict[str, str]:
    """Field metadata holding a field's help text: ``field(default=..., metadata=help_text("..."))``.

    :meth:`Config.field_help` and the CLI read it back.
    """
    return {"help": text}


def refuse_unknown_keys(cls: type, data: dict[str, Any], what: str) -> None:
    """Raise ``unknown <what> key(s) 'x' (did you mean 'y'?); valid keys: ...`` for keys not fields of ``cls``."""
    names = [f.name for f in dataclasses.fields(cls)]
    bad = unknown_keys(data, names)
    if bad:
        raise ConfigError(f"unknown {what} key(s) {', '.join(bad)}; valid keys: {', '.join(names)}")


class Config:
    """Base of every config dataclass: load, save, validate and document in one way.

    A subclass is a ``@dataclass`` (frozen or not) whose fields have defaults and, optionally,
    ``field(metadata={"help": ...})``; cross-field checks go in ``__post_init__``. A subclass that
    sets :attr:`config_name` gets unknown keys refused first, in one line that names it:
    ``unknown split config key(s) 'n_user' (did you mean 'n_users'?); valid keys: ...``.
    """

    #: The config's name in the one-line unknown-key message (``None``: listed with the other problems).
    config_name: ClassVar[str | None] = None

    @classmethod
    def from_dict(cls, data: Any, *, source: str | None = None) -> Self:
        """Build from plain data (the inverse of :meth:`to_dict`); every problem in one ConfigError."""
        name = source or cls.__name__
        if not isinstance(data, dict):
            raise ConfigError(f"{name}: expected a mapping of field names to values, got {type(data).__name__}")
        if cls.config_name is not None:
            refuse_unknown_keys(cls, data, cls.config_name)
        return build_dataclass(cls, data, source=name)

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: Sequence[str] = ()) -> Self:
        """Read ``path`` (YAML), apply ``key.sub=value`` ``overrides``, build and validate."""
        return load_config(path, cls, overrides)

    def to_dict(self) -> dict[str, Any]:
        """Plain dicts and lists (tuples become lists), ready for JSON or YAML."""
        return config_to_dict(self)

    def replace(self, **changes: Any) -> Self:
        """A copy with ``changes`` applied and validated again; an unknown field is a ConfigError."""
        names = [f.name for f in dataclasses.fields(self)]  # type: ignore[arg-type]
        bad = unknown_keys(changes, names)
        if bad:
            raise ConfigError(f"{type(self).__name__} has no field {', '.join(bad)}")
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]

    @classmethod
    def field_help(cls) -> dict[str, str]:
        """``{field name: help text}`` for every field (empty where a field has none)."""
        return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls)}  # type: ignore[arg-type]


_ = typing  # keep typing importable for get_type_hints on forward references
