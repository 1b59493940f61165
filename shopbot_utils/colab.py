"""Google Colab: install the course into the running kernel (no restart) and keep its files on Google Drive.

Every notebook's Colab cell clones the repository, then runs this file as a script,
``python shopbot_utils/colab.py``, before the package's dependencies are installed: so it imports
nothing but the standard library at the top. It pip-installs the clone (editable, so that new kernels
and ``python -m shopbot_utils`` find it) with Colab's own torch, torchvision and torchaudio pinned as
they are, and says what it installed. The cell then puts the clone on ``sys.path``: an editable
install is registered by a ``.pth`` file that Python reads only at start-up, which is why the old
cell needed a restart (colabtools issue 1171).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: Colab's own CUDA builds: pip is told to keep them exactly as they are.
KEEP = ("torch", "torchvision", "torchaudio")
#: Where ``use_drive`` keeps the artifacts and the downloads, under the mounted Drive.
DRIVE_FOLDER = "MyDrive/shopbot"


def _installed() -> dict[str, str]:
    """``{name: version}`` of what pip sees installed."""
    out = subprocess.run([sys.executable, "-m", "pip", "list", "--format=json", "--disable-pip-version-check"],
                         capture_output=True, text=True, check=True).stdout
    return {d["name"].lower().replace("_", "-"): d["version"] for d in json.loads(out)}


def install(root: str | Path = ROOT) -> str:
    """``pip install -e root`` with the installed torch, torchvision and torchaudio pinned; returns what it did."""
    root = Path(root)
    before = _installed()
    kept = {name: before[name] for name in KEEP if name in before}
    with tempfile.TemporaryDirectory() as tmp:
        constraints = Path(tmp) / "keep.txt"
        constraints.write_text("".join(f"{name}=={version}\n" for name, version in kept.items()))
        run = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                              "-e", str(root), "-c", str(constraints)])
    if run.returncode:
        raise SystemExit(f"pip could not install {root} (exit status {run.returncode}): see its message above")
    after = _installed()
    added = sorted(n for n in after if n not in before and n != "shopbot-utils")
    changed = sorted(n for n in after if n in before and after[n] != before[n] and n != "shopbot-utils")
    lines = [f"shopbot-utils {after.get('shopbot-utils', '?')} installed from {root} (editable); "
             f"this kernel imports it from {root} as soon as the next line of the cell puts it on sys.path: "
             "no restart needed"]
    lines.append(f"added {len(added)} packages: " + ", ".join(f"{n} {after[n]}" for n in added) if added
                 else "added no packages: every dependency was already installed")
    if changed:
        lines.append("changed: " + ", ".join(f"{n} {before[n]} -> {after[n]}" for n in changed)
                     + " (a module this kernel imported before this cell keeps its old version until Runtime > "
                       "Restart session)")
    lines.append("kept " + (", ".join(f"{n} {v}" for n, v in kept.items()) + " (this runtime's own)" if kept
                            else "no torch: pip installed it"))
    return "\n".join(lines)


def use_drive(enabled: bool, mount_point: str = "/content/drive") -> dict[str, Path]:
    """With ``enabled``: mount Google Drive and keep artifacts and downloads in ``MyDrive/shopbot`` (sets
    ``SHOPBOT_ARTIFACTS`` and ``SHOPBOT_DOWNLOADS``), so that a later session resumes; prints where they go."""
    from . import config

    if enabled:
        from google.colab import drive

        drive.mount(mount_point)
        base = Path(mount_point) / DRIVE_FOLDER
        os.environ["SHOPBOT_ARTIFACTS"] = str(base / "artifacts")
        os.environ["SHOPBOT_DOWNLOADS"] = str(base / "downloads")
    folders = {"artifacts": config.artifacts_dir(), "downloads": config.downloads_dir()}
    where = "on Google Drive: a later session resumes from them" if enabled else \
        "in this runtime only (set DRIVE = True to keep them on Google Drive)"
    print(f"artifacts: {folders['artifacts']}; downloads: {folders['downloads']} ({where})")
    return folders


if __name__ == "__main__":
    print(install(sys.argv[1] if len(sys.argv) > 1 else ROOT))
