"""Django forms built from a job kind's typed config (a pydantic model).

A job kind's config class holds its fields' defaults, bounds, choices and help once; the API
takes the class as its body, the command and the worker read it, and the page's form is made
here from the same class, so the form cannot drift from what the API accepts. The form checks
the values through the class itself, and reports each problem on the field it names.
"""

from __future__ import annotations

import types
import typing
from typing import Any, Literal

import annotated_types
from django import forms
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined


class IntListField(forms.CharField):
    """``384,256,128`` ⇄ ``[384, 256, 128]``; ``2:32,4:64`` ⇄ ``[[2, 32], [4, 64]]`` for pairs."""

    def __init__(self, *, pairs: bool = False, **kwargs: Any) -> None:
        self.pairs = pairs
        super().__init__(**kwargs)

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, list | tuple):
            if self.pairs:
                return ",".join(":".join(str(x) for x in pair) for pair in value)
            return ",".join(str(x) for x in value)
        return value

    def to_python(self, value: Any) -> list | None:
        text = (super().to_python(value) or "").replace(" ", "")
        if not text:
            return None
        parts = [p for p in text.split(",") if p]
        try:
            if self.pairs:
                return [[int(x) for x in p.split(":")] for p in parts]
            return [int(p) for p in parts]
        except ValueError:
            example = "layer:dimension pairs, e.g. 2:32,4:64" if self.pairs else "e.g. 384,128,64"
            raise forms.ValidationError(
                f"A comma-separated list of whole numbers ({example})."
            ) from None


class StrListField(forms.CharField):
    """``a, b`` ⇄ ``["a", "b"]``; a ``Literal`` alternative (``all-linear``) passes as is."""

    def __init__(self, *, keywords: tuple[str, ...] = (), **kwargs: Any) -> None:
        self.keywords = keywords
        super().__init__(**kwargs)

    def prepare_value(self, value: Any) -> Any:
        return ", ".join(value) if isinstance(value, list | tuple) else value

    def to_python(self, value: Any) -> list[str] | str | None:
        text = (super().to_python(value) or "").strip()
        if not text:
            return None
        if text in self.keywords:
            return text
        return [p.strip() for p in text.split(",") if p.strip()]


def _bounds(info: FieldInfo) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in info.metadata:
        if isinstance(item, annotated_types.Ge):
            out["min_value"] = item.ge
        elif isinstance(item, annotated_types.Gt):
            out["min_value"] = item.gt  # the model itself refuses the bound; the widget hints
        elif isinstance(item, annotated_types.Le):
            out["max_value"] = item.le
        elif isinstance(item, annotated_types.Lt):
            out["max_value"] = item.lt
        elif isinstance(item, annotated_types.MaxLen):
            out["max_length"] = item.max_length
    return out


def _strip_optional(annotation: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        optional = len(args) < len(typing.get_args(annotation))
        if len(args) == 1:
            return args[0], optional
        return typing.Union[tuple(args)], optional  # noqa: UP007
    return annotation, False


def _literal_values(annotation: Any) -> tuple | None:
    if typing.get_origin(annotation) is Literal:
        return typing.get_args(annotation)
    return None


def form_field(name: str, info: FieldInfo, **overrides: Any) -> forms.Field:
    """The Django field for one config field: choices from a ``Literal``, bounds from ``ge``/
    ``le``, help from ``description``, the initial value from the default."""
    annotation, optional = _strip_optional(info.annotation)
    default = None if info.default is PydanticUndefined else info.default
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    shown = extra.get("form_initial", default)
    common: dict[str, Any] = {
        # A field with a default may be left out (the default applies), as in the API.
        "required": info.is_required(),
        "label": extra.get("label") or info.title or name.replace("_", " ").capitalize(),
        "help_text": info.description or "",
        "initial": shown,
    }
    common.update(overrides)
    bounds = _bounds(info)
    literal = _literal_values(annotation)
    if literal is not None:
        labels = extra.get("choice_labels", {})
        choices = [(v, labels.get(v, v)) for v in literal]
        if optional:
            choices = [("", extra.get("empty_label", "default"))] + choices
        return forms.TypedChoiceField(choices=choices, coerce=str, empty_value=None, **common)
    if annotation is bool:
        common["required"] = False
        if optional and shown is None:
            return forms.NullBooleanField(**common)
        return forms.BooleanField(**common)
    if annotation is int:
        return forms.IntegerField(
            **common, **{k: v for k, v in bounds.items() if k != "max_length"}
        )
    if annotation is float:
        return forms.FloatField(**common, **{k: v for k, v in bounds.items() if k != "max_length"})
    if annotation is str:
        return forms.CharField(
            **common, max_length=bounds.get("max_length"), strip=False, empty_value=None
        )
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):  # e.g. Literal["all-linear"] | list[str]
        keywords: tuple = ()
        for arg in args:
            keywords += _literal_values(arg) or ()
        return StrListField(keywords=tuple(str(k) for k in keywords), **common)
    if origin is list and args:
        inner, inner_args = typing.get_origin(args[0]), typing.get_args(args[0])
        base = typing.get_origin(inner_args[0]) if inner_args else None
        if inner is list or base is list:
            return IntListField(pairs=True, **common)
        if _is_int(args[0]):
            return IntListField(**common)
        return StrListField(**common)
    raise TypeError(f"No form field for config field {name!r} ({info.annotation!r})")


def _is_int(annotation: Any) -> bool:
    if annotation is int:
        return True
    args = typing.get_args(annotation)
    return typing.get_origin(annotation) is typing.Annotated and bool(args) and args[0] is int


class ConfigForm(forms.Form):
    """A form whose config fields come from ``config_class`` (make the base with
    :func:`config_form`); ``self.config`` is the checked instance after ``is_valid()``.
    Subclasses add their own fields (objects chosen by id) and may override a generated one."""

    config_class: type[BaseModel]
    config_exclude: tuple[str, ...] = ()
    config: BaseModel | None = None

    def config_values(self) -> dict[str, Any]:
        """The config fields the user filled in (empty ones take the class's default)."""
        names = set(self.config_class.model_fields) - set(self.config_exclude)
        return {
            k: v for k, v in self.cleaned_data.items() if k in names and v is not None and v != ""
        }

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if self.errors:
            return data
        try:
            self.config = self.config_class.model_validate(self.config_values())
        except ValidationError as exc:
            for item in exc.errors():
                loc = item.get("loc") or ()
                field = str(loc[0]) if loc and str(loc[0]) in self.fields else None
                self.add_error(field, item.get("msg", "invalid").removeprefix("Value error, "))
        return data


def config_fields(
    config_class: type[BaseModel], *, exclude: tuple[str, ...] = ()
) -> dict[str, forms.Field]:
    return {
        name: form_field(name, info)
        for name, info in config_class.model_fields.items()
        if name not in exclude
    }


def config_form(
    config_class: type[BaseModel], *, exclude: tuple[str, ...] = ()
) -> type[ConfigForm]:
    """A form class with one field per config field, to subclass::

    class TrainingRunForm(config_form(TrainOptions, exclude=("device",))):
        base_model = forms.ModelChoiceField(...)
    """
    attrs: dict[str, Any] = dict(config_fields(config_class, exclude=exclude))
    attrs.update(config_class=config_class, config_exclude=tuple(exclude))
    return type(f"{config_class.__name__}Form", (ConfigForm,), attrs)
