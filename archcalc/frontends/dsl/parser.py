"""The design language's parser: lark's LALR tables for ``grammar.lark``, built once and kept.

Building the tables takes about 60 ms, a fifth of a design's whole estimate, and they depend only
on the grammar, lark's version and Python's. So they are kept in the user's cache folder
(``$XDG_CACHE_HOME/archcalc``, else ``~/.cache/archcalc``) under a name that hashes all three,
written whole or not at all (another process may be reading), and read back with ``Lark.load``. A
file that does not load is rebuilt; where no cache can be written, the tables are built each time.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
from functools import cache
from importlib import resources
from pathlib import Path

import lark

OPTIONS = {"parser": "lalr", "propagate_positions": True}


def cache_file(grammar: str) -> Path:
    """Where the tables of ``grammar`` are kept: a name that changes with it, lark and Python."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    key = f"{grammar}{sorted(OPTIONS.items())}{lark.__version__}{sys.version_info[:2]}"
    return Path(root) / "archcalc" / f"dsl-parser-{hashlib.sha256(key.encode()).hexdigest()[:20]}.lark"


def _save(parser: lark.Lark, path: Path) -> None:
    """Write the tables to ``path`` through a temporary file renamed over it; a failure leaves none."""
    import tempfile  # only when the tables are written: most runs read them

    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".dsl-parser-", delete=False) as f:
            tmp = f.name
            parser.save(f)
        os.replace(tmp, path)
    except OSError:  # a read-only home, a full disk: the next run builds the tables again
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


@cache
def parser() -> lark.Lark:
    """The design language's LALR parser (positions kept, for line:column errors)."""
    grammar = resources.files("archcalc.frontends.dsl").joinpath("grammar.lark").read_text()
    path = cache_file(grammar)
    try:
        with open(path, "rb") as f:
            return lark.Lark.load(f)
    except Exception:  # absent, unreadable, or written by something else: built again below
        pass
    built = lark.Lark(grammar, **OPTIONS)
    _save(built, path)
    return built
