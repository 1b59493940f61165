"""The notebooks as the course's report: what a run's executed notebooks keep when they are copied
back into ``notebooks/`` (``make report``), and the golden notebooks that ``make test`` re-runs with
nbval (``make golden``).

A re-run should change only what really changed, so scrubbing drops what varies from run to run
without meaning anything: papermill's and Jupyter's timestamps, this machine's paths, memory
addresses, widget model ids and progress bars. Figures are kept, shrunk to a width that reads well.
"""
from __future__ import annotations

import base64
import io
import json
import os
import re
import sys
from pathlib import Path
from typing import Iterable

import nbformat

from . import config
from .artifacts import write_atomic

#: The parameters of a small run: every notebook top to bottom on CPU in a few minutes (tests, golden).
SMALL_PARAMETERS = {"per_class": 4, "epochs": 1, "scope": "split", "latency_queries": 5, "n_examples": 3,
                    "datasketch_limit": 60, "scale_sizes": [500, 1000], "faiss_scale_max": 1000, "n_queries": 6,
                    "isnet_sizes": [320], "min_group": 1, "max_queries": 15, "refine_cases": 10}
#: The comment that makes nbval compare a cell's stored outputs with a fresh run's (``--nbval-lax``).
CHECK_MARK = "# NBVAL_CHECK_OUTPUT"
#: Figures wider than this (pixels) are shrunk in the committed notebooks.
MAX_FIGURE_WIDTH = 1000
GOLDEN_DIR = config.ROOT / "tests" / "golden"
#: The project's kernel, as every committed notebook names it: ``make env`` registers it in the venv
#: (``ipykernel install --sys-prefix``), so JupyterLab offers it and papermill runs the notebooks with it.
KERNELSPEC = {"name": "shopbot", "display_name": "ShopBot (.venv)", "language": "python"}

_PROGRESS = re.compile(r"\d+%\|")  # tqdm's text bars
_FAST_PROGRESS = re.compile(r"\|[-█ ]*\| *\d+\.\d+% \[\d+/\d+")  # fastprogress's (fastai's training bars)
_ADDRESS = re.compile(r"\b0x[0-9a-f]{6,}\b")
_WIDGET = "application/vnd.jupyter.widget-view+json"


def learned(points: Iterable[str]):
    """A notebook's closing numbers as a Markdown list (the report's voice: this run's figures)."""
    from IPython.display import Markdown

    return Markdown("**This run, in numbers:**\n\n" + "\n".join(f"- {p}" for p in points))


# ------------------------------------------------------------------ results: notebooks -> JSON -> README
#: The MIME type under which a notebook's ``results(...)`` output carries its table as JSON, beside
#: the Markdown a reader sees; ``make report`` collects them into ``RESULTS_FILE`` and the README.
RESULTS_MIME = "application/vnd.shopbot.results+json"
RESULTS_FILE = config.ROOT / "docs" / "results.json"
README = config.ROOT / "README.md"
_RUN_INFO: dict = {}


def _others_cpu(seconds: float = 1.0) -> float:
    """Cores used by processes other than this one and its family, over ``seconds``."""
    import time

    import psutil

    me = psutil.Process()
    family = [me, *me.parents(), *me.children(recursive=True)]

    def own() -> float:
        total = 0.0
        for p in family:
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.Error:
                pass
        return total

    def busy() -> float:
        t = psutil.cpu_times()
        return sum(t) - t.idle - getattr(t, "iowait", 0.0)

    b0, o0, t0 = busy(), own(), time.perf_counter()
    time.sleep(seconds)
    elapsed = time.perf_counter() - t0
    return max(0.0, (busy() - b0) - (own() - o0)) / elapsed


def run_info() -> dict:
    """The run a notebook's results come from: its date, the machine, and whether other processes
    shared the machine (cores they used over one second when first asked, in this kernel)."""
    if not _RUN_INFO:
        import datetime
        import platform

        import torch

        cores = os.cpu_count() or 1
        cpu = platform.processor() or platform.machine()
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
        others = _others_cpu()
        _RUN_INFO.update({"date": datetime.date.today().isoformat(), "machine": f"{cores} CPU cores ({cpu}), {gpu}",
                          "load": "idle" if others < 0.25 else f"shared: other processes used {others:.1f} of {cores} cores"})
    return dict(_RUN_INFO)


def _cell(value, fmt: str | None) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return ""
    if fmt and isinstance(value, (int, float)) and not isinstance(value, bool):
        return format(value, fmt)
    if isinstance(value, float):  # no format given: four significant digits, never float noise
        return format(value, ".4g")
    return str(value)


def markdown_table(columns: list[str], rows: list[list[str]]) -> str:
    """A GitHub Markdown table of already formatted cells."""
    esc = lambda s: str(s).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(map(esc, columns)) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(map(esc, row)) + " |" for row in rows]
    return "\n".join(lines)


def run_line(payload: dict) -> str:
    """Where a results table comes from, in one italic line."""
    run = payload["run"]
    return f"*{payload['source']}, run of {run['date']} on {run['machine']}; {run['load']}.*"


class Results:
    """A results table as a notebook shows it (Markdown) and as ``make report`` reads it (JSON)."""

    def __init__(self, payload: dict):
        self.payload = payload

    def markdown(self, run: bool = True) -> str:
        p = self.payload
        text = f"**{p['title']}**\n\n{markdown_table(p['columns'], p['rows'])}"
        if p.get("note"):
            text += f"\n\n{p['note']}"
        return text + (f"\n\n{run_line(p)}" if run else "")

    def _repr_mimebundle_(self, include=None, exclude=None):
        return {"text/markdown": self.markdown(), "text/plain": self.markdown(), RESULTS_MIME: self.payload}


def results(key: str, title: str, table, formats: dict[str, str] | None = None, note: str = "",
            values: dict[str, str] | None = None, source: str | None = None) -> Results:
    """Show a notebook's results table and mark it for the README (``make report``).

    ``table``: a DataFrame (its index becomes the first column when named) or a list of dicts;
    ``formats`` maps a column to a format spec (``".3f"``); the cells are stored as the reader sees
    them, so the README shows exactly the notebook's figures. ``values`` are headline figures
    (already formatted strings) that the README's prose quotes.
    """
    import pandas as pd

    df = pd.DataFrame(table) if not isinstance(table, pd.DataFrame) else table
    if df.index.name is not None:
        df = df.reset_index()
    formats = formats or {}
    columns = [str(c) for c in df.columns]
    rows = [[_cell(v, formats.get(c)) for c, v in zip(columns, row)] for row in df.itertuples(index=False)]
    if source is None:
        source = _notebook_name() or "this notebook"
    payload = {"key": key, "title": title, "columns": columns, "rows": rows, "note": note,
               "values": dict(values or {}), "source": source, "run": run_info()}
    return Results(payload)


def _notebook_name() -> str | None:
    """The running notebook's name ("notebook 04"), from papermill's or Jupyter's environment."""
    name = os.environ.get("JPY_SESSION_NAME") or os.environ.get("SHOPBOT_NOTEBOOK")
    if name:
        m = re.match(r"(\d+b?)_", Path(name).name)
        return f"notebook {m.group(1)}" if m else Path(name).stem
    return None


def collect_results(notebooks: Iterable[str | Path]) -> dict:
    """Every ``results(...)`` payload stored in the (committed) notebooks, by key."""
    found: dict = {}
    for path in notebooks:
        nb = nbformat.read(path, as_version=4)
        m = re.match(r"(\d+b?)_", Path(path).name)
        for cell in nb.cells:
            for out in cell.get("outputs", []):
                payload = out.get("data", {}).get(RESULTS_MIME)
                if payload is None:
                    continue
                payload = json.loads(json.dumps(payload))
                if m:
                    payload["source"] = f"notebook {m.group(1)}"
                if payload["key"] in found:
                    raise ValueError(f"results key {payload['key']!r} appears twice ({path})")
                found[payload["key"]] = payload
    return dict(sorted(found.items()))


# A block's or a value's text never runs into the next one's marker (an empty block is two lines).
_BLOCK = re.compile(r"(<!-- results: ([\w.-]+) -->\n)(?:(?!<!-- results:).)*?(<!-- /results -->)", re.S)
_VALUE = re.compile(r"(<!-- value: ([\w.-]+)\.([\w.-]+) -->)(?:(?!<!-- value:).)*?(<!-- /value -->)", re.S)


def render_readme(text: str, results_by_key: dict) -> str:
    """``text`` with every results block and quoted value filled in from ``results_by_key``.

    A block is ``<!-- results: KEY -->`` ... ``<!-- /results -->`` (the table and the line naming its
    run); a value is ``<!-- value: KEY.NAME -->`` ... ``<!-- /value -->``. An unknown key is an error.
    """
    def block(m):
        key = m.group(2)
        if key not in results_by_key:
            raise KeyError(f"README asks for results {key!r}, which no notebook records")
        return m.group(1) + Results(results_by_key[key]).markdown().rstrip("\n") + "\n" + m.group(3)

    def value(m):
        key, name = m.group(2), m.group(3)
        try:
            return m.group(1) + results_by_key[key]["values"][name] + m.group(4)
        except KeyError:
            raise KeyError(f"README quotes {key}.{name}, which no notebook records") from None

    return _VALUE.sub(value, _BLOCK.sub(block, text))


def write_results(notebooks: Iterable[str | Path] | None = None, results_file: Path = RESULTS_FILE,
                  readme: Path = README) -> dict:
    """Collect the committed notebooks' results into ``results_file`` and fill the README from it."""
    notebooks = sorted((config.ROOT / "notebooks").glob("[0-9]*.ipynb")) if notebooks is None else notebooks
    found = collect_results(notebooks)
    results_file.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(results_file, json.dumps(found, indent=1, ensure_ascii=False) + "\n")
    write_atomic(readme, render_readme(readme.read_text(), found))
    return found


# ------------------------------------------------------------------ figures typed into prose
#: Figures that may be typed in a notebook's Markdown, and why: they are not measured by the run.
TYPED_FIGURES_ALLOWED = {
    "96.85%": "the poster's reported score (its claim, quoted)",
    "0.9685": "the poster's reported score (its claim, quoted)",
    "0.04 s": "the poster's reported time per query (its claim, quoted)",
    "20%": "the poster's protocol: a fifth of the dataset as queries (a definition)",
    "0.5": "half credit for the same sub-category in the poster's score (a definition)",
    "95%": "the confidence level of a bootstrap interval (a definition)",
}
_FIGURE = re.compile(r"\d+(?:[.,]\d+)*\s*%|\d+(?:\.\d+)?\s*(?:ms|s|seconds?|min|minutes?|hours?|h)\b|\d+\.\d+")
_CODE_OR_MATH = re.compile(r"`[^`]*`|\$\$.*?\$\$|\$[^$\n]+\$|<img[^>]*>|\]\([^)]*\)", re.S)


def typed_figures(markdown: str) -> list[str]:
    """Measured-looking figures (decimals, percentages, durations) typed into Markdown prose.

    Code spans, equations and links are skipped (parameter values, definitions, URLs), and so are
    the figures in ``TYPED_FIGURES_ALLOWED``.
    """
    prose = _CODE_OR_MATH.sub(" ", markdown)
    found = [m.group(0).strip() for m in _FIGURE.finditer(prose)]
    return [f for f in found if re.sub(r"\s+", " ", f) not in TYPED_FIGURES_ALLOWED]


def notebook_parameters(path: str | Path, parameters: dict = SMALL_PARAMETERS) -> dict:
    """The entries of ``parameters`` that the notebook's ``parameters`` cell defines."""
    nb = nbformat.read(path, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    return {k: v for k, v in parameters.items() if re.search(rf"^{k}\s*=", cell.source, re.M)}


def _path_replacements() -> list[tuple[str, str]]:
    """This machine's paths, longest first, and what the committed notebooks say instead."""
    pairs = {str(config.ROOT): "."}
    for var, label in (("SHOPBOT_DATA", "<catalogue>"), ("SHOPBOT_ARTIFACTS", "<artifacts>"),
                       ("NLTK_DATA", "<nltk_data>"), ("SHOPBOT_BG_MODEL", "<background model>"),
                       ("SHOPBOT_FIGURES", "<figures>")):
        if os.environ.get(var):
            pairs[str(Path(os.environ[var]).resolve())] = label
            pairs[os.environ[var]] = label
    pairs[str(config.SHARED.resolve())] = "<shared>"
    pairs[str(Path.home())] = "~"
    import site
    import sysconfig

    for folder in {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], *site.getsitepackages()}:
        pairs[folder] = "<site-packages>"
    pairs[sys.prefix] = "<python>"
    return sorted(pairs.items(), key=lambda kv: -len(kv[0]))


def scrub_text(text: str, replacements: list[tuple[str, str]] | None = None) -> str:
    """Paths and memory addresses out of one output's text."""
    for old, new in replacements if replacements is not None else _path_replacements():
        text = text.replace(old, new)
    return _ADDRESS.sub("0x...", text)


def shrink_png(data: str, max_width: int = MAX_FIGURE_WIDTH) -> str:
    """A base64 PNG no wider than ``max_width`` (re-encoded with an adaptive palette when that is smaller)."""
    from PIL import Image

    image = Image.open(io.BytesIO(base64.b64decode(data)))
    if image.width > max_width:
        image = image.resize((max_width, round(image.height * max_width / image.width)), Image.LANCZOS)
    candidates = []
    for im in (image.convert("RGB"), image.convert("RGB").quantize(256)):
        buf = io.BytesIO()
        im.save(buf, format="PNG", optimize=True)
        candidates.append(buf.getvalue())
    best = min(candidates, key=len)
    original = base64.b64decode(data)
    return base64.b64encode(best if len(best) < len(original) else original).decode()


def _terminal_text(text: str) -> str:
    """What a terminal would show of ``text``: each line's last carriage-return segment, without the
    lines that are progress bars (tqdm's, fastprogress's) or blank."""
    lines = []
    for line in text.split("\n"):
        shown = line.split("\r")
        shown = next((seg for seg in reversed(shown) if seg.strip()), "")
        if _PROGRESS.search(shown) or _FAST_PROGRESS.search(shown) or set(shown.strip()) <= {"█"} and shown.strip():
            continue
        lines.append(shown.rstrip())
    out = "\n".join(lines).strip("\n")
    return out + "\n" if out else ""


def _merge_streams(outputs: list) -> list:
    """Consecutive stream outputs of the same name as one (as Jupyter shows them)."""
    merged: list = []
    for o in outputs:
        if (o.get("output_type") == "stream" and merged and merged[-1].get("output_type") == "stream"
                and merged[-1].get("name") == o.get("name")):
            merged[-1]["text"] = merged[-1]["text"] + ("".join(o["text"]) if isinstance(o["text"], list) else o["text"])
            continue
        if o.get("output_type") == "stream" and isinstance(o.get("text"), list):
            o["text"] = "".join(o["text"])
        merged.append(o)
    return merged


def _scrub_output(output: dict, replacements) -> dict | None:
    if output.get("output_type") == "stream":
        text = _terminal_text(scrub_text(output.get("text", ""), replacements))
        if not text.strip():
            return None  # progress bars and blank lines: live feedback, not a result
        output["text"] = text
        return output
    data = output.get("data", {})
    if _WIDGET in data:  # live UI (progress bars, the chat): its state is not saved, its model id is random
        return None
    for mime, value in list(data.items()):
        if mime == "image/png":
            data[mime] = shrink_png(value)
        elif mime.startswith("text/"):
            data[mime] = scrub_text("".join(value) if isinstance(value, list) else value, replacements)
        elif mime == RESULTS_MIME:
            data[mime] = json.loads(scrub_text(json.dumps(value), replacements))
    if output.get("output_type") == "error":
        output["traceback"] = [scrub_text(t, replacements) for t in output.get("traceback", [])]
    return output


def scrub_notebook(nb, keep_outputs=lambda cell: True):
    """The executed notebook without volatile metadata, paths and progress bars (in place; returned);
    its kernelspec is the project's (``KERNELSPEC``), whichever kernel ran it.

    ``keep_outputs(cell)`` False clears a code cell's outputs (golden notebooks keep only checked ones).
    """
    replacements = _path_replacements()
    nb.metadata = nbformat.NotebookNode({"kernelspec": dict(KERNELSPEC),
                                         "language_info": {"name": nb.metadata.get("language_info", {}).get("name", "python")}})
    for cell in nb.cells:
        tags = cell.metadata.get("tags", [])
        cell.metadata = nbformat.NotebookNode({"tags": tags} if tags else {})
        cell.pop("id", None)
        if cell.cell_type != "code":
            continue
        if not keep_outputs(cell):
            cell.outputs, cell.execution_count = [], None
            continue
        scrubbed = [o for o in (_scrub_output(o, replacements) for o in _merge_streams(cell.outputs)) if o is not None]
        cell.outputs = _merge_streams(scrubbed)  # streams that progress bars kept apart
    nb.nbformat, nb.nbformat_minor = 4, 4
    return nb


def write_report(executed: str | Path, notebooks: str | Path = config.ROOT / "notebooks") -> list[Path]:
    """Copy every executed notebook in ``executed`` over its source in ``notebooks``, scrubbed.

    Refuses a notebook whose cells no longer match its source (it was executed from an older
    version): copying it would silently undo an edit.
    """
    written = []
    for path in sorted(Path(executed).glob("[0-9]*.ipynb")):
        target = Path(notebooks) / path.name
        if not target.is_file():
            continue
        run, source = nbformat.read(path, as_version=4), nbformat.read(target, as_version=4)
        run.cells = [c for c in run.cells if "injected-parameters" not in c.metadata.get("tags", [])]
        if [c.source for c in run.cells] != [c.source for c in source.cells]:
            raise ValueError(f"{path} was executed from another version of {target}: run `make run` again")
        if any(o.get("output_type") == "error" for c in run.cells for o in c.get("outputs", [])):
            raise ValueError(f"{path} stopped with an error: fix it and run `make run` again")
        nbformat.write(scrub_notebook(run), target)
        written.append(target)
    return written


def golden_environment(work: str | Path) -> dict[str, str]:
    """What a golden notebook's kernel runs with, when it is written and when nbval re-runs it: its
    own artifacts and figures under ``work``, no downloads, no progress bars (their timings vary)."""
    work = Path(work)
    return {"SHOPBOT_ARTIFACTS": str(work / "artifacts"), "SHOPBOT_FIGURES": str(work / "figures"),
            "SHOPBOT_OFFLINE": "1", "SHOPBOT_PROGRESS": "off"}


def is_checked(cell) -> bool:
    return cell.cell_type == "code" and CHECK_MARK in cell.source


def write_golden(sources: Iterable[str | Path], out: str | Path = GOLDEN_DIR, parameters: dict = SMALL_PARAMETERS,
                 workdir: str | Path | None = None) -> list[Path]:
    """Execute each notebook (in order) with papermill at ``parameters`` and save it under ``out``
    with only its checked cells' outputs: the stored answers that nbval compares a fresh run with.

    The run's artifacts and figures go to ``workdir`` (default: a temporary folder), never to the
    project's own ``artifacts/`` and ``figures/``.
    """
    import tempfile

    import papermill as pm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(workdir or tmp)
        env = golden_environment(work)
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            for path in map(Path, sources):
                target = out / path.name
                pm.execute_notebook(str(path), str(work / path.name), parameters=notebook_parameters(path, parameters),
                                    cwd=str(path.parent), progress_bar=False, kernel_name=KERNELSPEC["name"])
                nb = nbformat.read(work / path.name, as_version=4)
                nbformat.write(scrub_notebook(nb, keep_outputs=is_checked), target)
                written.append(target)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    return written


# ----------------------------------------------------------------------------- Colab cells and badges
#: The line that tells the Colab cell from the others.
COLAB_MARK = 'if "google.colab" in sys.modules:'
_BADGE = re.compile(r"https://colab\.research\.google\.com/github/[\w.-]+/[\w.-]+/blob/[\w.-]+/notebooks/[\w.-]+\.ipynb")
#: The stage of ``pipeline.prerequisites`` each notebook (by its number) calls, and the notebooks or downloads that
#: make what it reads.
NOTEBOOK_STAGES = {"02": ("fine_tuning", "notebook 01"), "03": ("embeddings", "notebooks 01-02"),
                   "04": ("index", "notebooks 01-03"), "05": ("background", "notebooks 01-04 and the ISNet download"),
                   "06": ("intents", "the downloads (NLTK's data, Bitext, CLINC150)"),
                   "06b": ("text_search", "notebooks 01-03"), "07": ("evaluation", "notebooks 01-04"),
                   "08": ("chat", "notebooks 01-06b and the downloads")}
#: The parameter that sizes a split built by ``prerequisites`` (every notebook that reads the split has it).
PER_CLASS_LINE = ('per_class = "auto"  # only if the split is missing and built here: products per class '
                  '("auto": all on a GPU, 100 on a CPU; None: all)')


def colab_badge(notebook: str, url: str) -> str:
    """The *Open in Colab* link of ``notebook`` (a file name in ``notebooks/``) in the repository at ``url``."""
    repo = url.removeprefix("https://github.com/").strip("/")
    return f"https://colab.research.google.com/github/{repo}/blob/main/notebooks/{notebook}"


def colab_cell(url: str) -> str:
    """Every notebook's Colab cell: clone ``url``, install it without a restart, optionally use Drive."""
    return f"""# Colab only, a no-op elsewhere: clone the course, install it (Colab's own torch is kept) and import it from
# the clone in this kernel, so no restart is needed. DRIVE = True keeps the artifacts and downloads on your
# Google Drive, so that a later session resumes. The catalogue downloads with kagglehub, which needs a Kaggle
# API token: add KAGGLE_USERNAME and KAGGLE_KEY to Colab's secrets (the key icon) or put kaggle.json in
# ~/.kaggle/. On a GPU runtime mode='auto' fine-tunes the whole network.
DRIVE = False
import importlib, sys
{COLAB_MARK}
    !test -d /content/shopbot || git clone -q --depth 1 {url} /content/shopbot
    !{{sys.executable}} /content/shopbot/shopbot_utils/colab.py /content/shopbot
    sys.path.insert(0, "/content/shopbot")  # this kernel imports the clone now: no restart
    importlib.invalidate_caches()  # and sees the packages pip has just added
    from shopbot_utils.colab import use_drive
    use_drive(DRIVE)
    %cd /content/shopbot/notebooks"""


def prerequisites_cell(stage: str, makers: str) -> str:
    """The cell after the Colab cell: build what the notebook reads when it was opened alone."""
    args = "artifacts" if stage == "intents" else "artifacts, data_source, per_class"
    return (f"# Opened alone (on a fresh Colab runtime, say), this notebook first builds what it reads from {makers},\n"
            "# saying what and why; in `make run` order everything is there already and nothing is rebuilt.\n"
            "from shopbot_utils.pipeline import prerequisites\n\n"
            f"prerequisites({stage!r}, {args});")


def _new_cell(source: str):
    cell = nbformat.v4.new_code_cell(source)
    cell.pop("id", None)
    return cell


def sync_notebook(nb, notebook: str, url: str) -> bool:
    """Write ``url``'s badge and Colab cell into ``nb`` (notebook file name ``notebook``) and, for 02-08, the
    ``per_class`` parameter and the prerequisites cell; finds cells by content, so running it twice
    changes nothing the second time. Returns whether anything changed."""
    before = json.dumps(nb, sort_keys=True)
    first = nb.cells[0]
    if not _BADGE.search(first.source):
        raise ValueError(f"{notebook}: its first cell has no Colab badge")
    first.source = _BADGE.sub(colab_badge(notebook, url), first.source)
    code = [c for c in nb.cells if c.cell_type == "code"]
    parameters = next((c for c in code if "parameters" in c.metadata.get("tags", [])), None)
    if parameters is None:
        raise ValueError(f"{notebook}: no cell tagged 'parameters'")
    colab = next((c for c in code if COLAB_MARK in c.source), None)
    if colab is None:
        colab = _new_cell("")
        nb.cells.insert(nb.cells.index(parameters) + 1, colab)
    colab.source = colab_cell(url)
    number = notebook.split("_", 1)[0]
    if number in NOTEBOOK_STAGES:
        stage, makers = NOTEBOOK_STAGES[number]
        if stage != "intents":
            lines = [line for line in parameters.source.splitlines() if not re.match(r"per_class\s*=", line)]
            parameters.source = "\n".join(lines + [PER_CLASS_LINE])
        cell = next((c for c in nb.cells if c.cell_type == "code" and "prerequisites(" in c.source), None)
        if cell is None:
            cell = _new_cell("")
            nb.cells.insert(nb.cells.index(colab) + 1, cell)
        cell.source = prerequisites_cell(stage, makers)
    return json.dumps(nb, sort_keys=True) != before


def sync_notebooks(paths: Iterable[str | Path], url: str | None = None) -> list[Path]:
    """``sync_notebook`` on each file (the repository from ``config.repository_url()``); returns the files changed."""
    url = url or config.repository_url()
    changed = []
    for path in map(Path, paths):
        nb = nbformat.read(path, as_version=4)
        if sync_notebook(nb, path.name, url):
            nbformat.write(nb, path)
            changed.append(path)
    return changed
