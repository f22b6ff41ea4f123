"""Files written whole or not at all: into a temporary file or folder beside the target, renamed
into place at the end, so that an interrupt or an error leaves the old output, or none -- never a
half-written report beside a full one.

tempfile makes its file 0600 and its folder 0700 whatever the umask (it is made for secrets); an
output is not one, so before the rename each gets the mode a new file or folder gets from ``open``
or ``mkdir``: 0666 or 0777 less the user's umask (0644 and 0755 under the usual 022). What it
replaces is a new file too, so its old mode (0600 from an archcalc that ignored the umask) is not
kept."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from archcalc.errors import InputError


def _less_umask(mode: int) -> int:
    """``mode`` as ``open`` or ``mkdir`` would make it: less the process's umask."""
    umask = os.umask(0)  # the one way to read it; set back at once
    os.umask(umask)
    return mode & ~umask


def _cannot_write(target: Path, exc: OSError) -> InputError:
    return InputError(f"{target}: cannot write there ({exc.strerror or exc}): choose another path",
                      file=str(target))


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``, else it is removed.
    The temporary file is made first, so an unwritable place fails before any work."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise _cannot_write(path, exc) from None
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, _less_umask(0o666))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_folder(folder: Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``folder``; on success it takes ``folder``'s place (the old
    one removed), else it is removed and ``folder`` is left as it was."""
    folder = Path(folder)
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    except OSError as exc:
        raise _cannot_write(folder, exc) from None
    try:
        yield tmp
        tmp.chmod(_less_umask(0o777))
        if folder.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".old", dir=folder.parent))
            old.rmdir()
            folder.rename(old)
            tmp.rename(folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
