"""Colab, simulated offline: a fake ``google.colab``, HOME and /content in a temporary folder, the clone taken
from this checkout, and notebook 03 opened alone on an empty artifacts folder by papermill, its package
imported in the cell right after the install cell without a restart."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import nbformat
import pytest

from shopbot_utils import colab, config
from shopbot_utils.report import COLAB_MARK, SMALL_PARAMETERS, notebook_parameters

ROOT = Path(__file__).resolve().parent.parent

FAKE_COLAB = '''"""A stand-in for Colab's own module: what the notebooks touch."""
from types import SimpleNamespace

mounted = []
drive = SimpleNamespace(mount=lambda where, **kwargs: mounted.append(where))
'''


def test_use_drive_mounts_drive_and_keeps_artifacts_and_downloads_there(monkeypatch, tmp_path, capsys):
    mounted = []
    fake = types.ModuleType("google.colab")
    fake.drive = types.SimpleNamespace(mount=mounted.append)
    monkeypatch.setitem(sys.modules, "google.colab", fake)
    for var in ("SHOPBOT_ARTIFACTS", "SHOPBOT_DOWNLOADS"):
        monkeypatch.delenv(var, raising=False)
    folders = colab.use_drive(False)
    assert mounted == [] and folders["artifacts"] == config.artifacts_dir() and "set DRIVE = True" in capsys.readouterr().out
    folders = colab.use_drive(True, mount_point=str(tmp_path / "drive"))
    assert mounted == [str(tmp_path / "drive")]
    assert folders == {"artifacts": tmp_path / "drive/MyDrive/shopbot/artifacts",
                       "downloads": tmp_path / "drive/MyDrive/shopbot/downloads"}
    assert config.artifacts_dir() == folders["artifacts"] and "on Google Drive" in capsys.readouterr().out


def _colab_python(tmp_path: Path) -> Path:
    """A Python like Colab's: its own site-packages (where pip installs), with this environment's packages
    preinstalled and visible (a .pth line), so that nothing is downloaded and this environment is not touched."""
    venv = tmp_path / "colab-python"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next(venv.glob("lib/python*/site-packages"))
    (site / "colab_preinstalled.pth").write_text(
        "\n".join(p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()) + "\n")
    return venv / "bin" / "python"


def test_a_notebook_opened_alone_on_colab_installs_and_runs_without_a_restart(tmp_path, monkeypatch, catalogue_source):
    url = config.repository_url()
    content, home = tmp_path / "content", tmp_path / "root"
    content.mkdir(), home.mkdir()
    # git clone of the repository URL takes this checkout (its committed state), as a fresh clone would.
    (home / ".gitconfig").write_text(f'[url "file://{ROOT}"]\n\tinsteadOf = {url}\n')
    fake = tmp_path / "fake-colab"
    (fake / "google" / "colab").mkdir(parents=True)  # google/ stays a namespace package (protobuf lives there too)
    (fake / "google" / "colab" / "__init__.py").write_text(FAKE_COLAB)
    (fake / "sitecustomize.py").write_text("import google.colab  # in sys.modules from the start, as on Colab\n")
    python = _colab_python(tmp_path)
    kernels = tmp_path / "jupyter" / "kernels" / "colab"
    kernels.mkdir(parents=True)
    (kernels / "kernel.json").write_text(json.dumps({
        "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Colab (simulated)", "language": "python"}))
    for var in ("SHOPBOT_ARTIFACTS", "SHOPBOT_FIGURES", "SHOPBOT_CACHE", "SHOPBOT_DOWNLOADS", "VIRTUAL_ENV"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("PYTHONPATH", str(fake))  # never this checkout: the kernel must import the clone
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("SHOPBOT_DATA", str(catalogue_source))  # Colab's kagglehub download, offline
    monkeypatch.setenv("SHOPBOT_PROGRESS", "off")
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # everything is preinstalled; pip must not reach for the network
    monkeypatch.setenv("PIP_NO_BUILD_ISOLATION", "0")  # (pip reads this as --no-build-isolation)
    shared_site = [p for p in sys.path if p.endswith("site-packages")]
    before = {p: sorted(os.listdir(p)) for p in shared_site if Path(p).is_dir()}

    source = nbformat.read(ROOT / "notebooks" / "03_embeddings.ipynb", as_version=4)
    cell = next(c for c in source.cells if c.cell_type == "code" and COLAB_MARK in c.source)
    cell.source = cell.source.replace("/content", str(content))  # Colab's /content, here in tmp_path
    notebook = content / "03_embeddings.ipynb"
    nbformat.write(source, notebook)
    import papermill as pm

    pm.execute_notebook(str(notebook), str(tmp_path / "executed.ipynb"), kernel_name="colab", cwd=str(content),
                        parameters=notebook_parameters(notebook, SMALL_PARAMETERS), progress_bar=False)

    run = nbformat.read(tmp_path / "executed.ipynb", as_version=4)
    cells = [c for c in run.cells if c.cell_type == "code" and "injected-parameters" not in c.metadata.get("tags", [])]
    i = next(i for i, c in enumerate(cells) if COLAB_MARK in c.source)
    said = "".join(o.get("text", "") for o in cells[i].outputs)
    clone = content / "shopbot"
    assert f"installed from {clone} (editable)" in said and "no restart needed" in said
    assert "kept torch" in said and "artifacts: " in said
    prerequisites = "".join(o.get("text", "") for o in cells[i + 1].outputs)  # the first import of the package
    assert "building split.csv (missing" in prerequisites and "training model.pth (missing" in prerequisites
    # The kernel ran the clone's package: its default artifacts folder is the clone's.
    assert (clone / "artifacts" / "embeddings.npz").is_file() and (clone / "artifacts" / "model.pth").is_file()
    learned = next(i for i, c in enumerate(run.cells) if c.cell_type == "markdown" and "What we learned" in c.source)
    assert run.cells[learned + 1].outputs and "Exercises" in run.cells[-1].source  # it ran to the end
    assert {p: sorted(os.listdir(p)) for p in before} == before  # pip installed into the "Colab" Python only
