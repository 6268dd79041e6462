"""schema.quick_check, the fast path for flat schemas, never accepts what jsonschema refuses."""

from __future__ import annotations

from hypothesis import given, settings, strategies as st

from hypermesh.capsules import schema
from hypermesh.capsules.execution import CallResult
from hypermesh.transport.identity import Identity

NODE = Identity.from_seed(b"quick-check")
RECEIPT = CallResult(b"out", "b" + "a" * 58, "echo", b"in", 12, 34, NODE).receipt
SCHEMA_NAMES = ("manifest", "receipt", "trust-policy", "chunk-list", "execution-receipt")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2 ** 70), 2 ** 70) | st.floats(allow_nan=False) | st.text(max_size=80),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)


def jsonschema_accepts(document, name: str) -> bool:
    return not any(schema.validator(name).iter_errors(document))


@st.composite
def mutated_receipts(draw):
    receipt = dict(RECEIPT)
    for _ in range(draw(st.integers(0, 3))):
        action = draw(st.sampled_from(["replace", "drop", "add", "tweak"]))
        key = draw(st.sampled_from(sorted(RECEIPT)))
        if action == "replace":
            receipt[key] = draw(json_values)
        elif action == "drop":
            receipt.pop(key, None)
        elif action == "add":
            receipt[draw(st.text(max_size=12))] = draw(json_values)
        elif isinstance(receipt.get(key), str):
            text = receipt[key]
            position = draw(st.integers(0, len(text)))
            receipt[key] = text[:position] + draw(st.text(max_size=3)) + text[position + 1:]
        elif isinstance(receipt.get(key), int):
            receipt[key] = draw(st.sampled_from([-1, 0, True, 1.0, 2 ** 64]))
    return receipt


def test_quick_check_covers_the_execution_receipt_and_leaves_other_schemas_to_jsonschema():
    assert schema.quick_check("execution-receipt")(RECEIPT)
    assert jsonschema_accepts(RECEIPT, "execution-receipt")
    assert [name for name in SCHEMA_NAMES if schema.quick_check(name) is not None] == ["execution-receipt"]


@settings(max_examples=200, deadline=None)
@given(mutated_receipts())
def test_quick_check_accepts_only_what_jsonschema_accepts(document):
    if schema.quick_check("execution-receipt")(document):
        assert jsonschema_accepts(document, "execution-receipt"), document


@settings(max_examples=100, deadline=None)
@given(json_values)
def test_quick_check_refuses_what_is_not_an_object_of_the_schema(document):
    if schema.quick_check("execution-receipt")(document):
        assert jsonschema_accepts(document, "execution-receipt")
