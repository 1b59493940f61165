"""Downloads: one registry of the public files ShopBot fetches (name -> URL, hash, licence, size), d2l's habit.

``fetch(name)`` returns a checked local copy in ``config.downloads_dir()``: a file already there is
hashed and used; a missing one is downloaded with ``pooch`` (a temporary file in the same folder,
hashed, then renamed into place, so that concurrent kernels never see half a file) unless
``SHOPBOT_OFFLINE=1``. A hash that differs is a ``DownloadError`` naming the file and both hashes.
Files named by ``SHOPBOT_*`` variables or found in ``../shared`` come first (``config``): they are the
user's own and are not replaced. Downloads happen when something is built (``pipeline.prerequisites``,
notebook 06, ``build_intents``), never while serving a shopper.

Hashes: ``sha256:``/``md5:`` as published; ``git-sha1:`` is the file's Git blob id at the pinned commit
(the repository publishes no checksum, but Git names every file by one); ``nltk-index`` takes the MD5
and size that NLTK's own index publishes for the package, as ``nltk.download`` does.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass, replace
from pathlib import Path

from . import config
from .config import logger

#: NLTK's package index: every package's URL, MD5 and size.
NLTK_INDEX = "https://raw.githubusercontent.com/nltk/nltk_data/gh-pages/index.xml"
_GITHUB_RAW = "https://raw.githubusercontent.com"


class DownloadError(RuntimeError):
    """A registry file is not here and cannot be downloaded, or its hash is not the registry's."""


@dataclass(frozen=True)
class Remote:
    """One public file: where it lives, how to check it (``algorithm:hex``), its licence, its size in
    bytes (None: not published), the page a person reads, and its name under ``downloads_dir()``."""

    url: str
    hash: str
    licence: str
    home: str
    fname: str
    size: int | None = None


REGISTRY: dict[str, Remote] = {
    # The train/val/test lists of CLINC150 (commit 828f809). Only its train and val parts are kept for
    # training (``clinc_train_val``); its test lists are for evaluation, never training.
    "clinc150": Remote(
        f"{_GITHUB_RAW}/clinc/oos-eval/828f8093932c8fe6ca7936c3d2e52903b1c523de/data/data_full.json",
        "sha256:36923c3705a59e08fe9c3883d8bc2dd966ef93e22cb78ac41171782a698d56e0",
        "CC BY 3.0", "https://github.com/clinc/oos-eval", "clinc150/data_full.json", 2_495_390),
    # Which CLINC150 intents belong to which domain (the intent model leaves out the shopping-like ones).
    "clinc150/domains": Remote(
        f"{_GITHUB_RAW}/clinc/oos-eval/828f8093932c8fe6ca7936c3d2e52903b1c523de/data/domains.json",
        "sha256:b947b579d3b8e74b06f93b01083d8efaff2888b43a3e362533bd88a6e1211b3a",
        "CC BY 3.0", "https://github.com/clinc/oos-eval", "clinc150/domains.json", 3_818),
    # Bitext's 26,872 customer-support utterances, 27 intents (the file in ../shared is a 5,304-row
    # sample of Bitext's data): pinned by its Git blob id at commit 72ea220.
    "bitext": Remote(
        f"{_GITHUB_RAW}/bitext/customer-support-llm-chatbot-training-dataset/72ea2203180d14a416b579c657033ecd21e59a11/"
        "data/Bitext_Sample_Customer_Support_Training_Dataset_27K_responses-v11.csv",
        "git-sha1:404649b80bb5ec57463d7ce7e17bc48e63b01fbc",
        "CDLA-Sharing-1.0", "https://github.com/bitext/customer-support-llm-chatbot-training-dataset",
        config.BITEXT_DOWNLOAD),
    # ISNet "general use", float32 ONNX (about 179 MB; ../shared holds an 8-bit quantisation): rembg's URL and pin.
    "isnet": Remote(
        "https://github.com/danielgatis/rembg/releases/download/v0.0.0/isnet-general-use.onnx",
        "md5:fc16ebd8b0c10d971d3513d564d01e29", "MIT (xuebinqin/DIS)", "https://github.com/xuebinqin/DIS",
        config.ISNET_DOWNLOAD),
}
for _name, _sub, _licence in (("punkt_tab", "tokenizers", "Apache-2.0 (NLTK's Punkt models)"),
                              ("stopwords", "corpora", "see the package's README"),
                              ("wordnet", "corpora", "WordNet 3.0 licence (Princeton)"),
                              ("words", "corpora", "public domain")):
    REGISTRY[f"nltk/{_name}"] = Remote(
        f"{_GITHUB_RAW}/nltk/nltk_data/gh-pages/packages/{_sub}/{_name}.zip", "nltk-index", _licence,
        "https://www.nltk.org/nltk_data/", f"{config.NLTK_DOWNLOAD}/{_sub}/{_name}.zip")


def git_blob_sha1(path: str | Path) -> str:
    """The file's Git blob id: SHA-1 of ``blob <size>\\0`` followed by its bytes."""
    path = Path(path)
    h = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_hash(path: str | Path, algorithm: str) -> str:
    """``algorithm:hex`` of a file (``sha256``, ``md5``, ``sha1`` ... or ``git-sha1``)."""
    if algorithm == "git-sha1":
        return f"git-sha1:{git_blob_sha1(path)}"
    import pooch

    return f"{algorithm}:{pooch.file_hash(str(path), alg=algorithm)}"


def check(path: str | Path, expected: str, name: str) -> None:
    """Raise ``DownloadError`` naming ``path`` and both hashes unless the file hashes to ``expected``."""
    algorithm = expected.split(":", 1)[0]
    found = file_hash(path, algorithm)
    if found.lower() != expected.lower():
        raise DownloadError(f"{name}: {path} does not have the registry's hash: expected {expected}, "
                            f"found {found}. Delete the file to download it again, or check where it came from.")


def _nltk_entry(remote: Remote, name: str) -> Remote:
    """``remote`` with the MD5 and size that NLTK's index publishes for its package."""
    import pooch

    package = name.split("/", 1)[1]
    with tempfile.TemporaryDirectory() as tmp:
        index = pooch.retrieve(NLTK_INDEX, known_hash=None, fname="index.xml", path=tmp)
        root = ET.parse(index).getroot()
    for node in root.iter("package"):
        if node.get("id") == package:
            return replace(remote, url=node.get("url") or remote.url, hash=f"md5:{node.get('checksum')}",
                           size=int(node.get("size")) if node.get("size") else None)
    raise DownloadError(f"{name}: NLTK's index ({NLTK_INDEX}) has no package {package!r}")


def _progress(name: str):
    """A byte progress bar for pooch (``config.progress_bar`` decides its kind)."""
    return config.progress_bar()(total=0, unit="B", unit_scale=True, unit_divisor=1024, desc=f"downloading {name}")


def local(name: str) -> Path | None:
    """The downloaded copy of registry file ``name`` if it is there (not hashed: ``fetch`` checked it when it came)."""
    path = config.downloads_dir() / REGISTRY[name].fname
    return path if path.is_file() else None


def fetch(name: str, download: bool | None = None) -> Path:
    """The checked local copy of registry file ``name``, downloaded first when it is missing.

    ``download`` defaults to "not ``SHOPBOT_OFFLINE``"; without it a missing file is a
    ``DownloadError`` that says where to put it. A file there already is hashed again (a wrong one is
    an error, never silently replaced).
    """
    if name not in REGISTRY:
        raise ValueError(f"unknown download {name!r}; the registry has {sorted(REGISTRY)}")
    remote = REGISTRY[name]
    path = config.downloads_dir() / remote.fname
    download = not config.offline() if download is None else download
    if path.is_file():
        if remote.hash != "nltk-index":  # NLTK's checksum comes from its index: checked when downloaded
            check(path, remote.hash, name)
        return path
    if not download:
        raise DownloadError(f"{name}: {path} is not here and downloads are off (SHOPBOT_OFFLINE=1); "
                            f"download {remote.url} there, or unset SHOPBOT_OFFLINE")
    import pooch
    import requests

    try:
        if remote.hash == "nltk-index":
            remote = _nltk_entry(remote, name)
        size = f"{remote.size / 1e6:.1f} MB, " if remote.size else ""
        logger.info("downloading %s (%s%s) from %s to %s", name, size, remote.licence, remote.url, path)
        expected = remote.hash
        downloader = pooch.HTTPDownloader(progressbar=_progress(name), chunk_size=1 << 20)

        def checked(url: str, output_file: str, pup) -> None:
            downloader(url, output_file, pup)
            check(output_file, expected, name)  # refused before the rename: pooch deletes its temporary file

        quiet, level = pooch.get_logger(), pooch.get_logger().level
        quiet.setLevel("WARNING")  # its "use this hash as known_hash" hint does not apply: we checked it
        try:
            pooch.retrieve(remote.url, known_hash=None, fname=path.name, path=path.parent, downloader=checked)
        finally:
            quiet.setLevel(level)
    except (requests.RequestException, OSError) as exc:
        raise DownloadError(f"{name}: could not download {remote.url} ({exc}); put the file at {path}") from None
    logger.info("%s: %s checked (%s)", name, path, remote.hash)
    return path


def write_atomic(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder, fsynced, then renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


#: The CLINC150 lists that may be used for training (``data_full.json`` also has ``test`` and ``oos_test``).
CLINC_TRAINING_LISTS = ("train", "val", "oos_train", "oos_val")


def clinc_train_val(source: str | Path) -> bytes:
    """CLINC150's training lists of ``data_full.json`` in the layout of ``../shared``'s ``data_train_val.json``
    (byte for byte: the same lists, ``json.dumps`` defaults); its test lists are left out."""
    data = json.loads(Path(source).read_text())
    missing = [k for k in CLINC_TRAINING_LISTS if k not in data]
    if missing:
        raise DownloadError(f"{source} has no {missing} lists: is it CLINC150's data_full.json?")
    return json.dumps({k: data[k] for k in CLINC_TRAINING_LISTS}).encode()


def fetch_clinc(download: bool | None = None) -> Path:
    """CLINC150's ``data_train_val.json`` (made from the checked ``data_full.json``) with its ``domains.json``
    beside it, under ``downloads_dir()``."""
    target = config.downloads_dir() / config.CLINC_DOWNLOAD
    domains = fetch("clinc150/domains", download)
    if domains.parent != target.parent:
        raise DownloadError(f"{domains} must sit beside {target}")
    if not target.is_file():
        write_atomic(target, clinc_train_val(fetch("clinc150", download)))
    return target


def fetch_bitext(download: bool | None = None) -> Path:
    """Bitext's public CSV, checked, with the columns the intent model reads."""
    path = fetch("bitext", download)
    with open(path, encoding="utf-8", errors="replace") as f:
        header = f.readline()
    if not {"instruction", "intent"} <= {c.strip().strip('"') for c in header.split(",")}:
        raise DownloadError(f"bitext: {path} has no 'instruction' and 'intent' columns (header: {header[:200]!r})")
    return path
