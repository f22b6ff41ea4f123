"""Exit codes that mean one thing: a crash inside archcalc is neither "does not fit" (1) nor "bad
input" (2), but 3, with one line that says it is archcalc's bug and where."""

from __future__ import annotations

from click.testing import CliRunner

import archcalc.api
from archcalc.cli import main


def test_an_internal_error_is_exit_3_and_one_line(monkeypatch):
    monkeypatch.delenv("ARCHCALC_STRICT", raising=False)

    def crash(*args, **kwargs):
        raise ZeroDivisionError("integer division or modulo by zero")

    monkeypatch.setattr(archcalc.api, "estimate", crash)
    result = CliRunner().invoke(main, ["estimate", "lenet5"])
    assert result.exit_code == 3
    text = result.output.strip()
    assert text.count("\n") == 0 and text.startswith("error: a bug in archcalc"), text
    assert "ZeroDivisionError" in text and "test_exit_codes.py" in text and "Traceback" not in text


def test_bad_input_stays_exit_2():
    result = CliRunner().invoke(main, ["estimate", "no/such/model.onnx"])
    assert result.exit_code == 2 and result.output.startswith("error: no/such/model.onnx")
