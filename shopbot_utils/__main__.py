"""Command line: ``python -m shopbot_utils {similar,classify,refine,more-like,search,ask,serve,data,build,report,golden,book,colab,download}``."""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from . import config
from .data import CatalogueNotFoundError, ImageError
from .downloads import DownloadError
from .text import NLTKDataError
from .vision import BACKBONES, ArtifactError

#: ``--background`` choices: ``auto`` removes the background only from photos that do not already look
#: like a catalogue packshot; the others always use that backend (``none``: never remove it).
BACKGROUND_CHOICES = ("auto", "none", "isnet", "grabcut", "modnet")


def _background_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--background", choices=BACKGROUND_CHOICES, default="auto",
                        help="what to do with the photo's background: auto (default) removes it unless the photo "
                             "already looks like a catalogue packshot; none keeps it; isnet, grabcut, modnet "
                             "always remove it with that backend")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m shopbot_utils", description="ShopBot from the command line.")
    p.add_argument("--artifacts", default=None, help="artifacts folder (default: SHOPBOT_ARTIFACTS or ./artifacts)")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("similar", help="catalogue products similar to a photo")
    s.add_argument("image")
    s.add_argument("-k", type=int, default=5, help="how many products (default 5)")
    _background_option(s)
    s.add_argument("--json", action="store_true", help="print JSON instead of a table")
    c = sub.add_parser("classify", help="the article type of a photo")
    c.add_argument("image")
    c.add_argument("--top", type=int, default=5)
    _background_option(c)
    f = sub.add_parser("refine", help='products like a photo or a product, with what the text asks ("in black")')
    f.add_argument("anchor", metavar="ID_OR_PHOTO", help="a catalogue product id or a photo")
    f.add_argument("text", help='what to change, e.g. "in black" or "for women"')
    f.add_argument("-k", type=int, default=5, help="how many products (default 5)")
    _background_option(f)
    f.add_argument("--json", action="store_true", help="print JSON instead of a table")
    m = sub.add_parser("more-like", help="catalogue products that look like product ID (never itself)")
    m.add_argument("id", type=int, metavar="ID")
    m.add_argument("-k", type=int, default=5, help="how many products (default 5)")
    m.add_argument("--json", action="store_true", help="print JSON instead of a table")
    a = sub.add_parser("ask", help="answer a shopper's message (intent, confidence, reply)")
    a.add_argument("text")
    a.add_argument("--json", action="store_true", help="print JSON instead of text")
    t = sub.add_parser("search", help="catalogue products for a text query")
    t.add_argument("text")
    t.add_argument("-k", type=int, default=5, help="how many products (default 5)")
    t.add_argument("--json", action="store_true", help="print JSON instead of a table")
    d = sub.add_parser("data", help="find (extract or download) the catalogue and report on it")
    d.add_argument("--data", default=None, help="Kaggle zip or folder (default: SHOPBOT_DATA, cache, download)")
    b = sub.add_parser("build", help="run the whole pipeline without notebooks")
    b.add_argument("--data", default=None, help="Kaggle zip or folder (default: SHOPBOT_DATA, cache, download)")
    b.add_argument("--per-class", type=int, default=None, help="at most this many products per class")
    b.add_argument("--epochs", type=int, default=5)
    b.add_argument("--backbone", choices=sorted(BACKBONES), default="efficientnet_lite0")
    b.add_argument("--mode", choices=["auto", "cpu", "full"], default="auto")
    b.add_argument("--scope", choices=["catalogue", "split"], default="catalogue")
    r = sub.add_parser("report", help="copy executed notebooks back into notebooks/, scrubbed, and fill "
                                       "docs/results.json and the README's results from them (make report)")
    r.add_argument("executed", help="folder of executed notebooks (make run writes <artifacts>/notebooks)")
    v = sub.add_parser("serve", help="the HTTP API over one bot (make serve); docs at /docs")
    v.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    v.add_argument("--port", type=int, default=8765)
    v.add_argument("--token", default=None, help="bearer token every call but /health needs (default: "
                   "SHOPBOT_API_TOKEN); required to bind beyond this machine, unless --behind-proxy")
    v.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                   help="a Host name to answer besides localhost/127.0.0.1 (repeat; '*' for any)")
    v.add_argument("--behind-proxy", action="store_true",
                   help="a reverse proxy in front authenticates: bind beyond this machine without a token")
    v.add_argument("--concurrency", type=int, default=2, help="model calls at once (default 2)")
    v.add_argument("--queue", type=int, default=32, help="calls that may wait; the next get 503 busy (default 32)")
    g = sub.add_parser("golden", help="execute notebooks at small parameters into tests/golden (make golden)")
    g.add_argument("notebooks", nargs="+", help="the notebooks, in order")
    k = sub.add_parser("book", help="build the course's website from the executed notebooks (make book)")
    k.add_argument("--out", default=None, help="build folder (default: book/_build; the site is in its html/)")
    o = sub.add_parser("colab", help="write the repository URL of pyproject.toml into the notebooks' badges and "
                                     "Colab cells, with their prerequisites cells (make colab)")
    o.add_argument("notebooks", nargs="+")
    w = sub.add_parser("download", help="fetch registry files (Bitext, CLINC150, ISNet, NLTK's data), checked by hash")
    w.add_argument("names", nargs="*", help="registry names (default: all)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status (2 for bad input)."""
    args = _parser().parse_args(argv)
    config.setup_logging()
    try:
        if args.command == "data":
            from .data import load_catalogue

            catalogue = load_catalogue(args.data)
            print(f"catalogue: {catalogue.root}\n{catalogue.report.summary()}")
            return 0
        if args.command == "build":
            from .pipeline import build

            metrics = build(args.artifacts, args.data, args.per_class, args.backbone, args.mode,
                            args.epochs, args.scope)
            print(json.dumps(metrics, indent=1))
            return 0
        if args.command == "book":
            from .book import BUILD_DIR, build_book

            print(f"wrote {build_book(args.out or BUILD_DIR) / 'index.html'}")
            return 0
        if args.command == "colab":
            from .report import sync_notebooks

            changed = sync_notebooks(args.notebooks)
            print(f"repository {config.repository_url()}: " + (", ".join(map(str, changed)) + " updated" if changed
                                                             else "every notebook already agrees"))
            return 0
        if args.command == "download":
            from . import downloads

            for name in args.names or list(downloads.REGISTRY):
                print(f"{name}: {downloads.fetch(name)}")
            return 0
        if args.command in ("report", "golden"):
            from . import report

            written = (report.write_report(args.executed) if args.command == "report"
                       else report.write_golden(args.notebooks))
            if args.command == "report":
                found = report.write_results()
                written += [report.RESULTS_FILE, report.README]
                print(f"{len(found)} results tables from the notebooks: {', '.join(found)}")
            print("\n".join(f"wrote {p}" for p in written))
            return 0
        if args.command == "serve":
            from .serve import LOCAL_NAMES, Settings, serve

            settings = Settings(host=args.host, port=args.port, token=args.token or config.api_token(),
                                allowed_hosts=tuple(LOCAL_NAMES) + tuple(args.allowed_host),
                                behind_proxy=args.behind_proxy, concurrency=args.concurrency, queue=args.queue)
            serve(args.artifacts, settings)
            return 0
        from .bot import ShopBot

        bot = ShopBot.load(args.artifacts)
        if args.command == "ask":
            reply = bot.ask(args.text)
            if args.json:
                print(json.dumps(asdict(reply), indent=1))
            else:
                print(f"[{reply.intent} {reply.confidence:.2f}] {reply.text}")
                if reply.understood:
                    print("understood:", ", ".join(f"{k}={v}" for k, v in reply.understood.items()))
                for p in reply.products:
                    print(f"  {p.id:>6}  {p.articleType:<18} {p.baseColour:<12} {p.productDisplayName}")
            return 0
        if args.command == "classify":
            cut = bot.cut_out(args.image, args.background)
            print(cut.note)
            for name, p in bot.classify(cut.query(), top=args.top, remove_background=False):
                print(f"{p:6.3f}  {name}")
            return 0
        cut = None
        if args.command == "search":
            products = bot.search(args.text, k=args.k)
        elif args.command == "more-like":
            products = bot.similar(args.id, k=args.k)
        elif args.command == "refine" and _product_id(args.anchor) is not None:
            products = bot.refine(_product_id(args.anchor), args.text, k=args.k)
        else:  # a photo: its background is dealt with here, so that the output can say what was done
            cut = bot.cut_out(args.image if args.command == "similar" else args.anchor, args.background)
            products = (bot.similar(cut.query(), k=args.k, remove_background=False) if args.command == "similar"
                        else bot.refine(cut.query(), args.text, k=args.k, remove_background=False))
        _show(products, cut, args.json)
        return 0
    except (ImageError, ArtifactError, CatalogueNotFoundError, NLTKDataError, DownloadError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _product_id(anchor: str) -> int | None:
    """``refine``'s ``ID_OR_PHOTO`` as a product id: digits that name no file."""
    return int(anchor) if anchor.strip().isdigit() and not Path(anchor).exists() else None


def _show(products: list, cut=None, as_json: bool = False) -> None:
    """Print products as a table (or JSON), after what was done to the photo's background (``cut``)
    and, for a search or refinement, what was understood."""
    understood = getattr(products, "understood", None)  # search() and refine() return Results
    if as_json:
        out = {} if cut is None else {"background": {"removed": cut.removed, "backend": cut.backend, "note": cut.note}}
        if understood is not None:
            out |= {"understood": understood, "relaxed": products.relaxed, "message": products.message,
                    "reply": products.reply, "ignored": products.ignored}
        print(json.dumps(out | {"products": [p.as_dict() for p in products]}, indent=1))
        return
    if cut is not None:
        print(cut.note)
    if understood is not None:
        print("understood: " + ("; ".join(f"{k}: {', '.join(v)}" for k, v in understood.items()) or "nothing specific"))
        if products.reply:
            print(products.reply)
    print(f"{'score':>6}  {'id':>6}  {'articleType':<18} {'colour':<12} {'gender':<7} name")
    for p in products:
        notes = ([f"+{p.duplicates} similar listings"] if p.duplicates else []) + \
            ([f"near match: {p.near_match}"] if p.near_match else [])
        print(f"{p.score:6.3f}  {p.id:>6}  {p.articleType:<18} {p.baseColour:<12} {p.gender:<7} "
              f"{p.productDisplayName}" + (f"  ({'; '.join(notes)})" if notes else ""))


if __name__ == "__main__":
    sys.exit(main())
