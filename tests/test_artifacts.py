"""Writing artifacts: whole or not at all (atomic replace), and appending to logs from several processes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from shopbot_utils import artifacts
from shopbot_utils.embed import load_embeddings, save_embeddings
from shopbot_utils.vision import ArtifactError, ModelInfo, create_model, file_sha256, load_model, save_model

ROOT = Path(__file__).resolve().parent.parent


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_atomic_write_replaces_the_whole_file_or_nothing(tmp_path):
    path = tmp_path / "a.json"
    artifacts.write_atomic(path, '{"v": 1}')
    assert path.read_text() == '{"v": 1}' and oct(path.stat().st_mode & 0o777) == "0o644"
    with pytest.raises(RuntimeError, match="disk full"):
        with artifacts.atomic_writer(path) as f:
            f.write(b'{"v": 2, "half": ')
            raise RuntimeError("disk full")
    assert path.read_text() == '{"v": 1}' and not _leftovers(tmp_path)
    artifacts.write_atomic(path, b"\x00binary")
    assert path.read_bytes() == b"\x00binary"
    artifacts.write_atomic(tmp_path / "new" / "deep" / "b.txt", "made with its folders")
    assert (tmp_path / "new" / "deep" / "b.txt").read_text() == "made with its folders"


def test_atomic_folder_is_swapped_whole(tmp_path):
    folder = tmp_path / "bm25"
    with artifacts.atomic_folder(folder) as tmp:
        (tmp / "x.npy").write_bytes(b"1")
    with pytest.raises(RuntimeError):
        with artifacts.atomic_folder(folder) as tmp:
            (tmp / "x.npy").write_bytes(b"2")
            raise RuntimeError("killed")
    assert (folder / "x.npy").read_bytes() == b"1" and not _leftovers(tmp_path)
    with artifacts.atomic_folder(folder) as tmp:
        (tmp / "y.npy").write_bytes(b"3")
    assert sorted(p.name for p in folder.iterdir()) == ["y.npy"] and not _leftovers(tmp_path)


#: Runs a writer in a child that the kernel kills (SIGXFSZ) once it has written ``limit`` bytes to one file:
#: a process killed in the middle of writing an artifact, with no chance to clean up.
_KILLED_WRITE = """
import resource, signal, sys
import numpy as np
from shopbot_utils.embed import save_embeddings
from shopbot_utils.vision import ModelInfo, create_model, save_model
folder, what = sys.argv[1], sys.argv[2]
model = create_model("efficientnet_lite0", n_classes=3, pretrained=False) if what == "model" else None
signal.signal(signal.SIGXFSZ, signal.SIG_DFL)  # Python ignores it by default
resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
if what == "model":
    save_model(model, ModelInfo("efficientnet_lite0", list("xyz")), folder)
else:
    save_embeddings(folder, np.arange(2000), np.ones((2000, 512), np.float32), "new model")
print("not killed")
"""


@pytest.mark.parametrize("what", ["embeddings", "model"])
def test_a_write_killed_half_way_leaves_the_previous_artifact_readable(tmp_path, what):
    if what == "model":
        previous = create_model("efficientnet_lite0", n_classes=3, pretrained=False)
        digest = save_model(previous, ModelInfo("efficientnet_lite0", list("abc")), tmp_path)
    else:
        save_embeddings(tmp_path, np.arange(3), np.full((3, 8), 0.5, np.float32), "old model")
    run = subprocess.run([sys.executable, "-c", _KILLED_WRITE, str(tmp_path), what], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert run.returncode == -25 and "not killed" not in run.stdout, run.stderr[-2000:]  # SIGXFSZ
    if what == "model":
        _, info, loaded = load_model(tmp_path)
        assert info.classes == list("abc") and loaded == digest
    else:
        ids, vectors = load_embeddings(tmp_path, model_sha256="old model")
        assert ids.tolist() == [0, 1, 2] and np.all(vectors == 0.5)


def test_artifact_writers_go_through_the_atomic_helper():
    """No module writes a file in place: ``write_text``, ``write_bytes``, ``np.savez``, ``torch.save``,
    ``to_csv`` and ``bm25.save`` write to a buffer or to the helper's temporary file or folder
    (``artifacts.write_atomic``/``atomic_writer``/``atomic_folder``). Not artifacts: figures (plots.py), the
    website's staging copies (book.py, rebuilt on every build) and colab.py's pip constraints (a
    standard-library script that runs before the package is installed)."""
    import ast

    writes = {"write_text", "write_bytes", "savez", "savez_compressed", "to_csv", "savefig"}
    found = []
    for path in sorted((ROOT / "shopbot_utils").glob("*.py")):
        if path.name in ("artifacts.py", "plots.py", "book.py", "colab.py") or path.name.endswith("_bench.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            owner = ast.unparse(node.func.value)
            if node.func.attr in writes or (node.func.attr == "save" and owner in ("torch", "self.bm25")):
                where = node.args[1:2] if owner == "torch" else node.args[:1]  # torch.save(obj, target)
                if not where and node.func.attr == "to_csv":
                    continue  # to_csv() returns the text
                target = ast.unparse(where[0]) if where else ""
                if target not in ("buf", "buffer", "f") and "tmp" not in target:
                    found.append(f"{path.name}:{node.lineno} {ast.unparse(node)[:90]}")
    assert not found, found


_APPENDER = """
import json, sys
from shopbot_utils.artifacts import append_line
path, who = sys.argv[1], sys.argv[2]
for i in range(300):
    append_line(path, json.dumps({"who": who, "i": i, "pad": "x" * 200}), max_bytes=20_000, backups=1000)
"""


def test_appends_from_several_processes_are_whole_lines_and_rotate(tmp_path):
    path = tmp_path / "feedback.jsonl"
    procs = [subprocess.Popen([sys.executable, "-c", _APPENDER, str(path), str(w)], env={**os.environ, "PYTHONPATH": str(ROOT)})
             for w in range(4)]
    assert [p.wait(timeout=300) for p in procs] == [0] * 4
    files = sorted(tmp_path.glob("feedback.jsonl*"))
    records = [json.loads(line) for f in files for line in f.read_text().splitlines()]  # every line whole
    assert len(records) == 1200 and {(r["who"], r["i"]) for r in records} == {(str(w), i) for w in range(4) for i in range(300)}
    assert len(files) > 10 and all(f.stat().st_size <= 20_000 for f in files)


def test_a_log_is_capped_with_a_few_old_files_kept(tmp_path):
    path = tmp_path / "log.jsonl"
    for i in range(100):
        artifacts.append_line(path, json.dumps({"i": i, "pad": "y" * 80}), max_bytes=1000, backups=2)
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == \
        ["log.jsonl", "log.jsonl.1", "log.jsonl.2"]
    assert json.loads(path.read_text().splitlines()[-1])["i"] == 99
    assert sum(len(p.read_text().splitlines()) for p in tmp_path.glob("log.jsonl*")) < 40  # the oldest are gone
