"""Paths, environment variables, the seed and logging: the one place that reads ``os.environ``."""
from __future__ import annotations

import logging
import os
import random
import re
from pathlib import Path

import numpy as np

SEED = 42
ROOT = Path(__file__).resolve().parent.parent
KAGGLE_DATASET = "paramaggarwal/fashion-product-images-small"
N_CLASSES = 37

logger = logging.getLogger("shopbot")


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name, "").strip()
    return Path(value).expanduser() if value else None


def data_source() -> Path | None:
    """``SHOPBOT_DATA``: the Kaggle zip or an extracted folder, if set."""
    return _env_path("SHOPBOT_DATA")


def cache_dir() -> Path:
    """Where downloaded and extracted data goes (``SHOPBOT_CACHE``, default ``data/cache``)."""
    return _env_path("SHOPBOT_CACHE") or ROOT / "data" / "cache"


def downloads_dir() -> Path:
    """Where the download registry keeps its checked files (``SHOPBOT_DOWNLOADS``, default ``<cache>/downloads``)."""
    return _env_path("SHOPBOT_DOWNLOADS") or cache_dir() / "downloads"


#: Names under ``downloads_dir()`` of what ``shopbot_utils.downloads`` fetches (or makes from a fetched file).
BITEXT_DOWNLOAD = "bitext/Bitext_Sample_Customer_Support_Training_Dataset_27K_responses-v11.csv"
CLINC_DOWNLOAD = "clinc150/data_train_val.json"
ISNET_DOWNLOAD = "isnet/isnet-general-use.onnx"
NLTK_DOWNLOAD = "nltk_data"


def artifacts_dir() -> Path:
    """Where the pipeline writes models, embeddings and metrics (``SHOPBOT_ARTIFACTS``)."""
    return _env_path("SHOPBOT_ARTIFACTS") or ROOT / "artifacts"


def figures_dir() -> Path:
    """Where notebooks save figures (``SHOPBOT_FIGURES``, default ``figures/``)."""
    return _env_path("SHOPBOT_FIGURES") or ROOT / "figures"


def resnet34_weights() -> Path | None:
    """``SHOPBOT_RESNET34_WEIGHTS``: a local torchvision ResNet-34 checkpoint for offline use."""
    return _env_path("SHOPBOT_RESNET34_WEIGHTS")


SHARED = ROOT.parent / "shared"


def _env_or_shared(name: str, shared_path: str, downloaded: str | None = None) -> Path | None:
    """The path in environment variable ``name``, else ``../shared/<shared_path>``, else
    ``downloads_dir()/<downloaded>``: the first that exists."""
    path = _env_path(name)
    if path is not None:
        return path
    for path in (SHARED / shared_path, downloads_dir() / downloaded if downloaded else None):
        if path is not None and path.exists():
            return path
    return None


def chromium_path() -> Path:
    """The browser the chat's browser test drives (``SHOPBOT_CHROMIUM``, default Debian's ``/usr/bin/chromium``)."""
    return _env_path("SHOPBOT_CHROMIUM") or Path("/usr/bin/chromium")


def intents_file() -> Path:
    """The intents JSON (``SHOPBOT_INTENTS``, default ``data/intents.json``)."""
    return _env_path("SHOPBOT_INTENTS") or ROOT / "data" / "intents.json"


def bitext_path() -> Path | None:
    """Bitext customer-support utterances (``SHOPBOT_BITEXT``, else ../shared, else the registry's download), or None."""
    return _env_or_shared("SHOPBOT_BITEXT", "nlp/bitext/bitext_customer_support_train.csv", BITEXT_DOWNLOAD)


def clinc_path() -> Path | None:
    """CLINC150 ``data_train_val.json`` (``SHOPBOT_CLINC``, else ../shared, else the registry's download), or None."""
    return _env_or_shared("SHOPBOT_CLINC", "nlp/clinc150/data_train_val.json", CLINC_DOWNLOAD)


def bg_model() -> Path | None:
    """``SHOPBOT_BG_MODEL``: the ISNet ONNX file, if set."""
    return _env_path("SHOPBOT_BG_MODEL")


def nltk_dir() -> Path:
    """Where the download registry puts NLTK's packages (searched after ``NLTK_DATA`` and NLTK's own places)."""
    return downloads_dir() / NLTK_DOWNLOAD


def repository_url() -> str:
    """The project's repository (``[project.urls] Repository`` in pyproject.toml): the one place the
    Colab badges, clone lines and README take it from. A fork changes that line and runs ``make colab``."""
    pyproject = ROOT / "pyproject.toml"
    if pyproject.is_file():
        match = re.search(r'^\s*Repository\s*=\s*"([^"]+)"', pyproject.read_text(), re.M)
        if match:
            return match.group(1)
    from importlib.metadata import PackageNotFoundError, metadata

    try:
        for entry in metadata("shopbot-utils").get_all("Project-URL") or []:
            label, _, url = entry.partition(",")
            if label.strip() == "Repository":
                return url.strip()
    except PackageNotFoundError:
        pass
    raise RuntimeError(f"no Repository URL in {pyproject} [project.urls]")


def u2net_home() -> Path:
    """Where rembg keeps its models (``U2NET_HOME``, default ``~/.u2net``): online users' ISNet."""
    return _env_path("U2NET_HOME") or Path.home() / ".u2net"


def modnet_model() -> Path | None:
    """``SHOPBOT_MODNET_MODEL``: a user's MODNet ONNX export, if set."""
    return _env_path("SHOPBOT_MODNET_MODEL")


def api_url() -> str:
    """``SHOPBOT_API_URL``: where the chat's kernels find the API (default ``http://127.0.0.1:8765``)."""
    return os.environ.get("SHOPBOT_API_URL", "").strip() or "http://127.0.0.1:8765"


def api_token() -> str | None:
    """``SHOPBOT_API_TOKEN``: the API's bearer token (required to serve beyond this machine), if set."""
    return os.environ.get("SHOPBOT_API_TOKEN", "").strip() or None


def chat_idle_seconds() -> float:
    """``SHOPBOT_CHAT_IDLE_S``: seconds after which the demo closes an idle chat (the page says so); 0: never."""
    try:
        return float(os.environ.get("SHOPBOT_CHAT_IDLE_S", "") or 600)
    except ValueError:
        return 600.0


def demo_hosts() -> list[str]:
    """``SHOPBOT_DEMO_HOSTS``: comma-separated names the demo's chat page answers besides localhost."""
    return [n.strip() for n in os.environ.get("SHOPBOT_DEMO_HOSTS", "").split(",") if n.strip()]


def demo_token() -> str | None:
    """``SHOPBOT_DEMO_TOKEN``: the chat page's token, required to serve it beyond this machine, if set."""
    return os.environ.get("SHOPBOT_DEMO_TOKEN", "").strip() or None


def offline() -> bool:
    """True when ``SHOPBOT_OFFLINE=1``: never try a download."""
    return os.environ.get("SHOPBOT_OFFLINE", "") in {"1", "true", "yes"}


def serving() -> bool:
    """True in a kernel that serves shoppers (Voila's ``make demo``): it never builds or downloads anything."""
    return bool(os.environ.get("VOILA_KERNEL_ID"))


def text_progress() -> bool:
    """``SHOPBOT_PROGRESS=text``: progress bars as plain text (``make run`` sets it, so that
    papermill's log shows them live) instead of notebook widgets."""
    return os.environ.get("SHOPBOT_PROGRESS", "") == "text"


def progress_bar():
    """The ``tqdm`` class for long steps (see ``text_progress``); ``SHOPBOT_PROGRESS=off`` hides
    them (the golden notebooks: a bar's timings would differ on every run)."""
    if os.environ.get("SHOPBOT_PROGRESS", "") == "off":
        from tqdm import tqdm

        class Quiet(tqdm):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **{**kwargs, "disable": True})

        return Quiet
    if text_progress():
        from tqdm import tqdm
    else:
        from tqdm.auto import tqdm
    return tqdm


def seed_everything(seed: int = SEED) -> None:
    """Seed Python, NumPy and PyTorch."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def setup_logging(level: int = logging.INFO) -> None:
    """Log ``shopbot`` messages to stderr once."""
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(level)
