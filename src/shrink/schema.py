"""Typed, frozen dataclasses from YAML mappings, with errors that name the key (``params.yaml: distill.alpha:
must be in [0, 1] ...``): the machinery under ``config``'s sections, apart from them because it knows nothing of
this project's params. A key a section leaves out takes that section's default (``from_dict``'s ``base``).
"""
from __future__ import annotations

import contextlib
import dataclasses
import types
import typing
from typing import Any, Literal


class UserError(ValueError):
    """A fault in what the user gave (params, data, artifacts): the message names the file or key and
    says what to do. Stages print it as one ``<stage>: error: ...`` line, never as a traceback
    (``shrink.stage``)."""


class ParamsError(UserError):
    """A params.yaml key is unknown, missing, of the wrong type or out of range."""


class FieldError(ValueError):
    """Raised by a dataclass's ``__post_init__``: ``field`` is out of range; ``from_dict`` adds the section."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _check(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ParamsError(f"params.yaml: {key}: must be one of {', '.join(map(str, allowed))}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return _check(value, inner[0], key)
        for alt in inner:  # e.g. int | Literal["auto"]: the first that fits
            with contextlib.suppress(ParamsError):
                return _check(value, alt, key)
        names = [repr(typing.get_args(a)[0]) if typing.get_origin(a) is Literal else a.__name__ for a in inner]
        raise ParamsError(f"params.yaml: {key}: expected {' or '.join(names)}, got {value!r}")
    if origin is dict:
        _, inner = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ParamsError(f"params.yaml: {key}: expected a mapping, got {value!r}")
        return {str(k): _check(v, inner, f"{key}.{k}") for k, v in value.items()}
    if origin in (list, tuple):
        (inner, *_) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ParamsError(f"params.yaml: {key}: expected a list, got {value!r}")
        return [_check(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, key)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        try:  # YAML 1.1 reads "1e-4" as a string
            return float(value)
        except ValueError:
            pass
    if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        raise ParamsError(f"params.yaml: {key}: expected {tp.__name__}, got {value!r}")
    return value


def _join(key: str, name: str) -> str:
    return f"{key}.{name}" if key else name


def _default_of(cls: type, base: Any, name: str) -> Any:
    """What field ``name`` holds when a file leaves it out: ``base``'s value, else the field's own default."""
    if base is not None:
        return getattr(base, name)
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else None


def from_dict(cls: type, data: Any, key: str, base: Any = None) -> Any:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys and wrong types.

    Args:
        cls: a params dataclass; its ``__post_init__`` raises ``FieldError`` for a bad value.
        data: the mapping read from YAML (None: every default).
        key: where ``data`` sits in params.yaml ("" for the whole file), for the messages.
        base: the section's defaults (an instance of ``cls``), for the keys ``data`` leaves out; None: the
            class's own. Nested sections take theirs from ``base`` or from their field's default factory.
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ParamsError(f"params.yaml: {key}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for k in data:
        if k not in names:
            what = "key" if key else "section"
            raise ParamsError(f"params.yaml: {_join(key, str(k))}: unknown {what} (known: {', '.join(sorted(names))})")
    kwargs = {k: from_dict(hints[k], v, _join(key, k), _default_of(cls, base, k)) if dataclasses.is_dataclass(hints[k])
              else _check(v, hints[k], _join(key, k)) for k, v in data.items()}
    missing = [f.name for f in dataclasses.fields(cls) if f.name not in kwargs and base is None
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ParamsError(f"params.yaml: {_join(key, missing[0])}: missing key (required)")
    try:
        return cls(**kwargs) if base is None else dataclasses.replace(base, **kwargs)
    except FieldError as e:
        raise ParamsError(f"params.yaml: {_join(key, e.field)}: {e}") from None
