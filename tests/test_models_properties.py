"""Property tests of the row converter: whatever JSON the server sends, a listing
either gives records of the declared field types or a ResponseDecodeError,
never any other exception."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowith_proto.convert import (
    ROW_TYPES,
    structure_credits,
    structure_models,
    structure_row,
    structure_rows,
)
from flowith_proto.errors import ResponseDecodeError
from flowith_proto.models import (
    ConversationRecord,
    ConvNovelEditor,
    DiscussRecord,
    FlowNode,
    FlowProject,
    GeneratedImage,
    OracleStreamRecord,
    PublicNotice,
    SubscriptionUserOwn,
    TemplateRecord,
    UserCredits,
    UserProfile,
    UserUploadRecord,
)

PROPERTY_SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
# The per-type tests run once for each of the 21 row types: fewer examples each.
PER_TYPE_SETTINGS = settings(PROPERTY_SETTINGS, max_examples=50)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text()
    | st.sampled_from(["", "1,234.5", " 7 ", "1_000", "true", "0", "{}", "[]", '["a"]', "nan"])
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


def _row_keys(cls: type) -> list[str]:
    """The keys a row of ``cls`` may carry: its field names plus ``id`` and ``type``."""
    names = [f.name for f in attrs.fields(cls) if not f.name.startswith("_")]
    return [*names, "id", "type"]


def rows_for(cls: type) -> st.SearchStrategy[dict[str, Any]]:
    keys = st.sampled_from(_row_keys(cls)) | st.text(max_size=8)
    return st.dictionaries(keys, json_values, max_size=10)


# The types whose rows are named by an id: an object or array there is refused.
IDENTIFIED = {
    ConversationRecord: "id",
    FlowNode: "id",
    TemplateRecord: "id",
    UserProfile: "id",
    UserUploadRecord: "id",
    SubscriptionUserOwn: "id",
    OracleStreamRecord: "id",
    PublicNotice: "id",
    FlowProject: "id",
    DiscussRecord: "id",
    ConvNovelEditor: "conv_id",
}


def _names_a_record(cls: type, row: Mapping[str, Any]) -> bool:
    """Whether the row's id, if ``cls`` has one, is a scalar."""
    key = IDENTIFIED.get(cls)
    return key is None or not isinstance(row.get(key), (dict, list))


def _assert_well_typed(record: Any) -> None:
    attrs.resolve_types(type(record))
    for field in attrs.fields(type(record)):
        value = getattr(record, field.name)
        if field.name.startswith("_"):
            continue
        if field.type is str:
            assert isinstance(value, str), field.name
        elif field.type == (str | None):
            assert value is None or isinstance(value, str), field.name
        elif field.type is bool:
            assert isinstance(value, bool), field.name
        elif field.type is int:
            assert type(value) is int, field.name
        elif field.type == (int | None):
            assert value is None or type(value) is int, field.name
        elif field.type in (float, float | None):
            if value is not None or field.type is float:
                assert type(value) is float, field.name
                assert math.isfinite(value), field.name
        elif field.type == Mapping[str, Any]:
            assert isinstance(value, dict), field.name
        elif field.type == tuple[str, ...]:
            assert isinstance(value, tuple), field.name
            assert all(isinstance(item, str) for item in value), field.name
        elif field.type == tuple[GeneratedImage, ...]:
            assert all(isinstance(item, GeneratedImage) for item in value), field.name
        else:  # pragma: no cover - a field type this test does not know yet
            pytest.fail(f"unchecked field type {field.type!r}")


@pytest.mark.parametrize("cls", ROW_TYPES, ids=lambda cls: cls.__name__)
@PER_TYPE_SETTINGS
@given(body=json_values)
def test_any_body_gives_records_or_a_decode_error(cls: type, body: Any) -> None:
    try:
        records: list[Any] = structure_rows(body, cls, context="prop")
    except ResponseDecodeError as exc:
        error: ResponseDecodeError | None = exc
        records = []
    else:
        error = None
    if error is not None:
        assert str(error).startswith("prop: ")
        return
    assert isinstance(body, (list, dict))
    for record in records:
        _assert_well_typed(record)


@pytest.mark.parametrize("cls", ROW_TYPES, ids=lambda cls: cls.__name__)
@PER_TYPE_SETTINGS
@given(data=st.data())
def test_any_object_row_is_decoded_unless_its_id_is_not_a_scalar(
    cls: type, data: st.DataObject
) -> None:
    row = data.draw(rows_for(cls))
    try:
        record: Any = structure_row(row, cls)
    except ResponseDecodeError:
        assert not _names_a_record(cls, row)
        return
    assert _names_a_record(cls, row)
    assert getattr(record, "metadata", row) == row
    _assert_well_typed(record)


@pytest.mark.parametrize("cls", ROW_TYPES, ids=lambda cls: cls.__name__)
@PER_TYPE_SETTINGS
@given(data=st.data())
def test_a_decoded_record_is_the_one_its_init_builds(cls: type, data: st.DataObject) -> None:
    # The converter fills the slots itself (no __init__): it must leave nothing unset
    # and apply each field's converter exactly as __init__ would.
    row = data.draw(rows_for(cls))
    try:
        record: Any = structure_row(row, cls)
    except ResponseDecodeError:
        return
    assert structure_rows([dict(row)], cls, owned=True) == [record]
    values = {field.alias: getattr(record, field.name) for field in attrs.fields(cls)}
    rebuilt = cls(**values)
    assert record == rebuilt
    assert repr(record) == repr(rebuilt)
    for field in attrs.fields(cls):
        assert type(getattr(record, field.name)) is type(getattr(rebuilt, field.name))


@PROPERTY_SETTINGS
@given(body=json_values | st.dictionaries(st.text(max_size=8), json_values, max_size=5))
def test_models_catalogue_never_crashes(body: Any) -> None:
    try:
        models = structure_models(body)
    except ResponseDecodeError:
        return
    assert [m.model_id for m in models] == list(body)
    for model in models:
        _assert_well_typed(model)


@PROPERTY_SETTINGS
@given(body=json_values)
def test_credits_never_crash(body: Any) -> None:
    try:
        credits = structure_credits(body)
    except ResponseDecodeError:
        return
    assert all(isinstance(c, UserCredits) for c in credits)


@PROPERTY_SETTINGS
@given(number=st.floats(allow_nan=False, allow_infinity=False))
def test_float_text_round_trips(number: float) -> None:
    (credits,) = structure_credits([{"remain_quota": repr(number), "init_quota": f" {number} "}])
    assert credits.remain_quota == number
    assert credits.init_quota == number


@PROPERTY_SETTINGS
@given(number=st.integers(min_value=-(10**15), max_value=10**15))
def test_grouped_integers_parse(number: int) -> None:
    row = {"months": f"{number:,}", "remain_quota": f"{number:_}"}
    record = structure_row(row, SubscriptionUserOwn)
    assert record.months == number
    assert record.remain_quota == float(number)


json_objects = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
).filter(lambda value: isinstance(value, (dict, list)))


@PROPERTY_SETTINGS
@given(workflow=json_objects)
def test_objects_in_text_fields_round_trip_as_json(workflow: Any) -> None:
    record = structure_row({"workflow": workflow}, OracleStreamRecord)
    assert json.loads(record.workflow) == workflow
