"""What every saved artifact shares: its error type, the checks made before reading it, and safe writing
(whole files replaced atomically, logs appended line by line under a lock)."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import IO, Iterator

from . import __version__

#: Files written here are readable by everyone and writable by their owner, as a plain ``open`` makes them.
FILE_MODE = 0o644


class ArtifactError(RuntimeError):
    """An artifact is missing, damaged or was written by an incompatible version."""


def read_meta(meta_path: Path, data_path: Path, fmt: str | None, version: int, missing: str, rebuild: str,
              error: type[ArtifactError] = ArtifactError) -> dict:
    """The JSON beside an artifact's data, checked: both files exist (else ``missing``), the JSON
    parses, and its ``format``/``format_version`` are what this package reads (else ``rebuild``)."""
    if not meta_path.is_file() or not data_path.is_file():
        raise error(missing)
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise error(f"{meta_path} is not valid JSON: {exc}") from None
    if not isinstance(meta, dict) or (fmt is not None and meta.get("format") != fmt) \
            or meta.get("format_version") != version:
        meta = meta if isinstance(meta, dict) else {}
        found = f"{meta.get('format')!r} " if fmt else ""
        expected = f"{fmt!r} " if fmt else ""
        raise error(f"{meta_path} is format {found}v{meta.get('format_version')}; shopbot_utils {__version__} "
                    f"reads {expected}v{version}: {rebuild}")
    return meta


# --------------------------------------------------------------------------- writing whole files
@contextlib.contextmanager
def atomic_writer(path: str | Path) -> Iterator[IO[bytes]]:
    """A binary file object that becomes ``path`` when the ``with`` block ends: it is a temporary file in
    the same folder, flushed to disk (``fsync``) and renamed over ``path``. Readers see the old file or
    the new one, never part of one; an error, or the process being killed, leaves ``path`` as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _sync_folder(path.parent)


def write_atomic(path: str | Path, data: bytes | str) -> Path:
    """Write ``data`` (text is UTF-8 encoded) to ``path`` through ``atomic_writer``; returns ``path``."""
    with atomic_writer(path) as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)
    return Path(path)


@contextlib.contextmanager
def atomic_folder(path: str | Path) -> Iterator[Path]:
    """A temporary folder to write a many-file artifact into; when the ``with`` block ends its files are
    flushed to disk and it replaces the folder ``path`` (the old one is renamed aside, then deleted).
    An error leaves ``path`` as it was; a process killed between the two renames leaves no ``path``
    (its loader then says it is missing), never a mix of old and new files."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        yield tmp
        for file in tmp.rglob("*"):
            if file.is_file():
                with open(file, "rb") as f:
                    os.fsync(f.fileno())
        os.chmod(tmp, 0o755)
        old = path.parent / f".{path.name}.{uuid.uuid4().hex}.old"
        if path.exists():
            os.replace(path, old)
        try:
            os.replace(tmp, path)
        except OSError:
            if old.exists():
                os.replace(old, path)
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    _sync_folder(path.parent)


def _sync_folder(folder: Path) -> None:
    """Flush a folder's entries (the rename) to disk where the system allows it (not on Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- appending to logs
@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    """An exclusive lock between processes (``flock`` on a lock file; ``msvcrt`` on Windows)."""
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, FILE_MODE)
    try:
        try:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX)
        except ImportError:  # Windows
            import msvcrt

            msvcrt.locking(fd, msvcrt.LK_LOCK, 1)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def append_line(path: str | Path, line: str, max_bytes: int, backups: int) -> None:
    """Append ``line`` and a newline to the log ``path`` in one ``write`` under an exclusive lock, so that
    lines from several processes never interleave. When the line would take the file past ``max_bytes``,
    the log is rotated first (``path`` -> ``path.1`` -> ... -> ``path.<backups>``; the oldest is deleted)."""
    path = Path(path)
    data = (line.rstrip("\n") + "\n").encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path.with_name(f".{path.name}.lock")):
        size = path.stat().st_size if path.exists() else 0
        if size and size + len(data) > max_bytes:
            _rotate(path, backups)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)
        try:
            written = 0
            while written < len(data):  # a regular file takes it in one write; the loop is for the rare short one
                written += os.write(fd, data[written:])
        finally:
            os.close(fd)


def _rotate(path: Path, backups: int) -> None:
    """``path`` -> ``path.1``, ``path.1`` -> ``path.2``, ...; ``path.<backups>`` is deleted."""
    name = lambda n: path.with_name(f"{path.name}.{n}")  # noqa: E731
    name(backups).unlink(missing_ok=True)
    for n in range(backups - 1, 0, -1):
        if name(n).exists():
            os.replace(name(n), name(n + 1))
    if backups > 0:
        os.replace(path, name(1))
    else:
        path.unlink()
