"""What a path given as a model is: a regular file, a directory, a pipe, a device, a link loop --
told apart once, so that every front end refuses the same things with the same words."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from archcalc.errors import InputError


def file_status(path: str | os.PathLike) -> str:
    """"file", "missing", or (as an InputError) why ``path`` cannot be read as a model file."""
    try:
        st = os.stat(path)
    except ValueError:  # a NUL, or a character the file system's encoding lacks: no file has that name
        return "missing"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InputError(f"{path}: a loop of symbolic links: point it at the model file") from None
        if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ENAMETOOLONG):
            return "missing"
        raise InputError(f"{path}: cannot be read ({exc.strerror})") from None
    if stat.S_ISDIR(st.st_mode):
        raise InputError(f"{path}: is a directory, not a model file")
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"{path}: not a regular file (a pipe, socket or device): give an .onnx or .arch file")
    return "file"


def regular_file(path: str | os.PathLike) -> Path:
    """``path`` as a Path when it is a regular file; else an InputError that says what it is."""
    if file_status(path) == "missing":
        raise InputError(f"{path}: no such file: check the path, or name a zoo model (archcalc zoo)")
    return Path(path)
