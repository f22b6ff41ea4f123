"""The error hierarchy: every failure a user can cause is one of these, with a one-line message.

The CLI prints ``str(error)`` and exits 2; nothing here ever reaches the user as a traceback.
Messages carry the place (file, node, line:col) and, where there is one, the fix.
"""

from __future__ import annotations


class ArchcalcError(Exception):
    """Base of every user-facing error. ``str()`` is the whole one-line message."""


class InputError(ArchcalcError):
    """The file or argument cannot be read as a model: missing, not ONNX, corrupt, a bad flag."""


class UnboundDimError(InputError):
    """A symbolic dimension has no value; the message names the dim and the flag that binds it."""


class ShapeError(ArchcalcError):
    """A node's shapes are inconsistent or cannot be resolved; the message names the node and op."""


class UnsupportedOpError(ArchcalcError):
    """An op that neither a rule nor onnx's own shape inference can give a shape to."""


class ValidationError(ArchcalcError):
    """The model could not be run or measured (onnxruntime failed, the process was killed)."""


class DSLError(InputError):
    """A design that cannot be built. ``str()``: ``file:line:col: message`` and a caret line."""

    def __init__(self, source: str, text: str, line: int, column: int, message: str):
        self.source, self.line, self.column, self.message = source, line, column, message
        lines = text.splitlines()
        shown = lines[line - 1] if 0 < line <= len(lines) else ""
        caret = f"\n  {shown}\n  {' ' * (column - 1)}^" if shown else ""
        super().__init__(f"{source}:{line}:{column}: {message}{caret}")
