"""Typed frozen config sections: type checking, canonical values and text parsing.

The machinery behind :mod:`comet_model.config`: every section dataclass derives from
:class:`Section`, whose ``__post_init__`` checks each field against its annotation (ints are
accepted for floats, lists for tuples, ``None`` only for optional fields, bools never for ints)
and then runs the section's ``_validate``. Errors are :class:`ConfigError` naming the dotted key.

Numbers are checked here once for every key: a float must be finite and within float32's range
(every tensor is float32, so ``1e300`` would be ``inf`` in the first product), an int within
int64's range. The ranges of each key (``> 0``, ``in (0, 1)``, ...) are the sections' own.
"""

from __future__ import annotations

import math
import numbers
import types
import typing
from dataclasses import fields
from typing import Any, ClassVar, Literal

__all__ = ["FLOAT32_MAX", "ConfigError", "Section", "coerce", "describe", "parse_text"]

FLOAT32_MAX = 3.4028234663852886e38  # numpy.finfo(numpy.float32).max
_INT64 = (-(2**63), 2**63 - 1)


class ConfigError(ValueError):
    """A bad configuration key or value; the message names the key in one line."""


def describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(describe(a) for a in typing.get_args(tp))
    if origin is tuple:
        return f"tuple[{describe(typing.get_args(tp)[0])}, ...]"
    return "None" if tp is type(None) else tp.__name__


def coerce(key: str, value: Any, tp: Any) -> Any:
    """Check ``value`` against the annotation ``tp`` and return it in canonical form."""
    origin = typing.get_origin(tp)
    ok = True
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(key, value, arg)
            except ConfigError as exc:
                errors.append(exc)
        if len(errors) == 1 and "expected" not in str(errors[0]):  # the right type, a bad value
            raise errors[0]
        ok = False
    elif origin is Literal:
        ok = isinstance(value, str) and value in typing.get_args(tp)
    elif origin is tuple:
        if isinstance(value, (list, tuple)):
            item = typing.get_args(tp)[0]
            return tuple(coerce(f"{key}[{i}]", v, item) for i, v in enumerate(value))
        ok = False
    elif tp is bool:
        ok = isinstance(value, bool) or type(value).__name__ == "bool_"
        if ok:
            return bool(value)
    elif tp is int:
        ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
        if ok:
            if not _INT64[0] <= int(value) <= _INT64[1]:
                raise ConfigError(f"{key}: {value} overflows int64")
            return int(value)
    elif tp is float:
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
        if ok:
            return _finite(key, float(value))
    elif tp is str:
        ok = isinstance(value, str)
    else:  # pragma: no cover - schema error, not user error
        raise TypeError(f"unsupported config annotation {tp!r} for {key}")
    if not ok:
        raise ConfigError(f"{key}: expected {describe(tp)}, got {type(value).__name__} {value!r}")
    return value


def _finite(key: str, value: float) -> float:
    if not math.isfinite(value):
        raise ConfigError(f"{key}: must be a finite number, got {value!r}")
    if abs(value) > FLOAT32_MAX:
        raise ConfigError(f"{key}: {value!r} overflows float32 (largest {FLOAT32_MAX:.4g})")
    return value


class Section:
    """Mixin: type-check and canonicalise every field, then run ``_validate``."""

    _name: ClassVar[str] = ""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in fields(self):  # type: ignore[arg-type]
            key = f"{self._name}.{f.name}" if self._name else f.name
            tp = hints[f.name]
            if isinstance(tp, type) and issubclass(tp, Section):
                if not isinstance(getattr(self, f.name), tp):
                    raise ConfigError(f"{key}: expected a {tp.__name__}")
                continue
            object.__setattr__(self, f.name, coerce(key, getattr(self, f.name), tp))
        self._validate()

    def _validate(self) -> None:
        """Value checks of a section (override)."""

    def _require(self, ok: bool, name: str, what: str) -> None:
        if not ok:
            key = f"{self._name}.{name}" if self._name else name
            raise ConfigError(f"{key}: must be {what}, got {getattr(self, name)!r}")


def parse_text(key: str, raw: str, tp: Any) -> Any:
    args = typing.get_args(tp)
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        if raw.lower() in ("none", "null") and type(None) in args:
            return None
        inner = next(a for a in args if a is not type(None))
        return parse_text(key, raw, inner)
    if origin is tuple:
        items = [s.strip() for s in raw.split(",") if s.strip()]
        return tuple(parse_text(key, s, args[0]) for s in items)
    if tp is bool:
        if raw.lower() in ("true", "1", "yes", "on"):
            return True
        if raw.lower() in ("false", "0", "no", "off"):
            return False
    elif tp in (int, float):
        try:
            return tp(raw)
        except ValueError:
            pass
    else:  # str and Literal: checked by the dataclass
        return raw
    raise ConfigError(f"{key}: expected {describe(tp)}, got {raw!r}")
