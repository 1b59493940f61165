"""What every saved artifact shares: its error type and the checks made before reading it."""
from __future__ import annotations

import json
from pathlib import Path

from . import __version__


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
