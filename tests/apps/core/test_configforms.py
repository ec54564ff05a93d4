"""Forms made from a typed config: the page accepts exactly what the config accepts."""

from typing import Annotated, Literal

from django import forms
from pydantic import BaseModel, ConfigDict, Field, model_validator

from apps.core.configforms import IntListField, StrListField, config_form


class Knobs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    method: Literal["full", "lora"] = Field("full", description="how to train")
    rank: int = Field(8, ge=1, le=64)
    rate: float | None = Field(None, gt=0, le=1)
    merge: bool = True
    prefix: str | None = Field(None, max_length=5)
    dims: list[Annotated[int, Field(ge=1)]] | None = None
    pairs: list[list[Annotated[int, Field(ge=1)]]] | None = None
    targets: Literal["all-linear"] | list[str] | None = None

    @model_validator(mode="after")
    def _rank_for_lora(self):
        if self.method == "full" and self.rank != 8:
            raise ValueError("rank applies to LoRA only")
        return self


class KnobsForm(config_form(Knobs)):
    name = forms.CharField(required=False)


def test_fields_follow_the_config():
    form = KnobsForm()
    f = form.fields
    assert list(f)[:2] == ["method", "rank"] and "name" in f
    assert isinstance(f["method"], forms.TypedChoiceField)
    assert [c[0] for c in f["method"].choices] == ["full", "lora"]
    assert f["method"].initial == "full" and f["method"].help_text == "how to train"
    assert (f["rank"].min_value, f["rank"].max_value, f["rank"].initial) == (1, 64, 8)
    assert not f["rate"].required and f["rate"].max_value == 1
    assert isinstance(f["merge"], forms.BooleanField) and f["merge"].initial is True
    assert f["prefix"].max_length == 5
    assert isinstance(f["dims"], IntListField) and isinstance(f["pairs"], IntListField)
    assert isinstance(f["targets"], StrListField)


def test_valid_input_becomes_the_config():
    form = KnobsForm(
        data={
            "method": "lora",
            "rank": "16",
            "merge": "on",
            "dims": "64, 32",
            "pairs": "2:32,4:64",
            "targets": "all-linear",
            "name": "x",
        }  # fmt: skip
    )
    assert form.is_valid(), form.errors
    assert form.config == Knobs(
        method="lora", rank=16, merge=True, dims=[64, 32], pairs=[[2, 32], [4, 64]],
        targets="all-linear",
    )  # fmt: skip
    form = KnobsForm(data={"method": "lora", "rank": "8", "targets": "query, value"})
    assert form.is_valid(), form.errors
    assert form.config.targets == ["query", "value"] and form.config.merge is False


def test_errors_land_on_their_field():
    form = KnobsForm(data={"method": "full", "rank": "99", "dims": "a,b"})
    assert not form.is_valid()
    assert "rank" in form.errors and "dims" in form.errors
    form = KnobsForm(data={"method": "full", "rank": "4"})
    assert not form.is_valid()
    assert "rank applies to LoRA only" in str(form.non_field_errors())
    form = KnobsForm(data={"method": "full", "rank": "8", "rate": "0"})
    assert not form.is_valid() and "rate" in form.errors
