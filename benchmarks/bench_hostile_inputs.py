"""What hostile or unlucky inputs cost: a large photo's peak memory and a hostile message's time.

    python benchmarks/bench_hostile_inputs.py [--baseline facd5fd] [--backends grabcut,isnet] [--out PATH]

Each measurement runs in a fresh child process, once with this checkout's package and once with the
package as it was at ``--baseline`` (a git revision, exported with ``git archive``; ``--baseline ''``
skips it), on the same inputs:

- photos (the uploads of issue 27): a plain 6300x6300 PNG (about 100 KB) and a 40-megapixel JPEG, through
  what a chat turn does with a photo (decode, thumbnail, background removal, the CNN's tensor), after the
  same turn on a 1024x768 photo has loaded every model: the peak memory it adds (``VmHWM`` reset through
  ``/proc/self/clear_refs``, Linux only) and its seconds;
- messages: ``Preprocessor.normalize`` on 1,000-character hostile texts (the e-mail pattern's worst cases).

Prints a table and writes JSON (default ``<artifacts>/benchmarks/hostile_inputs.json``).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from shopbot_utils import config

ROOT = Path(__file__).resolve().parent.parent
CHILD = r"""
import json, sys, time
what = sys.argv[1]
if what == "text":
    from shopbot_utils.text import Preprocessor
    out = {}
    for name, text in json.loads(sys.argv[2]).items():
        start = time.perf_counter()
        Preprocessor.normalize(text)
        out[name] = time.perf_counter() - start
    print(json.dumps(out))
    raise SystemExit
from PIL import Image
from shopbot_utils.background import get_backend, prepare_query
from shopbot_utils.chat import thumbnail_jpeg
from shopbot_utils.data import load_image
from shopbot_utils.vision import to_tensor

def photo_turn(data, backend):
    image = load_image(data)
    thumbnail_jpeg(image)
    to_tensor([prepare_query(image, backend)])

def status(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))

backend = get_backend("isnet", size=512) if sys.argv[3] == "isnet" else get_backend(sys.argv[3])
for _ in range(2):
    photo_turn(Image.effect_noise((1024, 768), 40).convert("RGB"), backend)
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
before, start = status("VmRSS"), time.perf_counter()
photo_turn(open(sys.argv[2], "rb").read(), backend)
print(json.dumps({"seconds": time.perf_counter() - start, "added_mb": (status("VmHWM") - before) / 1024}))
"""
MESSAGES = {"'@\u33af' x 500": "@\u33af" * 500, "'@' x 1000": "@" * 999 + "a", "'a@' x 500": "a@" * 500,
            "'x@y.' x 250": "x@y." * 250}


def _photos(folder: Path) -> dict[str, Path]:
    """The issue's two uploads, written once into ``folder``."""
    plain, jpeg = folder / "plain_6300x6300.png", folder / "photo_40mp.jpg"
    Image.new("RGB", (6300, 6300), (30, 90, 160)).save(plain)
    yy, xx = np.mgrid[:5160, :7740].astype(np.uint16)
    rgb = np.stack([(xx // 31) % 256, (yy // 21) % 256, ((xx + yy) // 50) % 256], -1).astype(np.uint8)
    Image.fromarray(rgb).save(jpeg, quality=85)
    return {f"{plain.name} ({plain.stat().st_size // 1024} KB)": plain, f"{jpeg.name} ({jpeg.stat().st_size // 1024} KB)": jpeg}


def _child(package: Path, *args: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(package), "OMP_NUM_THREADS": "1"}
    # cwd too: ``python -c`` puts the working folder first on sys.path, before PYTHONPATH
    run = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True, env=env, cwd=package,
                         timeout=1800)
    if run.returncode:
        raise RuntimeError(f"the child failed: {run.stderr[-1500:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--artifacts", type=Path, default=config.artifacts_dir())
    p.add_argument("--baseline", default="facd5fd", help="git revision to compare with ('' for none)")
    p.add_argument("--backends", default="grabcut,isnet", help="background removal in the photo turn")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    out = args.out or args.artifacts / "benchmarks" / "hostile_inputs.json"
    work = Path(tempfile.mkdtemp(prefix="bench_hostile_"))
    packages = {"now": ROOT}
    if args.baseline:
        (work / "baseline").mkdir()
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.baseline, "shopbot_utils"], capture_output=True,
                                 check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(work / "baseline")], input=archive, check=True)
        packages[f"baseline ({args.baseline})"] = work / "baseline"
    backends = [b for b in args.backends.split(",") if b]
    if "isnet" in backends and not (os.environ.get("SHOPBOT_BG_MODEL") or (config.u2net_home() / "isnet-general-use.onnx").is_file()):
        print("no ISNet model (SHOPBOT_BG_MODEL): measuring with grabcut only", file=sys.stderr)
        backends = [b for b in backends if b != "isnet"]
    photos = _photos(work)
    rows = []
    for version, package in packages.items():
        for photo, path in photos.items():
            for backend in backends:
                found = _child(package, "photo", str(path), backend)
                rows.append({"version": version, "input": photo, "backend": backend,
                             "added_peak_mb": round(found["added_mb"], 1), "seconds": round(found["seconds"], 3)})
        timings = _child(package, "text", json.dumps(MESSAGES))
        rows += [{"version": version, "input": f"normalize {name}", "backend": "", "added_peak_mb": None,
                  "seconds": round(seconds, 4)} for name, seconds in timings.items()]
    table = pd.DataFrame(rows)
    pd.set_option("display.width", 200)
    print(table.to_string(index=False))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rows": rows, "cpu_count": os.cpu_count()}, indent=1))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
