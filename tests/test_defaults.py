"""Every attribute default a rule states equals the one in onnx's operator schemas."""

from __future__ import annotations

import ast
import inspect
import re

import onnx
import pytest

from archcalc.ops import RULES

ATTR_CALL = re.compile(r"""\.attr\("(\w+)",\s*([^()]+?)\)""")


def stated_defaults():
    # Contrib ops (com.microsoft.*) have no schema in onnx: their defaults are onnxruntime's
    # (docs/ContribOperators.md) and are checked by the tests of each rule.
    for op, fn in sorted((op, fn) for op, fn in RULES.items() if "." not in op):
        for name, text in ATTR_CALL.findall(inspect.getsource(fn)):
            value = ast.literal_eval(text)
            if value is not None:
                yield op, name, value


@pytest.mark.parametrize("op,name,value", list(stated_defaults()))
def test_stated_default_matches_schema(op, name, value):
    schema = onnx.defs.get_schema(op)
    if name not in schema.attributes:
        pytest.skip(f"{op} has no attribute {name} at the latest opset")
    attr = schema.attributes[name]
    if attr.default_value.type:
        assert onnx.helper.get_attribute_value(attr.default_value) in (value, str(value).encode())
    else:
        pytest.fail(f"{op}.{name}: the spec has no default, the rule assumes {value!r}")
