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
from shopbot_utils.report import (CHECK_MARK, GOLDEN_DIR, KERNELSPEC, README, RESULTS_FILE, RESULTS_MIME,
                                  SMALL_PARAMETERS, collect_results, golden_environment, notebook_parameters,
                                  render_readme, results, scrub_notebook, typed_figures, write_report)

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
    site_packages = next(p for p in sys.path if p.endswith("site-packages"))
    cell.outputs = [
        nbformat.v4.new_output("stream", name="stdout", text=f"saved {ROOT}/figures/a.png at <object at 0x7f12ab34cd56>\n"),
        nbformat.v4.new_output("stream", name="stderr", text="embedding:  40%|####      | 4/10 [00:02<00:03]\r"),
        nbformat.v4.new_output("stream", name="stderr", text="\n"),
        nbformat.v4.new_output("stream", name="stdout", text="█\repoch     train_loss\n█\r\rEpoch 1/3 : |------| 0.00% [0/386 00:00<?]"
                                                           "\rEpoch 1/3 : |█-----| 0.26% [1/386 00:00<02:56]\r"),
        nbformat.v4.new_output("stream", name="stdout", text="\r" + " " * 40 + "\r"),
        nbformat.v4.new_output("stream", name="stdout", text="0         1.141296\n"),
        nbformat.v4.new_output("stream", name="stderr", text=f"{site_packages}/fastai/learner.py:12: UserWarning: x\n"),
        nbformat.v4.new_output("stream", name="stdout", text=f"data in {config.SHARED}/nlp/bitext.csv\n"),
        nbformat.v4.new_output("display_data", data={"image/png": _png(2400, 1200), "text/plain": "<Figure>"}),
        nbformat.v4.new_output("display_data", data={"application/vnd.jupyter.widget-view+json": {"model_id": "abc"},
                                                     "text/plain": "VBox()"}),
    ]
    nb.cells = [cell, nbformat.v4.new_markdown_cell("## What we learned")]
    return nb


def test_scrubbing_keeps_results_and_drops_what_varies():
    nb = scrub_notebook(_executed_notebook())
    assert set(nb.metadata) == {"kernelspec", "language_info"} and "version" not in nb.metadata.language_info
    assert nb.metadata.kernelspec == KERNELSPEC  # run on "python3", committed naming the project's kernel
    cell = nb.cells[0]
    assert cell.metadata == {"tags": ["parameters"]}
    text = json.dumps(nb)
    assert str(ROOT) not in text and "0x7f12ab34cd56" not in text and "2026-12-03" not in text
    # Consecutive streams merged, carriage returns resolved, progress bars and blank output gone.
    assert cell.outputs[0].text == "saved ./figures/a.png at <object at 0x...>\nepoch     train_loss\n0         1.141296\n"
    assert cell.outputs[1].text == "<site-packages>/fastai/learner.py:12: UserWarning: x\n"
    assert cell.outputs[2].text == "data in <shared>/nlp/bitext.csv\n"
    assert [o.output_type for o in cell.outputs] == ["stream", "stream", "stream", "display_data"]  # no widget
    figure = Image.open(io.BytesIO(base64.b64decode(cell.outputs[3].data["image/png"])))
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
        ending = [c.source.splitlines()[0] if c.cell_type == "markdown" else c.source for c in nb.cells[-4:]]
        assert ending[0].startswith("## What we learned") and "learned(" in ending[1], path.name
        assert ending[2].startswith("## Questions") and ending[3].startswith("## Exercises"), path.name
        golden = GOLDEN_DIR / path.name
        assert golden.is_file(), f"{golden} is missing: run `make golden`"
        gold = nbformat.read(golden, as_version=4)
        sources = [c.source for c in gold.cells if "injected-parameters" not in c.metadata.get("tags", [])]
        assert sources == [c.source for c in nb.cells], f"{golden} is older than {path}: run `make golden`"
        checked = [c for c in gold.cells if c.cell_type == "code" and CHECK_MARK in c.source]
        n_checked += len(checked)
        assert all(c.outputs for c in checked), path.name
        assert sum(len(c.get("outputs", [])) for c in gold.cells) == sum(len(c.outputs) for c in checked)  # light
    assert n_checked >= 10  # 08 (the chat) has none: its turns are checked by test_chat and the browser test
    assert sum(len(c.outputs) > 0 for p in NOTEBOOKS for c in nbformat.read(p, as_version=4).cells
               if c.cell_type == "code") > 40  # the report: make run's outputs are committed


def test_questions_and_exercises_close_every_notebook():
    """fastbook's questionnaire and d2l's exercises: 6-10 questions, 2-3 exercises, each exercise with
    a way to check yourself."""
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        questions, exercises = nb.cells[-2].source, nb.cells[-1].source
        n_questions = len(re.findall(r"^\d+\.\s", questions, re.M))
        n_exercises = len(re.findall(r"^\d+\.\s", exercises, re.M))
        assert 6 <= n_questions <= 10, (path.name, n_questions)
        assert 2 <= n_exercises <= 3, (path.name, n_exercises)
        assert exercises.count("Check yourself") >= n_exercises, path.name


def test_no_measured_figure_is_typed_into_a_notebooks_prose():
    """Numbers reach the reader from the run: Markdown cells hold no measured-looking figure
    (decimals, percentages, durations) beyond report.TYPED_FIGURES_ALLOWED."""
    typed = {}
    for path in NOTEBOOKS:
        for i, cell in enumerate(nbformat.read(path, as_version=4).cells):
            if cell.cell_type == "markdown" and typed_figures(cell.source):
                typed[f"{path.name} cell {i}"] = typed_figures(cell.source)
    assert not typed, typed


def test_typed_figures_finds_measurements_and_skips_code_math_and_the_posters_claims():
    text = ("Accuracy 0.928, 12 ms a query, 3.5 min in all, 45% faster. The poster reports 96.85% and 0.04 s. "
            "`lr = 2e-3`, `threshold = 0.35`, $P = 1 - \\theta/\\pi$, a [link](https://x.org/v1.2) and 60x80 px images.")
    assert typed_figures(text) == ["0.928", "12 ms", "3.5 min", "45%"]


IN_HOUSE = re.compile(r"\bthe (?:[\w-]+ )?issue\b|\bfoundation\b|closing note|\bthe issue allows\b", re.I)


def test_no_in_house_words_in_the_course():
    """Words a student cannot know: our issues, our history."""
    found = {}
    for path in [*NOTEBOOKS, README]:
        cells = nbformat.read(path, as_version=4).cells if path.suffix == ".ipynb" else [nbformat.v4.new_markdown_cell(path.read_text())]
        for i, cell in enumerate(cells):
            hits = IN_HOUSE.findall(cell.source)
            if hits:
                found[f"{path.name} cell {i}"] = hits
    assert not found, found


def test_committed_notebooks_are_light_and_carry_no_machine_paths():
    """What make report keeps: fewer than 50 outputs a notebook, no empty output, no absolute path of
    the machine that ran it (home, the shared data folder, site-packages)."""
    home = str(Path.home())
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
        assert len(outputs) < 50, (path.name, len(outputs))
        assert not [o for o in outputs if o.output_type == "stream" and not o.text.strip()], path.name
        text = json.dumps([o for o in outputs if o.output_type != "display_data" or "image/png" not in o.get("data", {})])
        for folder in (home + "/", str(ROOT) + "/", "site-packages", str(config.SHARED) + "/", "/work/"):
            assert folder not in text, (path.name, folder)


def test_every_notebook_is_valid_for_its_nbformat_version():
    """Jupyter, Voila and the website's builder validate a notebook; cell ids need nbformat 4.5."""
    for path in NOTEBOOKS + sorted((ROOT / "app").glob("*.ipynb")):
        nbformat.validate(nbformat.read(path, as_version=4))


# ----------------------------------------------------------------------------- results -> README
def _results_notebook(key: str, value: float) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    shown = results(key, "A table", [{"index": "exact", "p50_ms": value}], formats={"p50_ms": ".2f"},
                    values={"p50": f"{value:.2f} ms"})
    cell = nbformat.v4.new_code_cell("results(...)")
    bundle = shown._repr_mimebundle_()
    cell.outputs = [nbformat.v4.new_output("execute_result", data=bundle, execution_count=1)]
    nb.cells = [cell]
    return nb


def test_results_go_from_the_notebook_to_the_readme(tmp_path):
    nbformat.write(_results_notebook("index", 2.4913), tmp_path / "04_x.ipynb")
    found = collect_results([tmp_path / "04_x.ipynb"])
    assert found["index"]["rows"] == [["exact", "2.49"]] and found["index"]["source"] == "notebook 04"
    assert {"date", "machine", "load"} <= set(found["index"]["run"])
    readme = ("Exact search takes <!-- value: index.p50 -->old<!-- /value --> a query.\n\n"
              "<!-- results: index -->\nold table\n<!-- /results -->\n")
    out = render_readme(readme, found)
    assert "takes <!-- value: index.p50 -->2.49 ms<!-- /value --> a query" in out
    assert "| exact | 2.49 |" in out and "notebook 04, run of" in out and "old table" not in out
    assert render_readme(out, found) == out  # filling twice changes nothing
    with pytest.raises(KeyError, match="vision"):
        render_readme("<!-- results: vision -->\nx\n<!-- /results -->", found)
    # an empty block (a new README's) fills in place and leaves the next block to its own key
    nbformat.write(_results_notebook("scale", 7.5), tmp_path / "05_s.ipynb")
    both = collect_results([tmp_path / "04_x.ipynb", tmp_path / "05_s.ipynb"])
    out = render_readme("<!-- results: index -->\n<!-- /results -->\n\n<!-- results: scale -->\n<!-- /results -->\n", both)
    assert out.count("<!-- /results -->") == 2 and out.index("| exact | 2.49 |") < out.index("<!-- results: scale -->")
    assert "| exact | 7.50 |" in out.split("<!-- results: scale -->")[1]
    nbformat.write(_results_notebook("index", 1.0), tmp_path / "05_y.ipynb")
    with pytest.raises(ValueError, match="twice"):
        collect_results([tmp_path / "04_x.ipynb", tmp_path / "05_y.ipynb"])


def test_readme_and_results_file_agree_with_the_committed_notebooks():
    """docs/results.json is what the committed notebooks print, and the README's tables and quoted
    figures are filled from it (make report writes both): the three cannot drift apart."""
    committed = json.loads(RESULTS_FILE.read_text())
    assert committed == collect_results(NOTEBOOKS), "docs/results.json is stale: run `make report`"
    readme = README.read_text()
    assert render_readme(readme, committed) == readme, "README.md is stale: run `make report`"
    assert readme.count("<!-- results: ") >= 4 and readme.count("<!-- value: ") >= 4


def test_small_parameters_only_name_what_a_notebook_has():
    params = notebook_parameters(ROOT / "notebooks" / "02_fine_tuning.ipynb")
    assert params == {"epochs": 1, "per_class": 4}  # per_class: the split it builds when opened alone
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
    """The golden 01 notebook re-run with the split changed: nbval names the split-sizes cell (and the
    from-scratch split, which now disagrees with make_split)."""
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
    assert re.search(r"[12] failed, \d+ passed", out), out[-3000:]  # the split sizes (and the from-scratch split check)
    assert "split.groupby('split').size()" in out and "mismatch" in out.lower()


# ----------------------------------------------------------------------------- Colab
GOLDEN = sorted(GOLDEN_DIR.glob("[0-9]*.ipynb"))


def test_every_notebook_takes_its_badge_and_colab_cell_from_the_one_repository_url():
    """pyproject's [project.urls] Repository is the one place: every badge, clone line and prerequisites cell
    is what `make colab` writes from it (a notebook edited by hand fails here)."""
    from shopbot_utils.report import COLAB_MARK, NOTEBOOK_STAGES, sync_notebook

    url = config.repository_url()
    assert re.search(rf'^\[project\.urls\]\nRepository = "{re.escape(url)}"$', (ROOT / "pyproject.toml").read_text(), re.M)
    for path in NOTEBOOKS + GOLDEN:
        nb = nbformat.read(path, as_version=4)
        assert not sync_notebook(nb, path.name, url), f"{path}: run `make colab`"
        badge = re.search(r"colab\.research\.google\.com/github/([\w-]+/[\w-]+)/blob/main/notebooks/([\w.]+)", nb.cells[0].source)
        assert badge and badge.group(2) == path.name and url.endswith(badge.group(1)), path.name
        cells = [c.source for c in nb.cells if c.cell_type == "code"]
        colab = next(i for i, c in enumerate(cells) if COLAB_MARK in c)
        assert f"git clone -q --depth 1 {url} /content/shopbot" in cells[colab] and "pip -q install -e" not in cells[colab]
        assert 'sys.path.insert(0, "/content/shopbot")' in cells[colab] and "kagglehub" in cells[colab]
        number = path.name.split("_")[0]
        if number in NOTEBOOK_STAGES:  # the next cell imports the package (no restart) and builds what is missing
            assert f"prerequisites({NOTEBOOK_STAGES[number][0]!r}, artifacts" in cells[colab + 1], path.name
    readme = (ROOT / "README.md").read_text()
    assert set(re.findall(r"https://github\.com/[\w-]+/[\w-]+(?=[/ )\]`\s])", readme)) <= {url}
    # What pip reads on Colab: the package's own dependencies as ranges, so that Colab's torch is kept.
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'"torch>=', pyproject) and "kagglehub" in pyproject and "==" not in pyproject.split("dependencies")[1].split("]")[0]


def test_a_fork_changes_one_line_and_make_colab_rewrites_every_badge_and_clone_line():
    from shopbot_utils.pipeline import NEEDS
    from shopbot_utils.report import NOTEBOOK_STAGES, sync_notebook

    assert {stage for stage, _ in NOTEBOOK_STAGES.values()} == set(NEEDS)
    fork = "https://github.com/a-student/shopbot-fork"
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        assert sync_notebook(nb, path.name, fork)
        text = json.dumps(nb)
        assert "shopbot-course" not in text and text.count("a-student/shopbot-fork") == 2  # the badge and the clone line
        assert not sync_notebook(nb, path.name, fork)  # idempotent


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
    layers = [{"config", "artifacts", "downloads", "colab"}, {"data", "text", "sentence", "duplicates"}, {"vision"},
              {"embed"}, {"index", "evaluate"}, {"search"}, {"intents", "milvus"}, {"background"}, {"bot"}, {"chat", "widgets"},
              {"client", "serve"}]
    registry = {("index", "milvus")}  # index_class() finds the engine-backed kind by name, on first use
    below: set[str] = set()
    for layer in layers:
        for module in layer:
            upward = {m for m in _imports(module) - below - layer if (module, m) not in registry}
            assert not upward, (module, upward)
        below |= layer
    assert not _imports("background") & {"background_bench", "evaluate", "pipeline", "bot"}
