"""The error hierarchy: every failure a user can cause is one of these, with a one-line message.

The CLI prints ``str(error)`` and exits 2; nothing here ever reaches the user as a traceback.
Messages carry the place (file, node, line:col) and, where there is one, the fix; the same facts
are fields for programs (``.file``, ``.node``, ``.op_type``, ``.shapes``, ``.line``, ``.column``).
A rule that crashes is archcalc's bug, not the user's: ``RuleCrash`` says so (and with
ARCHCALC_STRICT set, as the tests set it, the crash itself surfaces).
"""

from __future__ import annotations


class ArchcalcError(Exception):
    """Base of every user-facing error. ``str()`` is the whole one-line message; the keyword
    fields name the place (None where they do not apply)."""

    def __init__(self, message: str, *, file: str | None = None, node: str | None = None,
                 op_type: str | None = None, shapes: dict[str, tuple] | None = None):
        super().__init__(message)
        self.message = message
        self.file, self.node, self.op_type = file, node, op_type
        self.shapes = shapes or {}


class InputError(ArchcalcError):
    """The file or argument cannot be read as a model: missing, not ONNX, corrupt, a bad flag."""


class UnboundDimError(InputError):
    """A symbolic dimension has no value; the message names the dim and the flag that binds it."""


class ShapeError(ArchcalcError):
    """A node's shapes are inconsistent or cannot be resolved: ``node``, ``op_type`` and the input
    ``shapes`` say where and what."""


class DataDependentShape(ShapeError):
    """A node's output shape depends on values computed from data at run time; the analysis shows
    its outputs as unknown (or as a bound) unless asked to be strict."""


class UnsupportedOpError(ArchcalcError):
    """An op that neither a rule nor onnx's own shape inference can give a shape to."""


class RuleCrash(ShapeError):
    """A rule raised on a node it should have sized or refused with a ShapeError: archcalc's bug."""


class ValidationError(ArchcalcError):
    """The model could not be run or measured (onnxruntime failed, the process was killed)."""


def _shown(text: str) -> str:
    """A design line as an error prints it: tabs as spaces, control characters as escapes."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                   for c in text.expandtabs(4))


class DSLError(InputError):
    """A design that cannot be built. ``str()``: ``file:line:col: message`` and a caret line."""

    def __init__(self, source: str, text: str, line: int, column: int, message: str):
        self.line, self.column = line, column
        lines = text.split("\n")  # the parser counts lines by \n alone (not U+2028 or a lone \r)
        shown = lines[line - 1].rstrip("\r") if 0 < line <= len(lines) else ""
        # The caret goes under the place as the line is printed: tabs expanded, control characters escaped.
        pad = len(_shown(shown[: column - 1]))
        caret = f"\n  {_shown(shown)}\n  {' ' * pad}^" if shown.strip() else ""
        super().__init__(f"{source}:{line}:{column}: {message}{caret}", file=source)
        self.source, self.message = source, message
