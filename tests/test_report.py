"""The notebooks as the report: scrubbing for `make report`, the golden notebooks that nbval re-runs,
the Colab cells, and the package's one-way layering."""
from __future__ import annotations

import base64
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from PIL import Image

from shopbot_utils import config
from shopbot_utils.report import (CHECK_MARK, GOLDEN_DIR, SMALL_PARAMETERS, golden_environment, notebook_parameters,
                                  scrub_notebook, write_report)

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))


def _png(width: int, height: int) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _executed_notebook() -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                   "language_info": {"name": "python", "version": "3.11.7"},
                   "papermill": {"start_time": "2026-12-03T06:00:00", "input_path": f"{ROOT}/notebooks/x.ipynb"}}
    cell = nbformat.v4.new_code_cell("print(where)")
    cell.metadata = {"tags": ["parameters"], "execution": {"iopub.execute_input": "2026-12-03T06:00:01"},
                     "papermill": {"duration": 1.5}}
    cell.outputs = [
        nbformat.v4.new_output("stream", name="stdout", text=f"saved {ROOT}/figures/a.png at <object at 0x7f12ab34cd56>\n"),
        nbformat.v4.new_output("stream", name="stderr", text="embedding:  40%|####      | 4/10 [00:02<00:03]\r"),
        nbformat.v4.new_output("display_data", data={"image/png": _png(2400, 1200), "text/plain": "<Figure>"}),
        nbformat.v4.new_output("display_data", data={"application/vnd.jupyter.widget-view+json": {"model_id": "abc"},
                                                     "text/plain": "VBox()"}),
    ]
    nb.cells = [cell, nbformat.v4.new_markdown_cell("## What we learned")]
    return nb


def test_scrubbing_keeps_results_and_drops_what_varies():
    nb = scrub_notebook(_executed_notebook())
    assert set(nb.metadata) == {"kernelspec", "language_info"} and "version" not in nb.metadata.language_info
    cell = nb.cells[0]
    assert cell.metadata == {"tags": ["parameters"]}
    text = json.dumps(nb)
    assert str(ROOT) not in text and "0x7f12ab34cd56" not in text and "2026-12-03" not in text
    assert cell.outputs[0].text == "saved ./figures/a.png at <object at 0x...>\n"
    assert [o.output_type for o in cell.outputs] == ["stream", "display_data"]  # no progress bar, no widget
    figure = Image.open(io.BytesIO(base64.b64decode(cell.outputs[1].data["image/png"])))
    assert figure.width == 1000 and figure.height == 500
    again = scrub_notebook(nbformat.from_dict(json.loads(json.dumps(nb))))
    assert json.dumps(again, sort_keys=True) == json.dumps(nb, sort_keys=True)  # a re-run changes nothing


def test_report_refuses_a_run_of_another_version(tmp_path):
    executed, sources = tmp_path / "executed", tmp_path / "notebooks"
    executed.mkdir(), sources.mkdir()
    nb = _executed_notebook()
    nbformat.write(nb, executed / "01_x.ipynb")
    edited = _executed_notebook()
    edited.cells[0].source = "print(where, 'edited since the run')"
    nbformat.write(edited, sources / "01_x.ipynb")
    with pytest.raises(ValueError, match="another version"):
        write_report(executed, sources)
    nbformat.write(_executed_notebook(), sources / "01_x.ipynb")
    assert write_report(executed, sources) == [sources / "01_x.ipynb"]
    assert nbformat.read(sources / "01_x.ipynb", as_version=4).cells[0].outputs  # outputs copied back


def test_committed_notebooks_carry_outputs_and_golden_ones_match_them():
    n_checked = 0
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert "parameters" in code[0].metadata.get("tags", []), path.name
        assert "What we learned" in nb.cells[-2].source and "learned(" in nb.cells[-1].source, path.name
        golden = GOLDEN_DIR / path.name
        assert golden.is_file(), f"{golden} is missing: run `make golden`"
        gold = nbformat.read(golden, as_version=4)
        sources = [c.source for c in gold.cells if "injected-parameters" not in c.metadata.get("tags", [])]
        assert sources == [c.source for c in nb.cells], f"{golden} is older than {path}: run `make golden`"
        checked = [c for c in gold.cells if CHECK_MARK in c.source]
        n_checked += len(checked)
        assert all(c.outputs for c in checked), path.name
        assert sum(len(c.get("outputs", [])) for c in gold.cells) == sum(len(c.outputs) for c in checked)  # light
    assert n_checked >= 10  # 08 (the chat) has none: its turns are checked by test_chat and the browser test
    assert sum(len(c.outputs) > 0 for p in NOTEBOOKS for c in nbformat.read(p, as_version=4).cells
               if c.cell_type == "code") > 40  # the report: make run's outputs are committed


def test_small_parameters_only_name_what_a_notebook_has():
    params = notebook_parameters(ROOT / "notebooks" / "02_fine_tuning.ipynb")
    assert params == {"epochs": 1}
    assert set(notebook_parameters(ROOT / "notebooks" / "04_lsh_index.ipynb")) <= set(SMALL_PARAMETERS)


@pytest.fixture()
def changed_split(tmp_path):
    """A sitecustomize that changes one behaviour in the kernel: the test share of the split, 0.2 -> 0.5."""
    patch = tmp_path / "patch"
    patch.mkdir()
    (patch / "sitecustomize.py").write_text(
        "import shopbot_utils.data as d\n"
        "_make_split = d.make_split\n"
        "def make_split(styles, n_classes=d.config.N_CLASSES, valid=0.1, test=0.2, per_class=None, seed=d.config.SEED):\n"
        "    return _make_split(styles, n_classes, valid, 0.5, per_class, seed)\n"
        "d.make_split = make_split\n")
    return patch


def test_nbval_fails_when_a_checked_behaviour_changes(tmp_path, changed_split, catalogue_source):
    """The golden 01 notebook re-run with the split changed: nbval names the split-sizes cell."""
    golden = tmp_path / "01_data.ipynb"
    golden.write_bytes((GOLDEN_DIR / "01_data.ipynb").read_bytes())
    env = {**os.environ, **golden_environment(tmp_path / "work"), "SHOPBOT_DATA": str(catalogue_source),
           "PYTHONPATH": str(changed_split)}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
                          "--nbval-lax", "--nbval-current-env", "--nbval-sanitize-with",
                          str(GOLDEN_DIR / "sanitize.cfg"), str(golden)],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    out = run.stdout + run.stderr
    assert run.returncode == 1, out[-3000:]
    assert re.search(r"1 failed, \d+ passed", out), out[-3000:]
    assert "split.groupby('split').size()" in out and "mismatch" in out.lower()


# ----------------------------------------------------------------------------- Colab
COLAB_CELL = ("if \"google.colab\" in sys.modules:", "!git clone -q --depth 1 https://github.com/shopbot-course/shopbot /content/shopbot",
              "!pip -q install -e /content/shopbot", "%cd /content/shopbot/notebooks")


def test_every_notebook_has_the_same_working_colab_cell():
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        badge = re.search(r"colab\.research\.google\.com/github/([\w-]+/[\w-]+)/blob/main/notebooks/([\w.]+)",
                          nb.cells[0].source)
        assert badge and badge.group(2) == path.name, path.name  # the badge opens this notebook
        cell = nb.cells[2].source
        assert all(line in cell for line in COLAB_CELL), path.name
        assert f"https://github.com/{badge.group(1)} " in cell  # the clone is the badge's repository
        assert "kagglehub" in cell and "KAGGLE_USERNAME" in cell, path.name  # how the catalogue arrives
    # What `pip install -e` reads on Colab: the package's own dependencies, with Colab's torch kept.
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'"torch>=', pyproject) and "kagglehub" in pyproject and "==" not in pyproject.split("dependencies")[1].split("]")[0]


def test_auto_mode_fine_tunes_the_whole_network_on_a_gpu(monkeypatch):
    import torch

    from shopbot_utils.pipeline import resolve_mode

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_mode("auto") == "full"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_mode("auto") == "cpu" and resolve_mode("full") == "full"


def _imports(module: str) -> set[str]:
    """The package modules ``shopbot_utils/<module>.py`` imports (relative imports, anywhere in the file)."""
    import ast

    tree = ast.parse((ROOT / "shopbot_utils" / f"{module}.py").read_text())
    return {node.module.split(".")[0] for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module}


def test_data_flows_one_way():
    """data -> vision -> embed -> index/search -> background -> chat; measuring code on top. Each layer
    imports only the layers below it (no cycle such as background -> pipeline -> bot -> background)."""
    layers = [{"config", "artifacts"}, {"data", "text", "sentence", "duplicates"}, {"vision"}, {"embed"}, {"index", "evaluate"},
              {"search"}, {"intents", "milvus"}, {"background"}, {"bot"}, {"chat", "widgets"}]
    registry = {("index", "milvus")}  # index_class() finds the engine-backed kind by name, on first use
    below: set[str] = set()
    for layer in layers:
        for module in layer:
            upward = {m for m in _imports(module) - below - layer if (module, m) not in registry}
            assert not upward, (module, upward)
        below |= layer
    assert not _imports("background") & {"background_bench", "evaluate", "pipeline", "bot"}
