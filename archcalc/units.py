"""Readable numbers: counts in powers of 1000 (K, M, G), bytes in powers of 1024 (KiB, MiB, GiB)."""

from __future__ import annotations


def printable(text: str, keep_newlines: bool = False) -> str:
    """``text`` with control characters (newlines, terminal escapes, line separators) written as
    escapes, so a name from a file can neither split a one-line message nor drive the terminal."""
    out = []
    for ch in str(text):
        if ch == "\n" and keep_newlines or ch.isprintable() or ch == " ":
            out.append(ch)
        else:
            out.append(ch.encode("unicode_escape").decode("ascii"))
    return "".join(out)


def count(n: float) -> str:
    """``138357544`` -> ``'138.36 M'``."""
    for unit, size in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n:g}"


def nbytes(n: float) -> str:
    """``553430016`` -> ``'527.79 MiB'``."""
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n:g} B"


def cell(value) -> str:
    """A table cell: whole numbers with thousands separators, everything else as it prints."""
    return f"{value:,}" if isinstance(value, int) else str(value)


def shape_text(shape) -> str:
    """``(1, 3, 224, 224)`` -> ``'1x3x224x224'``; a scalar's empty shape -> ``'scalar'``."""
    return "x".join(str(d) for d in shape) if shape else "scalar"


def hwc(shape: tuple[int, ...]) -> str:
    """A shape without its batch dim in the CS231n notes' order: (C, H, W) -> 'HxWxC', (F,) -> '1x1xF';
    any other rank as it is (a scalar: 'scalar')."""
    if len(shape) == 3:
        return f"{shape[1]}x{shape[2]}x{shape[0]}"
    return f"1x1x{shape[0]}" if len(shape) == 1 else shape_text(shape)


def parse_bytes(text: str) -> int:
    """``'24GiB'``, ``'80 GB'``, ``'512MiB'`` or a plain number of bytes -> bytes."""
    units = {"tib": 1 << 40, "gib": 1 << 30, "mib": 1 << 20, "kib": 1 << 10,
             "tb": 10**12, "gb": 10**9, "mb": 10**6, "kb": 10**3, "b": 1, "": 1}
    s = text.strip().lower().replace(" ", "")
    num = s.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = s[len(num):]
    if unit not in units or not num:
        raise ValueError(f"'{text}' is not a size: write it as 24GiB, 80GB or 512MiB")
    try:
        value = float(num) * units[unit]
    except ValueError:
        raise ValueError(f"'{text}' is not a size: write it as 24GiB, 80GB or 512MiB") from None
    if not 0 <= value <= MAX_BYTES:
        raise ValueError(f"'{text}' is not a size archcalc can price: give one from 0 to 1 EiB")
    return int(value)


MAX_BYTES = 1 << 60
# The largest size a user may give (a batch, a dim, a layer's window or count): far above any real
# one, far below where arithmetic overflows; every entry point checks against this one bound.
MAX_SIZE = 1 << 40
