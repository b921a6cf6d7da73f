"""CLI flags generated from ``Settings`` fields: one definition, so flag = env var = field.

``--max-batch-tokens`` is the field ``max_batch_tokens`` and the env var
``QEMBED_MAX_BATCH_TOKENS``. A flag left out keeps the env var or the default; a flag
given wins. List fields (``--api-key``) may be repeated.

Which flags a command has is asked of the settings groups, never kept by hand: every
command that loads a model takes ``engine_fields()`` (ModelSettings + EncodeSettings:
``--model``, ``--backend``, ``--quantize``, ``--int8-*``, ``--device``, ``--max-tokens``,
...), plus the groups of its own concern; a flag the command spells otherwise (``qembed
index --chunk-overlap`` is the index's) is excluded by name.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable, Iterable
from typing import Any, NoReturn

import click
from pydantic import BaseModel, SecretStr, ValidationError

from qembed.errors import QembedError
from qembed.settings import EncodeSettings, ModelSettings, Settings, settings_error


def fail(exc: QembedError) -> NoReturn:
    """Print a qembed error as one message (no stack trace) and exit 2: how every command ends
    on a mistake the user can fix."""
    click.secho(f"error: {exc.message}", fg="red", err=True)
    raise SystemExit(2)


# The groups every command that loads a model takes as flags.
ENGINE_GROUPS: tuple[type[BaseModel], ...] = (ModelSettings, EncodeSettings)


def engine_fields(*groups: type[BaseModel], exclude: Iterable[str] = ()) -> list[str]:
    """The fields of the engine groups and ``groups``, in Settings order, less ``exclude``."""
    return Settings.fields_of(*ENGINE_GROUPS, *groups, exclude=exclude)


def _click_type(annotation: Any) -> tuple[Any, bool, bool]:
    """(click type, is_flag, multiple) for a field annotation."""
    origin = typing.get_origin(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin in (typing.Union, types.UnionType) and len(args) == 1:
        return _click_type(args[0])
    if origin is typing.Annotated:
        return _click_type(args[0])
    if origin is list:
        inner, _, _ = _click_type(args[0])
        return inner, False, True
    if origin is typing.Literal:
        return click.Choice([str(a) for a in args]), False, False
    if annotation is bool:
        return bool, True, False
    if annotation is int:
        return int, False, False
    if annotation is float:
        return float, False, False
    if annotation is SecretStr:
        return str, False, False
    return str, False, False


def settings_options(fields: Iterable[str]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a click command with one option per named Settings field."""

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        for name in reversed(list(fields)):
            field = Settings.model_fields[name]
            kind, is_flag, multiple = _click_type(field.annotation)
            flag = "--" + name.replace("_", "-")
            env = f"QEMBED_{name.upper()}"
            default = field.default if field.default_factory is None else []
            help_text = f"{field.description} [env {env}; default {default!r}]"
            if is_flag:
                decl = f"{flag}/--no-{name.replace('_', '-')}"
                func = click.option(decl, name, default=None, help=help_text)(func)
            else:
                func = click.option(flag, name, type=kind, default=None, multiple=multiple, help=help_text)(
                    func
                )
        return func

    return decorate


def build_settings(values: dict[str, Any]) -> Settings:
    """Environment + defaults, overridden by the flags actually given (``Settings.overlay``).

    A bad env value or flag raises ``InputError`` naming the field (the commands print it
    as one ``error: ...`` line and exit 2).
    """
    given = {
        k: list(v) if isinstance(v, tuple) else v
        for k, v in values.items()
        if k in Settings.model_fields and v is not None and v != ()
    }
    try:
        base = Settings()
    except ValidationError as exc:  # a bad QEMBED_* env var
        raise settings_error(exc) from exc
    return base.overlay(**given)
