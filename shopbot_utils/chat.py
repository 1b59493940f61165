"""The shopper's conversation with ShopBot, with no widget in it (``widgets.py`` draws it).

A ``Conversation`` over a ``ShopBot`` takes the shopper's turn (text, a photo as bytes, or an action:
"more like this" on a product, "show more", a quick reply, "new chat") and returns the bot's turn: text,
the photo's cut-out, products and quick replies. It keeps the context a shopper expects: after a
search (by photo or by words), "in black", "for women" or "sports ones" refines *those* results;
"more like this" searches from a result's own embedding; "start over" clears. The background switch
(``remove_background``: auto, on, off) says what happens to a photo's background. Bad input (an empty
or 10,000-character message, a 0-byte, corrupt, huge or non-image file) gets a bot turn saying what
was wrong, never an exception, and the conversation carries on.
"""
from __future__ import annotations

import io
import json
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import pandas as pd
from PIL import Image

from .artifacts import append_line, write_atomic
from .background import AutoBackend, Backend, NoBackend
from .config import logger
from .data import ImageError, load_image
from .search import Query, parse_query
from .text import redact

if TYPE_CHECKING:  # a chat over the API (client.ShopBotClient) never imports torch
    from .bot import Product, ShopBot

#: Products shown per turn; "show more" adds as many again, up to ``MAX_RESULTS``.
PAGE = 8
MAX_RESULTS = 48
#: Longer messages are refused with a message (the parser reads 500 characters, NLTK 1,000).
MAX_MESSAGE_CHARS = 1000
#: Larger uploads are refused before they are decoded.
MAX_UPLOAD_BYTES = 20 * 1024 * 1024
#: Thumbnails are this many pixels on their longer side (product cards, the shopper's photo).
THUMB_PX = 160
#: ISNet's working size in the chat. 768 px (the library's default) cuts out best (mean IoU 0.87 on
#: notebook 05's pasted photos) but took 1.1 s a photo here, 3.1 s end to end in the browser test; 512
#: px (IoU 0.78) keeps a photo turn within the 1.5 s a shopper waits. ``Conversation(background=...)``
#: takes any backend or name.
CHAT_ISNET_SIZE = 512
#: The feedback log is rotated when it reaches this size, keeping ``FEEDBACK_BACKUPS`` older files (25 MB in all).
FEEDBACK_MAX_BYTES = 5 * 2**20
FEEDBACK_BACKUPS = 4
#: The background switch: ``auto`` removes it only from photos that do not already look like a
#: catalogue packshot (``background.AutoBackend``), ``on`` from every photo, ``off`` from none.
SWITCH = ("auto", "on", "off")
EXAMPLE_PHOTO = "Find shoes like mine"
START_OVER = "Start over"
#: What a first-time shopper can try (the greeting's chips).
STARTERS = ("Track my order", "How much is shipping?", "Black heels for women", EXAMPLE_PHOTO)
_RESET = re.compile(r"^\s*(start over|new chat|reset|clear( the chat)?|restart)\W*$", re.I)
_MORE_LIKE = re.compile(r"^\s*(show me )?(more|others?) like (this|these|that|those|it)\W*$", re.I)
_SHOW_MORE = re.compile(r"^\s*(show )?more( results| please)?\W*$", re.I)
#: Words that point back at the results on screen ("like these but in black", "sports ones").
_DEICTIC = re.compile(r"\b(this|these|that|those|them|it|ones?|same|similar|like)\b", re.I)


@dataclass
class Turn:
    """One bubble of the chat. ``role`` is ``shopper`` or ``bot``; ``kind`` is ``greeting``,
    ``answer``, ``products`` or ``error`` for the bot's turns and ``message`` for the shopper's."""

    role: str
    text: str = ""
    kind: str = "message"
    #: JPEG bytes: the shopper's photo (a thumbnail, not the upload) or the bot's cut-out of it.
    photo: bytes | None = None
    filename: str = ""
    products: list[Product] = field(default_factory=list)
    #: "show more" can add products to this turn's answer.
    more: bool = False
    quick_replies: list[str] = field(default_factory=list)
    intent: str = ""
    #: The products' scores are image cosine similarities (photo searches), not text-search ranks.
    similarity: bool = False
    id: int = 0
    #: For a photo search: what was done to the photo's background ("background kept: ...").
    background: str = ""


class FeedbackError(RuntimeError):
    """Feedback could not be saved; the message is for the shopper (the log has the cause)."""


def thumbnail_jpeg(img: Image.Image, size: int = THUMB_PX, quality: int = 85) -> bytes:
    """``img`` shrunk to ``size`` pixels on its longer side, as JPEG bytes."""
    small = img.convert("RGB")
    small.thumbnail((size, size))
    buf = io.BytesIO()
    small.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


class Thumbnails:
    """Catalogue thumbnails as JPEG bytes, made once from the images on disk: kept in memory and, with
    ``folder``, written there (whole or not at all) so the next session reads them instead of resizing
    again. A cached file that does not decode (a kernel killed while writing it) is made again."""

    def __init__(self, image_path: Callable[[int], Path] | None, folder: str | Path | None = None,
                 size: int = THUMB_PX):
        self.image_path, self.size = image_path, size
        self.folder = Path(folder) if folder is not None else None
        self._cache: dict[int, bytes | None] = {}

    def __call__(self, product_id: int) -> bytes | None:
        """The product's thumbnail, or None when its image is missing or unreadable."""
        product_id = int(product_id)
        if product_id not in self._cache:
            self._cache[product_id] = self._make(product_id)
        return self._cache[product_id]

    def _make(self, product_id: int) -> bytes | None:
        cached = self.folder / f"{product_id}.jpg" if self.folder is not None else None
        if cached is not None and cached.is_file():
            data = _read(cached)
            if _decodes(data):
                return data
            logger.warning("the cached thumbnail %s is damaged: making it again", cached)
        if self.image_path is None:
            return None
        try:
            data = thumbnail_jpeg(load_image(self.image_path(product_id)), self.size)
        except (ImageError, KeyError, OSError) as exc:
            logger.warning("no thumbnail for product %s: %s", product_id, exc)
            return None
        if cached is not None:
            try:
                write_atomic(cached, data)
            except OSError as exc:  # a read-only artifacts folder only costs the disk cache
                logger.warning("could not cache thumbnails in %s: %s", self.folder, exc)
                self.folder = None
        return data


class Conversation:
    """The chat's state and logic: ``send`` a message or photo, ``more_like_this``, ``show_more``,
    ``quick_reply``, ``new_chat`` and ``feedback``; each returns the bot's new ``Turn`` (all turns are
    in ``turns``).

    ``catalogue``: what gives product images (``Catalogue``; default: ``load_catalogue()`` when the
    catalogue is found, else cards have no pictures). ``feedback_log``: the JSON-lines file thumbs
    up/down are appended to (default ``<artifacts>/feedback.jsonl``). ``example_id``: the product whose
    photo the "Find shoes like mine" chip sends (default: a test-split shoe). ``background``: the
    backend (or name) that cuts products out (default ISNet at ``CHAT_ISNET_SIZE``, else GrabCut);
    ``remove_background``: the switch, one of ``SWITCH`` (default ``auto``)."""

    def __init__(self, bot: ShopBot, catalogue=None, feedback_log: str | Path | None = None,
                 thumbnails: Thumbnails | None = None, example_id: int | None = None, background=None,
                 remove_background: bool | str = "auto"):
        self.bot = bot
        self._background = background
        self._switch = _switch(remove_background)
        folder = bot.folder or Path(".")
        self.feedback_log = Path(feedback_log) if feedback_log is not None else folder / "feedback.jsonl"
        if catalogue is None:
            catalogue = _find_catalogue()
        self.catalogue = catalogue
        image_path = catalogue.image_path if catalogue is not None else None
        self.thumbnails = thumbnails or Thumbnails(image_path, folder / "thumbnails")
        self.example_id = example_id if example_id is not None else _example_id(bot)
        self.turns: list[Turn] = []
        self._next_id = 0
        self._colours: dict[str, pd.Series] = {}  # article type -> its colours, most products first
        self.new_chat()

    @property
    def background(self) -> Backend:
        """The backend that cuts products out when the switch says so (default: ISNet at
        ``CHAT_ISNET_SIZE``, else GrabCut)."""
        if self._background is None or isinstance(self._background, str):
            from .background import best_backend, get_backend

            name = self._background or "auto"
            if name == "auto":
                self._background = best_backend(size=CHAT_ISNET_SIZE)
            else:
                self._background = get_backend(name, size=CHAT_ISNET_SIZE) if name == "isnet" else get_backend(name)
        return self._background

    @property
    def remove_background(self) -> str:
        """The background switch: ``auto``, ``on`` or ``off`` (``SWITCH``; True and False also set it)."""
        return self._switch

    @remove_background.setter
    def remove_background(self, value: bool | str) -> None:
        self._switch = _switch(value)

    def backend_for(self, switch: bool | str | None = None) -> Backend:
        """The backend a photo goes through for a position of the switch (default: the current one)."""
        switch = self._switch if switch is None else _switch(switch)
        if switch == "off":
            return NoBackend()
        return AutoBackend(self.background) if switch == "auto" else self.background

    def warm_up(self) -> float:
        """Load every model a first turn would wait for (intents, MiniLM, the background model); seconds."""
        start = time.perf_counter()
        self.bot.ask("hello")
        self.bot.search("shoes", 1)
        _ = self.background
        return time.perf_counter() - start

    @property
    def context_query(self) -> Query | None:
        """What the products on screen answer (their constraints), which a refinement builds on; None
        when nothing is on screen."""
        return self._context["query"] if self._context else None

    # ------------------------------------------------------------------ what the shopper does
    def send(self, text: str = "", photo: bytes | None = None, filename: str = "",
             remove_background: bool | str | None = None) -> Turn:
        """The shopper sends ``text`` and/or a ``photo`` (the uploaded bytes). With a photo, the bot
        removes its background as the switch says (``remove_background``: one of ``SWITCH``, True for
        on, False for off; default: the conversation's switch), shows the cut-out when there is one and
        the most similar products, refined by the text when it asks for something ("in black")."""
        text = "" if text is None else str(text)
        upload = None if photo is None else decode_upload(photo)  # (image, None) or (None, what is wrong)
        shown_photo = thumbnail_jpeg(upload[0]) if upload is not None and upload[0] is not None else None
        self._add(Turn("shopper", text=text[:MAX_MESSAGE_CHARS], photo=shown_photo, filename=str(filename)[:200]))
        return self._answer(lambda: self._respond(text, upload, remove_background))

    def quick_reply(self, label: str) -> Turn:
        """A chip was clicked: its label is sent as a message (the example-photo chip sends its photo)."""
        if label == EXAMPLE_PHOTO:
            return self.send_example_photo()
        if label == START_OVER:
            return self.new_chat()
        return self.send(label)

    def send_example_photo(self) -> Turn:
        """Send the example product's catalogue photo, as a shopper would upload it."""
        if self.example_id is None or self.catalogue is None:
            self._add(Turn("shopper", text=EXAMPLE_PHOTO))
            return self._add(self._error("The example photo is not available here (the catalogue's images "
                                         "were not found). Upload a photo of your own."))
        path = Path(self.catalogue.image_path(self.example_id))
        return self.send(photo=path.read_bytes(), filename=f"example photo ({path.name})")

    def more_like_this(self, product_id: int) -> Turn:
        """Products that look like catalogue product ``product_id`` (never itself)."""
        name = self._name(product_id)
        self._add(Turn("shopper", text=f"More like this: {name}" if name else "More like this"))

        def respond() -> Turn:
            if name is None:
                return self._error(f"There is no product {product_id} in the catalogue any more.")
            self._context = {"anchor": int(product_id), "query": Query("")}
            return self._products(lambda k: self.bot.similar(int(product_id), k), f"Here are products like {name}.")
        return self._answer(respond)

    def similar_listings(self, product_id: int, ids: Sequence[int] | None = None) -> Turn:
        """The listings collapsed into a card ("+3 similar listings"; ``ids``, default: those of the
        latest card of ``product_id``), as cards of their own."""
        name = self._name(product_id)
        self._add(Turn("shopper", text=f"Similar listings: {name}" if name else "Similar listings"))

        def respond() -> Turn:
            listed = ids
            if listed is None:
                card = next((p for t in reversed(self.turns) for p in t.products if p.id == product_id), None)
                listed = card.duplicate_ids if card is not None else ()
            if not listed:
                return self._answer_text("That product has no other listings here.")
            listed = self.bot.lookup(list(listed)[:MAX_RESULTS])
            return self._products_turn(listed, f"Here are the {len(listed)} other listings like {name}.", more=False,
                                       similarity=False)
        return self._answer(respond)

    def show_more(self) -> Turn:
        """The next page of the last answer's products."""
        self._add(Turn("shopper", text="Show more"))

        def respond() -> Turn:
            if self._more is None:
                return self._answer_text("There is nothing more to show yet: ask for a product or send a photo.")
            fetch, shown, similarity = self._more
            found = fetch(min(shown + PAGE, MAX_RESULTS))
            page = list(found)[shown:shown + PAGE]
            if not page:
                self._more = None
                return self._answer_text("That is everything I found.")
            self._more = (fetch, shown + len(page), similarity)
            return self._products_turn(page, f"Here are {len(page)} more.", more=self._can_show_more(found),
                                       similarity=similarity)
        return self._answer(respond)

    def new_chat(self) -> Turn:
        """Clear the history and the context; the bot greets again."""
        self.turns.clear()
        self._context: dict | None = None  # {"anchor": product id or prepared photo, "query": Query}
        # the last answer's (fetch(k), products shown so far, whether its scores are image similarities)
        self._more: tuple[Callable[[int], list[Product]], int, bool] | None = None
        greeting = Turn("bot", kind="greeting", quick_replies=list(STARTERS), text=(
            "Hi, I'm ShopBot. Ask me about orders, delivery, returns or payment, search the catalogue in "
            "your own words (\"navy trainers for men\"), or send a photo of something you like and I'll "
            "find similar products."))
        return self._add(greeting)

    def feedback(self, turn_id: int, verdict: str) -> dict:
        """Thumbs up (``"up"``) or down (``"down"``) on bot turn ``turn_id``: one JSON line appended to
        ``feedback_log`` with what was asked, what was answered and the verdict. Returns the record.

        Texts are redacted first (``text.redact``: e-mail addresses, phone, card and order numbers) and a
        photo's file name is not kept; the log is rotated at ``FEEDBACK_MAX_BYTES`` and is safe to append
        to from several kernels. ``FeedbackError`` (a message for the shopper) when it cannot be written."""
        if verdict not in ("up", "down"):
            raise ValueError(f"verdict must be 'up' or 'down', got {verdict!r}")
        position = next((i for i, t in enumerate(self.turns) if t.id == turn_id and t.role == "bot"), None)
        if position is None:
            raise ValueError(f"no bot turn {turn_id} in this conversation")
        turn = self.turns[position]
        asked = next((t for t in reversed(self.turns[:position]) if t.role == "shopper"), None)
        record = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "turn": turn_id, "verdict": verdict,
                  "asked": {"text": redact(asked.text), "photo": asked.photo is not None or bool(asked.filename)}
                  if asked else None,
                  "answered": {"kind": turn.kind, "intent": turn.intent, "text": redact(turn.text),
                               "products": [p.id for p in turn.products]}}
        try:
            append_line(self.feedback_log, json.dumps(record, ensure_ascii=False), FEEDBACK_MAX_BYTES, FEEDBACK_BACKUPS)
        except OSError as exc:  # a read-only or full disk: the shopper is told, the log says why
            logger.warning("feedback not saved to %s: %s", self.feedback_log, exc)
            raise FeedbackError("Sorry, your feedback could not be saved right now.") from exc
        return record

    # ------------------------------------------------------------------ answering
    def _respond(self, text: str, upload: tuple | None, remove_background: bool | str | None) -> Turn:
        stripped = text.strip()
        problem = text_problem(text, has_photo=upload is not None)
        if problem:
            return self._error(problem)
        if upload is not None:
            image, problem = upload
            return self._error(problem) if problem else self._photo(image, stripped, remove_background)
        if _RESET.match(stripped):
            self.new_chat()
            return self.turns[-1]
        if _SHOW_MORE.match(stripped) and self._more is not None:
            self.turns.pop()  # show_more adds its own shopper turn
            return self.show_more()
        if _MORE_LIKE.match(stripped) and self._context and isinstance(self._context["anchor"], int):
            anchor = self._context["anchor"]
            return self._products(lambda k: self.bot.similar(anchor, k), "Here are more like it.")
        query = parse_query(stripped)
        if self._context is not None and self._refines(stripped, query):
            return self._refine(stripped, query)
        reply = self.bot.ask(stripped, search=False)  # _search finds the products, with the context
        if reply.intent == "product_search" or (reply.intent == "out_of_scope" and "articleType" in query.include):
            return self._search(stripped)
        return self._answer_text(reply.text, intent=reply.intent)

    def _photo(self, image: Image.Image, text: str, remove_background: bool | str | None) -> Turn:
        cut = self.bot.cut_out(image, self.backend_for(remove_background))
        prepared = cut.query()  # embedded as it is from here on: the background is dealt with
        query = parse_query(text)
        self._context = {"anchor": prepared, "query": query}
        cutout = thumbnail_jpeg(prepared, 2 * THUMB_PX) if cut.removed else None
        if query.fields:
            turn = self._products(lambda k: self.bot.refine(prepared, text, k, remove_background=False, query=query),
                                  "products like your photo", intro_from_results=True)
        else:
            turn = self._products(lambda k: self.bot.similar(prepared, k, remove_background=False),
                                  "the most similar products", intro_from_results=True)
        turn.photo, turn.background = cutout, cut.note
        if turn.products:  # "in black" keeps the type the reply named ("they look like ...")
            self._context["kind"] = _main_type(turn.products)
        return turn

    def _refines(self, text: str, query: Query) -> bool:
        """Does ``text`` refine the results on screen ("in black", "sports ones", "like these but for
        women") rather than start a new search ("black heels for women")?"""
        if not query.fields:
            return False
        return "articleType" not in query.include or bool(_DEICTIC.search(text))

    def _refine(self, text: str, query: Query) -> Turn:
        context = self._context
        combined = context["query"].then(query)
        context["query"] = combined
        anchor = context["anchor"]
        if anchor is None:  # a text search: search again with the combined constraints
            return self._search(combined.text, combined)
        if "articleType" not in combined.include and context.get("kind"):
            combined = Query(combined.text, {"articleType": [context["kind"]], **combined.include}, combined.exclude)
        return self._products(lambda k: self.bot.refine(anchor, text, k, remove_background=False, query=combined),
                              "the closest ones", intro_from_results=True)

    def _search(self, text: str, query: Query | None = None) -> Turn:
        def fetch(k: int):
            return self.bot.search(text, k, query=query)
        found = fetch(PAGE)
        if not found:
            return self._answer_text(found.message or "I could not find products for that. Try a product type "
                                     "and a colour, e.g. \"blue jeans for men\".", intent="product_search")
        self._context = {"anchor": None, "query": found.query or parse_query(text)}
        return self._products(fetch, found.reply or f"Here are {_describe(found.query)}.", first=found)

    def _products(self, fetch: Callable[[int], list[Product]], intro: str, first: list[Product] | None = None,
                  intro_from_results: bool = False) -> Turn:
        found = first if first is not None else fetch(PAGE)
        page = list(found)[:PAGE]
        similarity = first is None  # text searches pass their first page; image searches do not
        self._more = (fetch, len(page), similarity) if page else None
        if not page:
            return self._answer_text(getattr(found, "message", "") or "I found nothing like that in the catalogue.")
        if intro_from_results:  # a reply that says what it understood, else what the results look like
            intro = getattr(found, "reply", "") or f"These look like {_looks_like(page)}: here are {intro}."
        return self._products_turn(page, intro, more=self._can_show_more(found), similarity=similarity)

    def _products_turn(self, page: list[Product], text: str, more: bool, similarity: bool) -> Turn:
        return Turn("bot", text=text, kind="products", products=page, more=more, similarity=similarity,
                    quick_replies=self._refinement_chips(page), intent="product_search")

    def _can_show_more(self, found) -> bool:
        return self._more is not None and len(found) >= self._more[1] and self._more[1] < MAX_RESULTS

    def _refinement_chips(self, page: Sequence[Product]) -> list[str]:
        """Two other colours the shown type comes in, the other gender, and "Start over"."""
        kind = _main_type(page)
        shown = {p.baseColour for p in page}
        if kind not in self._colours:  # once per type, not a pass over the catalogue every turn
            products = self.bot.products
            self._colours[kind] = products.loc[products["articleType"] == kind, "baseColour"].value_counts()
        colours = self._colours[kind]
        chips = [f"in {c.lower()}" for c in colours.index if c not in shown and c and c != "Multi"][:2]
        genders = Counter(p.gender for p in page)
        chips.append("for men" if genders.get("Women", 0) > genders.get("Men", 0) else "for women")
        return chips + [START_OVER]

    def _answer_text(self, text: str, intent: str = "") -> Turn:
        asked = {t.text for t in self.turns if t.role == "shopper"}
        chips = [s for s in STARTERS if s not in asked][:3]
        return Turn("bot", text=text, kind="answer", intent=intent, quick_replies=chips)

    def _error(self, text: str) -> Turn:
        return Turn("bot", text=text, kind="error", quick_replies=[START_OVER] if self._context else [])

    def _answer(self, respond: Callable[[], Turn]) -> Turn:
        """Run one answer; an unexpected failure becomes an apologetic turn (logged), never a traceback."""
        try:
            turn = respond()
        except (ImageError, ValueError) as exc:
            turn = self._error(f"Sorry, I could not do that: {exc}")
        except Exception as exc:  # noqa: BLE001 - the shopper sees a message; the log has the traceback
            logger.exception("the chat failed to answer")
            turn = self._error(f"Sorry, something went wrong on my side ({type(exc).__name__}). Please try again.")
        return turn if any(t is turn for t in self.turns) else self._add(turn)

    # ------------------------------------------------------------------ helpers
    def _add(self, turn: Turn) -> Turn:
        self._next_id += 1
        turn.id = self._next_id
        self.turns.append(turn)
        return turn

    def _name(self, product_id) -> str | None:
        try:
            return str(self.bot.products.loc[int(product_id), "productDisplayName"])
        except (KeyError, ValueError, TypeError):
            return None


def text_problem(text: str, has_photo: bool = False) -> str | None:
    """What is wrong with a shopper's message, in the chat's words (the API answers with them too); None if nothing."""
    if not has_photo and not text.strip():
        return "Type a question, or choose a photo to search with."
    if len(text) > MAX_MESSAGE_CHARS:
        return (f"That message is {len(text):,} characters long; I read up to "
                f"{MAX_MESSAGE_CHARS:,}. Could you say it in fewer words?")
    return None


def upload_too_large(size: int) -> str:
    """The chat's words for an upload of ``size`` bytes, over ``MAX_UPLOAD_BYTES``."""
    return (f"That file is {size / 2**20:.1f} MB; I take photos up to "
            f"{MAX_UPLOAD_BYTES // 2**20} MB. A phone photo or a screenshot is plenty.")


def decode_upload(photo) -> tuple[Image.Image | None, str | None]:
    """The uploaded bytes as an image, decoded once: ``(image, None)``, or ``(None, what is wrong)``."""
    if not isinstance(photo, (bytes, bytearray, memoryview)):
        return None, "That upload is not a file I can read."
    photo = bytes(photo)
    if len(photo) > MAX_UPLOAD_BYTES:
        return None, upload_too_large(len(photo))
    try:
        return load_image(photo), None
    except ImageError as exc:
        return None, f"I could not use that file as a photo: {exc}."


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def _decodes(data: bytes) -> bool:
    """Is ``data`` a whole JPEG (not empty, not cut short)?"""
    if not data.startswith(b"\xff\xd8"):
        return False
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
        return True
    except Exception:  # noqa: BLE001 - any decoding failure means: make it again
        return False


def _switch(value: bool | str) -> str:
    """A position of the background switch (``SWITCH``); True is on, False off."""
    if isinstance(value, bool):
        value = "on" if value else "off"
    if value not in SWITCH:
        raise ValueError(f"the background switch is one of {', '.join(SWITCH)}, got {value!r}")
    return value


def _main_type(products: Sequence[Product]) -> str:
    """The article type most of ``products`` have (what a reply says they "look like")."""
    return Counter(p.articleType for p in products).most_common(1)[0][0]


def _looks_like(products: Sequence[Product]) -> str:
    """What most of ``products`` are, in words: their type, and the colour and gender most of them share
    ("black t-shirts for men")."""
    include = {"articleType": [_main_type(products)]}
    for field_, values in (("baseColour", [p.baseColour for p in products]), ("gender", [p.gender for p in products])):
        value, count = Counter(values).most_common(1)[0]
        if value and count * 2 > len(products):
            include[field_] = [value]
    return Query("", include).describe()


def _describe(query: Query | None) -> str:
    return query.describe() if query is not None and query.fields else "the best matches"


def _find_catalogue():
    from .data import load_catalogue

    try:
        return load_catalogue()
    except Exception as exc:  # noqa: BLE001 - no catalogue only costs the pictures
        logger.warning("product pictures are off: the catalogue was not found (%s)", exc)
        return None


def _example_id(bot: ShopBot) -> int | None:
    """A shoe from the test split (never trained on), else any product."""
    from .data import load_split

    try:
        split = load_split(bot.folder)
        test = split[split["split"] == "test"]
        shoes = test[test["articleType"].isin(["Casual Shoes", "Sports Shoes", "Formal Shoes"])]
        pick = shoes if len(shoes) else test
        return int(pick["id"].iloc[0]) if len(pick) else None
    except (FileNotFoundError, TypeError):
        return int(bot.products.index[0]) if bot.products is not None and len(bot.products) else None
