"""The download registry against a local HTTP server on 127.0.0.1: checked, cached, atomic downloads; a
corrupted file refused by its hash; an offline run that never opens a socket; serving never downloads."""
from __future__ import annotations

import hashlib
import http.server
import json
import shutil
import socket
import subprocess
import threading
import time
import zipfile
from pathlib import Path

import pytest

from shopbot_utils import config, downloads
from shopbot_utils.downloads import DownloadError, Remote

SHARED = Path(__file__).resolve().parent.parent.parent / "shared"


class _Handler(http.server.SimpleHTTPRequestHandler):
    delay = 0.0
    requests: list[str] = []

    def do_GET(self):
        type(self).requests.append(self.path)
        time.sleep(self.delay)
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture()
def server(tmp_path, monkeypatch):
    """A folder served on 127.0.0.1 (``served``), the base URL, and the paths requested; downloads go to
    ``tmp_path/downloads`` and are allowed (the suite's default is offline)."""
    served = tmp_path / "served"
    served.mkdir()
    handler = type("Handler", (_Handler,), {"requests": [], "delay": 0.0})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: handler(*a, directory=str(served)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("SHOPBOT_OFFLINE", "0")
    monkeypatch.setenv("SHOPBOT_DOWNLOADS", str(tmp_path / "downloads"))
    monkeypatch.setenv("SHOPBOT_PROGRESS", "off")
    try:
        yield served, f"http://127.0.0.1:{httpd.server_address[1]}", handler
    finally:
        httpd.shutdown()
        httpd.server_close()


def _register(monkeypatch, name: str, url: str, hash_: str, fname: str | None = None) -> None:
    monkeypatch.setitem(downloads.REGISTRY, name, Remote(url, hash_, "test licence", url, fname or f"test/{name}"))


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_the_registry_names_url_hash_licence_and_file_for_each_public_file():
    assert {"bitext", "clinc150", "clinc150/domains", "isnet", "nltk/punkt_tab", "nltk/stopwords", "nltk/wordnet", "nltk/words"} \
        <= set(downloads.REGISTRY)
    for name, remote in downloads.REGISTRY.items():
        assert remote.url.startswith("https://") and remote.licence and remote.home.startswith("https://"), name
        assert remote.hash == "nltk-index" or remote.hash.split(":")[0] in {"sha256", "md5", "git-sha1"}, name
    assert downloads.REGISTRY["clinc150"].size == 2_495_390
    assert "828f809" in downloads.REGISTRY["clinc150"].url  # the commit the hash belongs to


def test_a_download_is_checked_cached_and_not_fetched_again(server, monkeypatch, tmp_path):
    served, base, handler = server
    data = b"utterance,intent\nwhere is my order,track_order\n" * 100
    (served / "good.csv").write_bytes(data)
    _register(monkeypatch, "good", f"{base}/good.csv", _sha256(data))
    path = downloads.fetch("good")
    assert path == tmp_path / "downloads" / "test" / "good" and path.read_bytes() == data
    assert downloads.fetch("good") == path and handler.requests == ["/good.csv"]  # the cached copy, hashed again
    assert sorted(p.name for p in path.parent.iterdir()) == ["good"]  # no temporary file left


def test_a_corrupted_download_is_refused_naming_the_file_and_both_hashes(server, monkeypatch, tmp_path):
    served, base, _ = server
    good = b"the published file\n" * 50
    (served / "data.json").write_bytes(good[:-7] + b"CORRUPT")  # what a broken mirror serves
    expected = _sha256(good)
    _register(monkeypatch, "data", f"{base}/data.json", expected)
    with pytest.raises(DownloadError) as err:
        downloads.fetch("data")
    message = str(err.value)
    assert "data" in message and expected in message and _sha256(good[:-7] + b"CORRUPT") in message
    folder = tmp_path / "downloads" / "test"
    assert not folder.exists() or not any(folder.iterdir())  # nothing half-written or unchecked is kept
    # A file already in the cache with the wrong bytes is an error too, never silently used or replaced.
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "data").write_bytes(b"tampered")
    with pytest.raises(DownloadError, match=f"{folder / 'data'}.*expected {expected}.*found sha256:"):
        downloads.fetch("data")


def test_md5_and_git_blob_hashes(server, monkeypatch, tmp_path):
    served, base, _ = server
    data = bytes(range(256)) * 300
    (served / "model.onnx").write_bytes(data)
    _register(monkeypatch, "model", f"{base}/model.onnx", "md5:" + hashlib.md5(data).hexdigest())
    assert downloads.fetch("model").read_bytes() == data
    blob = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
    _register(monkeypatch, "csv", f"{base}/model.onnx", f"git-sha1:{blob}", "test/csv")
    assert downloads.fetch("csv").read_bytes() == data
    if shutil.which("git"):  # the same id Git gives the file
        out = subprocess.run(["git", "hash-object", str(downloads.fetch("csv"))], capture_output=True, text=True)
        assert out.stdout.strip() == blob


def test_concurrent_kernels_never_see_half_a_file(server, monkeypatch, tmp_path):
    served, base, handler = server
    data = b"x" * 3_000_000
    (served / "big.bin").write_bytes(data)
    handler.delay = 0.2  # every kernel starts its download before the first one finishes
    _register(monkeypatch, "big", f"{base}/big.bin", _sha256(data))
    results, errors = [], []

    def worker():
        try:
            results.append(downloads.fetch("big"))
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(results)) == 1 and results[0].read_bytes() == data
    assert [p.name for p in results[0].parent.iterdir()] == ["big"]


def test_offline_never_opens_a_socket(monkeypatch, tmp_path):
    monkeypatch.setenv("SHOPBOT_OFFLINE", "1")
    monkeypatch.setenv("SHOPBOT_DOWNLOADS", str(tmp_path / "downloads"))
    monkeypatch.setenv("SHOPBOT_BG_MODEL", "")
    monkeypatch.setenv("U2NET_HOME", str(tmp_path / "u2net"))
    monkeypatch.setattr(config, "SHARED", tmp_path / "no-shared")
    monkeypatch.delenv("SHOPBOT_BITEXT", raising=False)
    monkeypatch.delenv("SHOPBOT_CLINC", raising=False)
    import nltk

    monkeypatch.setattr(nltk.data, "path", [str(tmp_path / "no-nltk")])

    def no_network(*args, **kwargs):
        raise AssertionError("a socket was opened offline")

    monkeypatch.setattr(socket, "socket", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    for name in downloads.REGISTRY:
        with pytest.raises(DownloadError, match="SHOPBOT_OFFLINE=1"):
            downloads.fetch(name)
    from shopbot_utils.pipeline import prerequisites

    lines = prerequisites("intents", tmp_path / "artifacts", report=lambda line: None)
    assert len(lines) == 3 and all("SHOPBOT_OFFLINE=1 forbids downloads" in line for line in lines)
    assert "trains without CLINC150" in lines[2]


def _nltk_served(served: Path, base: str) -> str:
    """NLTK's packages zipped from ../shared/nltk_data into ``served``, with an index.xml like NLTK's."""
    root = SHARED / "nltk_data"
    packages = []
    for sub, name in (("tokenizers", "punkt_tab"), ("corpora", "stopwords"), ("corpora", "wordnet"), ("corpora", "words")):
        target = served / "packages" / sub / f"{name}.zip"
        target.parent.mkdir(parents=True, exist_ok=True)
        if (root / sub / f"{name}.zip").is_file():
            shutil.copy(root / sub / f"{name}.zip", target)
        else:
            with zipfile.ZipFile(target, "w") as z:
                for f in sorted((root / sub / name).rglob("*")):
                    z.write(f, f.relative_to(root / sub))
        data = target.read_bytes()
        packages.append(f'<package id="{name}" size="{len(data)}" checksum="{hashlib.md5(data).hexdigest()}" '
                        f'subdir="{sub}" url="{base}/packages/{sub}/{name}.zip" />')
    (served / "index.xml").write_text(f"<nltk_data><packages>{''.join(packages)}</packages></nltk_data>")
    return f"{base}/index.xml"


@pytest.mark.skipif(not (SHARED / "nltk_data").is_dir(), reason="../shared/nltk_data is not here")
def test_nltk_data_comes_through_the_registry_at_build_time_and_serving_never_downloads(server, monkeypatch, tmp_path):
    served, base, handler = server
    monkeypatch.setattr(downloads, "NLTK_INDEX", _nltk_served(served, base))
    for name in ("punkt_tab", "stopwords", "wordnet", "words"):
        remote = downloads.REGISTRY[f"nltk/{name}"]
        monkeypatch.setitem(downloads.REGISTRY, f"nltk/{name}", Remote(base + "/unused", remote.hash, remote.licence,
                                                                       remote.home, remote.fname))
    import nltk

    from shopbot_utils.text import NLTKDataError, Preprocessor, ensure_nltk_data

    monkeypatch.setattr(nltk.data, "path", [str(tmp_path / "empty")])
    monkeypatch.setattr(nltk, "download", lambda *a, **k: pytest.fail("nltk.download bypasses the registry"))
    with pytest.raises(NLTKDataError):
        Preprocessor()  # what a serving kernel makes: it never downloads
    assert handler.requests == []
    ensure_nltk_data(download=True)  # a build step
    assert sorted(p.name for p in (tmp_path / "downloads" / "nltk_data").rglob("*.zip")) == \
        ["punkt_tab.zip", "stopwords.zip", "wordnet.zip", "words.zip"]
    for path in ("tokenizers/punkt_tab/english/", "corpora/wordnet/", "corpora/stopwords/", "corpora/words/"):
        assert str(tmp_path / "downloads" / "nltk_data") in str(nltk.data.find(path))  # NLTK finds the zips
    # (Not loaded here: NLTK's corpus loaders would keep this test's temporary folder for the rest of the session.)


@pytest.mark.skipif(not (SHARED / "nlp" / "clinc150" / "data_train_val.json").is_file(), reason="no ../shared CLINC150")
def test_clinc_keeps_the_train_and_val_lists_of_data_full_byte_for_byte_and_never_its_test_lists(server, monkeypatch, tmp_path):
    served, base, _ = server
    shared = (SHARED / "nlp" / "clinc150" / "data_train_val.json").read_bytes()
    lists = json.loads(shared)
    full = {"oos_val": lists["oos_val"], "val": lists["val"], "train": lists["train"],
            "oos_test": [["a secret oos test question", "oos"]], "test": [["a secret test question", "balance"]],
            "oos_train": lists["oos_train"]}  # data_full.json's key order
    data = json.dumps(full).encode()
    (served / "data_full.json").write_bytes(data)
    _register(monkeypatch, "clinc150", f"{base}/data_full.json", _sha256(data), "clinc150/data_full.json")
    domains = (SHARED / "nlp" / "clinc150" / "domains.json").read_bytes()
    (served / "domains.json").write_bytes(domains)
    _register(monkeypatch, "clinc150/domains", f"{base}/domains.json", downloads.REGISTRY["clinc150/domains"].hash,
              "clinc150/domains.json")
    monkeypatch.setattr(config, "SHARED", tmp_path / "no-shared")
    monkeypatch.delenv("SHOPBOT_CLINC", raising=False)
    assert config.clinc_path() is None
    path = downloads.fetch_clinc()
    assert path.read_bytes() == shared  # the same file as ../shared's, so the committed tables reproduce
    assert config.clinc_path() == path
    from shopbot_utils.intents import clinc_out_of_scope

    texts = set(clinc_out_of_scope(tmp_path / "downloads" / "clinc150" / "data_full.json")["text"])
    assert texts and not texts & {"a secret oos test question", "a secret test question"}


def test_isnet_is_fetched_by_a_build_step_only(server, monkeypatch, tmp_path):
    served, base, handler = server
    data = b"not really onnx" * 1000
    (served / "isnet.onnx").write_bytes(data)
    monkeypatch.setitem(downloads.REGISTRY, "isnet", Remote(f"{base}/isnet.onnx", "md5:" + hashlib.md5(data).hexdigest(),
                                                            "MIT", base, config.ISNET_DOWNLOAD))
    monkeypatch.setenv("SHOPBOT_BG_MODEL", "")
    monkeypatch.setenv("U2NET_HOME", str(tmp_path / "u2net"))
    from shopbot_utils.background import BackgroundModelError, isnet_model_path

    with pytest.raises(BackgroundModelError, match="SHOPBOT_BG_MODEL"):
        isnet_model_path()  # what IsnetBackend and get_backend('auto') call while serving
    assert handler.requests == []
    path = isnet_model_path(download=True)
    assert path == tmp_path / "downloads" / config.ISNET_DOWNLOAD and path.read_bytes() == data
    assert isnet_model_path() == path and handler.requests == ["/isnet.onnx"]


def test_the_command_line_fetches_by_name_and_says_why_it_cannot(capsys, monkeypatch, tmp_path):
    from shopbot_utils.__main__ import main

    monkeypatch.setenv("SHOPBOT_DOWNLOADS", str(tmp_path))
    assert main(["download", "clinc150"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: clinc150: ") and "SHOPBOT_OFFLINE=1" in err
