"""``pipeline.prerequisites``: a notebook opened alone builds what it reads, saying what and why; in
``make run`` order nothing is built twice. The slow test runs notebooks 02 and 04-08 each alone on an empty
artifacts folder (03 runs alone in the Colab simulation, tests/test_colab.py)."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import nbformat
import pytest

from shopbot_utils import pipeline
from shopbot_utils.pipeline import NEEDS, prerequisites
from shopbot_utils.report import SMALL_PARAMETERS, notebook_parameters

ROOT = Path(__file__).resolve().parent.parent
BUILDERS = ("prepare_data", "train_model", "embed_catalogue", "index_catalogue", "build_text_search")


@pytest.fixture()
def built(tmp_path, chat_artifacts):
    """A complete artifacts folder, as `make run` leaves it (the chat's, plus notebook 04's index)."""
    folder = tmp_path / "artifacts"
    shutil.copytree(chat_artifacts, folder)
    pipeline.index_catalogue(folder)
    return folder


@pytest.fixture()
def calls(monkeypatch):
    """Record the builders prerequisites would call, instead of running them."""
    made: list[str] = []
    for name in BUILDERS:
        monkeypatch.setattr(pipeline, name, lambda *a, _name=name, **k: made.append(_name))
    monkeypatch.setattr(pipeline, "load_catalogue", lambda *a, **k: "the catalogue")
    monkeypatch.setattr(pipeline, "load_split", lambda *a, **k: "the split")
    import shopbot_utils.intents as intents

    monkeypatch.setattr(intents, "build_intents", lambda *a, **k: made.append("build_intents"))
    return made


def test_in_make_run_order_nothing_is_rebuilt(built, calls):
    for stage in NEEDS:
        said = []
        assert prerequisites(stage, built, report=said.append) == [], stage
        assert len(said) == 1 and "nothing rebuilt" in said[0]
    assert calls == []


def test_a_missing_model_is_trained_and_what_is_made_from_it_rebuilt(built, calls):
    (built / "model.pth").unlink()
    lines = prerequisites("evaluation", built, per_class=4, report=lambda line: None)
    assert calls == ["train_model", "embed_catalogue", "index_catalogue"]
    assert "training model.pth (missing; notebook 02 trains it)" in lines[0]
    assert "(model.pth was rebuilt; notebook 03 makes them)" in lines[1]
    assert "(embeddings.npz and products.csv was rebuilt; notebook 04 builds it)" in lines[2]


def test_stale_artifacts_are_rebuilt_with_the_reason(built, calls):
    meta = json.loads((built / "model.json").read_text())
    meta["weights_sha256"] = "0" * 64  # notebook 02 trained again after 03 embedded
    (built / "model.json").write_text(json.dumps(meta))
    lines = prerequisites("text_search", built, report=lambda line: None)
    assert calls == ["embed_catalogue"] and "computed with another model than model.pth" in lines[0]
    (built / "split.csv").unlink()
    calls.clear()
    lines = prerequisites("index", built, per_class=4, report=lambda line: None)
    assert calls == ["prepare_data", "train_model", "embed_catalogue"]
    assert "at most 4 products per class" in lines[0]


def test_a_serving_kernel_builds_and_downloads_nothing(built, calls, monkeypatch, tmp_path):
    """Voila's `make demo` runs notebook 08 for shoppers: what is missing is an error, never a build."""
    from shopbot_utils.artifacts import ArtifactError

    monkeypatch.setenv("VOILA_KERNEL_ID", "a-kernel")
    said = []
    assert prerequisites("chat", built, report=said.append) == [] and said == []
    with pytest.raises(ArtifactError, match=r"split\.csv \(missing; notebook 01 makes it\).*intents/.*make run"):
        prerequisites("chat", tmp_path / "empty", report=said.append)
    assert calls == [] and said == []


def test_bad_arguments_fail_early(tmp_path):
    with pytest.raises(ValueError, match="unknown stage 'training'"):
        prerequisites("training", tmp_path)
    with pytest.raises(ValueError, match="per_class must be"):
        prerequisites("index", tmp_path, per_class=0)


def _run_alone(notebook: Path, work: Path) -> nbformat.NotebookNode:
    import papermill as pm

    out = work / notebook.name
    pm.execute_notebook(str(notebook), str(out), parameters=notebook_parameters(notebook, SMALL_PARAMETERS),
                        cwd=str(notebook.parent), progress_bar=False, kernel_name="python3")
    return nbformat.read(out, as_version=4)


def _outputs(nb, needle: str) -> str:
    cell = next(c for c in nb.cells if c.cell_type == "code" and needle in c.source)
    return "".join(o.get("text", "") for o in cell.outputs)


@pytest.mark.parametrize("number", ["02", "04", "05", "06", "06b", "07", "08"])
def test_every_notebook_runs_alone_on_an_empty_artifacts_folder(number, tmp_path, monkeypatch, catalogue_source,
                                                                 tmp_path_factory):
    """At the small parameters, as a student opening only this notebook would (one kernel each)."""
    notebook = next((ROOT / "notebooks").glob(f"{number}_*.ipynb"))
    cache = tmp_path_factory.getbasetemp() / "alone-cache"  # the extracted catalogue, shared by these runs
    monkeypatch.setenv("SHOPBOT_ARTIFACTS", str(tmp_path / "artifacts"))
    monkeypatch.setenv("SHOPBOT_FIGURES", str(tmp_path / "figures"))
    monkeypatch.setenv("SHOPBOT_CACHE", str(cache))
    monkeypatch.setenv("SHOPBOT_DATA", str(catalogue_source))
    monkeypatch.setenv("SHOPBOT_PROGRESS", "off")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    nb = _run_alone(notebook, tmp_path)
    said = _outputs(nb, "prerequisites(")
    if number == "06":
        assert "nothing rebuilt" in said  # NLTK's data, Bitext and CLINC150 come from ../shared here
    else:
        assert "building split.csv (missing; notebook 01 makes it) from at most 4 products per class" in said
    if number in {"04", "05", "06b", "07", "08"}:
        assert "embedding the split into embeddings.npz" in said
    if number == "08":
        assert "training the intent model" in said and "building the text search" in said
    learned = next(i for i, c in enumerate(nb.cells) if c.cell_type == "markdown" and "What we learned" in c.source)
    assert nb.cells[learned + 1].outputs  # it ran to the end: the summary cell printed what was learned
    assert "Questions" in nb.cells[-2].source and "Exercises" in nb.cells[-1].source
