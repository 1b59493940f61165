"""The chat as ipywidgets 8: ``ChatApp(bot).show()`` in a notebook (08) or served by Voilà.

The widgets only draw a ``chat.Conversation`` and pass the shopper's actions to it. Everything the
shopper typed or uploaded (text, file names) is escaped before it reaches an HTML widget, and an
upload's bytes are dropped from the ``FileUpload`` widget as soon as they are read, so they are not
kept in a saved notebook's widget state (the shopper's bubble shows a small re-encoded thumbnail).
"""
from __future__ import annotations

import base64
import html
from typing import Callable

import ipywidgets as w

from .chat import EXAMPLE_PHOTO, MAX_UPLOAD_BYTES, SWITCH, Conversation, FeedbackError, Turn, thumbnail_jpeg
from .data import ImageError, load_image

CSS = """
<style>
.shopbot-app { max-width: 880px; font-family: system-ui, -apple-system, "Segoe UI", sans-serif; }
.shopbot-header { align-items: center; justify-content: space-between; border-bottom: 1px solid #ddd; padding: 4px 8px; }
.shopbot-scroll { border: 1px solid #ddd; border-radius: 8px; background: #fafafa; }
/* the history grows and scrolls: nothing in it may shrink to fit the box */
.shopbot-turns, .shopbot-turns > *, .shopbot-bubble > *, .shopbot-card > * { flex: 0 0 auto !important; overflow: visible !important; }
.shopbot-bubble { overflow: visible !important; }
.shopbot-turns .widget-html, .shopbot-turns .widget-html-content { height: auto; line-height: normal; }
.shopbot-row { width: 100%; margin: 6px 0; align-items: flex-start; }
.shopbot-row-shopper { justify-content: flex-end; }
.shopbot-avatar { flex: 0 0 auto; }
.shopbot-avatar .shopbot-face { width: 32px; height: 32px; border-radius: 50%; display: inline-flex; align-items: center;
  justify-content: center; font-size: 13px; font-weight: 600; color: #fff; margin: 0 6px; }
.shopbot-face-bot { background: #35618f; }
.shopbot-face-shopper { background: #6b6b6b; }
.shopbot-bubble { max-width: 78%; padding: 6px 10px; border-radius: 12px; }
.shopbot-bubble-wide { width: calc(100% - 60px); max-width: none; }
button.shopbot-thumb { font-size: 11px; height: 24px; color: #444; }
.shopbot-bubble-bot { background: #fff; border: 1px solid #d9d9d9; border-top-left-radius: 2px; }
.shopbot-bubble-shopper { background: #dcebfb; border: 1px solid #b9d3ef; border-top-right-radius: 2px; }
.shopbot-bubble-error { background: #fff6e5; border: 1px solid #e0b45c; }
.shopbot-name { font-size: 11px; color: #555; font-weight: 600; }
.shopbot-text { white-space: pre-wrap; overflow-wrap: anywhere; line-height: 1.35; }
.shopbot-card { width: 172px; border: 1px solid #e0e0e0; border-radius: 8px; background: #fff; padding: 6px; }
.shopbot-card img { width: 160px; height: 160px; object-fit: contain; background: #fff; }
.shopbot-card-text { font-size: 12px; line-height: 1.3; }
.shopbot-near { color: #8a5a00; }
.shopbot-chip button, button.shopbot-chip { border-radius: 14px; }
.shopbot-typing { color: #555; font-style: italic; }
/* a phone's camera at once (the Photo button offers the library too); touch screens only */
.shopbot-camera { display: none !important; }
@media (pointer: coarse) { .shopbot-camera { display: inline-flex !important; } }
.shopbot-preview { align-items: center; border: 1px solid #b9d3ef; border-radius: 14px; padding: 2px 8px; background: #eef5fd; }
</style>
"""


def _img(data: bytes | None, alt: str, css: str = "", width: int | None = None) -> str:
    if not data:
        return ""
    size = f' width="{width}"' if width else ""
    return (f'<img src="data:image/jpeg;base64,{base64.b64encode(data).decode()}" alt="{html.escape(alt, quote=True)}"'
            f'{size} style="{css}">')


def _text(value: str) -> str:
    return f'<div class="shopbot-text">{html.escape(value)}</div>'


class ChatApp:
    """The shopper's chat: history (shopper right, ShopBot left, newest in view), a composer (text box,
    Send, photo button with a preview chip, background-removal switch), product cards with "More like
    this", quick replies, thumbs up/down, "New chat" and a typing bubble while a turn runs.

    ``bot``: a ``ShopBot`` or a ready ``Conversation``; ``kwargs`` go to ``Conversation``."""

    def __init__(self, bot, height: str = "560px", **kwargs):
        self.conversation = bot if isinstance(bot, Conversation) else Conversation(bot, **kwargs)
        self._pending: dict | None = None  # the chosen photo: {"name", "content"} until it is sent
        self._chips: w.Box | None = None
        self._busy = False

        self.new_chat = w.Button(description="New chat", icon="plus", tooltip="Clear the conversation and start again")
        self.new_chat.on_click(lambda _: self._run(self.conversation.new_chat))
        header = w.HBox([w.HTML("<b>ShopBot</b> &middot; your shopping assistant"), self.new_chat])
        header.add_class("shopbot-header")

        self.turns = w.VBox(layout=w.Layout(width="100%"))
        self.turns.add_class("shopbot-turns")
        # A scroll box laid out bottom-up keeps the newest turn in view without any JavaScript.
        self.scroll = w.Box([self.turns], layout=w.Layout(height=height, overflow_y="auto", display="flex",
                                                          flex_flow="column-reverse", padding="6px"))
        self.scroll.add_class("shopbot-scroll")

        self.text = w.Text(placeholder="Ask a question, or describe what you are looking for", continuous_update=True,
                           layout=w.Layout(flex="1 1 auto"))
        self.text.on_msg(self._on_text_msg)
        self.send_button = w.Button(description="Send", icon="paper-plane", button_style="primary",
                                    tooltip="Send the message (Enter)")
        self.send_button.on_click(lambda _: self.submit())
        self.send_button.add_class("shopbot-send")
        self.upload = w.FileUpload(accept="image/*", multiple=False, description="Photo", icon="camera",
                                   tooltip="Choose a photo of a product to find similar ones")
        self.upload.observe(self._on_upload, "value")
        self.upload.add_class("shopbot-photo")
        self.camera = w.FileUpload(accept="image/*", multiple=False, description="Camera", icon="camera",
                                   tooltip="Take a photo of a product")
        self.camera.observe(self._on_upload, "value")
        self.camera.add_class("shopbot-camera")  # app.page_head makes it open the camera (capture)
        # The background switch: auto (only photos that need it), on, off; the conversation keeps it.
        self.remove_background = w.ToggleButtons(
            options=[(label, value) for label, value in zip(("Auto", "On", "Off"), SWITCH)],
            value=self.conversation.remove_background, description="Remove background:",
            tooltips=["Only from photos that need it: a product on white is searched as it is",
                      "Cut the product out of every photo before searching", "Search with the photo as it is"],
            style={"description_width": "initial", "button_width": "48px"}, layout=w.Layout(width="auto"))
        self.remove_background.observe(self._on_switch, "value")
        self.remove_background.add_class("shopbot-background-switch")
        self.preview = w.HBox(layout=w.Layout(display="none"))
        self.preview.add_class("shopbot-preview")
        self.composer = w.VBox([self.preview, w.HBox([self.text, self.send_button]),
                                w.HBox([self.upload, self.camera, self.remove_background])])
        self.app = w.VBox([w.HTML(CSS), header, self.scroll, self.composer])
        self.app.add_class("shopbot-app")
        self._redraw()

    def show(self):
        """The widget to display (the last expression of a cell, or ``display(app.show())``)."""
        return self.app

    def _ipython_display_(self):  # so that a bare ``ChatApp(bot)`` in a cell shows the app
        from IPython.display import display

        display(self.app)

    # ------------------------------------------------------------------ the shopper's actions
    def submit(self) -> Turn | None:
        """Send what is in the composer (text and/or the chosen photo)."""
        text, photo = self.text.value, self._pending
        if not text.strip() and photo is None:
            self.text.focus()
            return None
        self.text.value = ""
        self._clear_preview()
        if photo is None:
            return self._run(lambda: self.conversation.send(text), Turn("shopper", text=text))
        echo = Turn("shopper", text=text, photo=photo["thumb"], filename=photo["name"])
        return self._run(lambda: self.conversation.send(text, photo["content"], photo["name"]), echo)

    def _on_switch(self, change):
        self.conversation.remove_background = change["new"]

    def _on_text_msg(self, _widget, content, _buffers):
        if content.get("event") == "submit":  # Enter in the text box
            self.submit()

    def _on_upload(self, change):
        files = change["new"]
        if not files:
            return
        f = files[0]
        name, size = str(f.get("name", "photo")), int(f.get("size", 0) or 0)
        content = f.get("content")
        data = b"" if content is None else bytes(content[:MAX_UPLOAD_BYTES + 1])  # enough to refuse a huge file
        change["owner"].value = ()  # the bytes are ours now: not kept in the widget's (saved) state
        thumb = None
        if len(data) <= MAX_UPLOAD_BYTES:
            try:
                thumb = thumbnail_jpeg(load_image(data))
            except ImageError:  # the bot explains what is wrong with it when it is sent
                pass
        self._pending = {"name": name, "content": data, "size": size, "thumb": thumb}
        remove = w.Button(description="", icon="times", tooltip="Remove the chosen photo", layout=w.Layout(width="32px"))
        remove.on_click(lambda _: self._clear_preview())
        label = w.HTML(f"Photo: <b>{html.escape(name)}</b> ({size / 1024:,.0f} KB), sent with your next message")
        picture = [w.HTML(_img(thumb, f"the chosen photo {name}", width=40))] if thumb else []
        self.preview.children = picture + [label, remove]
        self.preview.layout.display = "flex"
        self.text.focus()

    def _clear_preview(self):
        self._pending = None
        self.preview.children = []
        self.preview.layout.display = "none"

    def _run(self, action: Callable[[], Turn], echo: Turn | None = None) -> Turn | None:
        """Run one turn: the shopper's bubble (``echo``) at once, a typing bubble and a disabled composer
        while the bot works, then the conversation's new turns."""
        if self._busy:
            return None
        self._busy = True
        self._remove_chips()
        before = len(self.conversation.turns)
        kept = self.turns.children
        provisional = ((self._bubble(echo),) if echo is not None else ()) + (_typing_bubble(),)
        self._set_enabled(False)
        self.turns.children = kept + provisional
        try:
            turn = action()
        finally:
            self._busy = False
            self._set_enabled(True)
        if len(self.conversation.turns) < before or self.conversation.turns[0].id != self._first_id:
            self._redraw()  # a new chat
        else:
            self.turns.children = kept + tuple(self._bubble(t) for t in self.conversation.turns[before:])
            self._chips_for(self.conversation.turns[-1])
        self.text.focus()
        return turn

    def _set_enabled(self, enabled: bool):
        for widget in (self.text, self.send_button, self.upload, self.camera, self.new_chat, self.remove_background):
            widget.disabled = not enabled

    # ------------------------------------------------------------------ drawing
    def _redraw(self):
        self._first_id = self.conversation.turns[0].id
        self.turns.children = tuple(self._bubble(t) for t in self.conversation.turns)
        self._chips_for(self.conversation.turns[-1])

    def _bubble(self, turn: Turn) -> w.Widget:
        shopper = turn.role == "shopper"
        name = "You" if shopper else "ShopBot"
        parts: list[w.Widget] = [w.HTML(f'<div class="shopbot-name">{name}</div>')]
        if turn.photo is not None:
            alt = (f"your photo {turn.filename}" if shopper else "your photo with the background removed")
            parts.append(w.HTML(_img(turn.photo, alt, "border-radius:6px;max-width:160px;max-height:160px")))
        if turn.background:
            parts.append(w.HTML(f'<div class="shopbot-name shopbot-background-note">'
                                f'{html.escape(turn.background[:1].upper() + turn.background[1:])}.</div>'))
        if turn.photo is None and shopper and turn.filename:
            parts.append(w.HTML(_text(f"[file: {turn.filename}]")))
        if turn.text:
            prefix = "Sorry: " if turn.kind == "error" and not turn.text.startswith("Sorry") else ""
            parts.append(w.HTML(_text(("\u26a0 " if turn.kind == "error" else "") + prefix + turn.text)))
        if turn.products:
            parts.append(self._cards(turn))
        if not shopper and turn.kind != "greeting":
            parts.append(self._thumbs(turn))
        if turn.kind == "greeting":
            parts.append(w.HTML(_text("Try one of these, or type your own question:")))
        bubble = w.VBox(parts)
        bubble.add_class("shopbot-bubble")
        bubble.add_class(f"shopbot-bubble-{turn.role}")
        if turn.kind == "error":
            bubble.add_class("shopbot-bubble-error")
        if turn.products:
            bubble.add_class("shopbot-bubble-wide")
        avatar = w.HTML(f'<span class="shopbot-face shopbot-face-{turn.role}" title="{name}">{"You" if shopper else "SB"}</span>')
        avatar.add_class("shopbot-avatar")
        row = w.HBox([bubble, avatar] if shopper else [avatar, bubble])
        row.add_class("shopbot-row")
        row.add_class(f"shopbot-row-{turn.role}")
        row.add_class(f"shopbot-turn-{turn.id}")
        return row

    def _cards(self, turn: Turn) -> w.Widget:
        cards = [self._card(p, turn.similarity) for p in turn.products]
        grid = w.GridBox(cards, layout=w.Layout(grid_template_columns="repeat(auto-fill, 176px)", grid_gap="6px"))
        if not turn.more:
            return grid
        more = w.Button(description="Show more", icon="chevron-down", tooltip="Show more products like these")
        more.add_class("shopbot-show-more")

        def show_more(_):
            more.layout.display = "none"
            self._run(self.conversation.show_more)
        more.on_click(show_more)
        return w.VBox([grid, more])

    def _card(self, product, similarity: bool) -> w.Widget:
        thumb = self.conversation.thumbnails(product.id)
        name = html.escape(product.productDisplayName)
        facts = " &middot; ".join(html.escape(x) for x in (product.articleType, product.baseColour, product.gender) if x)
        score = (f'<br><span title="cosine similarity of the photos (1 = identical)">similarity {product.score:.2f}</span>'
                 if similarity else "")
        picture = _img(thumb, product.productDisplayName) or f'<div style="height:160px" role="img" aria-label="{name}">no picture</div>'
        near = (f'<br><span class="shopbot-near" title="it lacks some of what you asked for">near match: '
                f'{html.escape(product.near_match)}</span>' if product.near_match else "")
        info = w.HTML(f'{picture}<div class="shopbot-card-text"><b>{name}</b><br>{facts}{score}{near}</div>')
        button = w.Button(description="More like this", icon="search", tooltip=f"More like {product.productDisplayName}",
                          layout=w.Layout(width="160px"))
        button.on_click(lambda _, pid=product.id: self._run(lambda: self.conversation.more_like_this(pid)))
        parts = [info, button]
        if product.duplicates:  # the listings collapsed into this card, one click away
            n = product.duplicates
            listings = w.Button(description=f"+{n} similar listing{'s' if n != 1 else ''}", icon="clone",
                                tooltip=f"Show the {n} other listing{'s' if n != 1 else ''} like this one",
                                layout=w.Layout(width="160px"))
            listings.add_class("shopbot-listings")
            listings.on_click(lambda _, pid=product.id, ids=product.duplicate_ids: self._run(
                lambda: self.conversation.similar_listings(pid, ids)))
            parts.append(listings)
        card = w.VBox(parts)
        card.add_class("shopbot-card")
        return card

    def _thumbs(self, turn: Turn) -> w.Widget:
        up = w.Button(description="Helpful", icon="thumbs-up", tooltip="This answer was helpful", layout=w.Layout(width="auto"))
        down = w.Button(description="Not helpful", icon="thumbs-down", tooltip="This answer was not helpful",
                        layout=w.Layout(width="auto"))
        up.add_class("shopbot-thumb")
        down.add_class("shopbot-thumb")
        box = w.HBox([up, down])

        def vote(verdict):
            def click(_):
                try:
                    self.conversation.feedback(turn.id, verdict)
                    said = f'Thanks: you marked this answer {"helpful" if verdict == "up" else "not helpful"}.'
                except FeedbackError as exc:  # e.g. a read-only artifacts folder: say so, never silently
                    said = str(exc)
                box.children = [w.HTML(f'<span class="shopbot-name">{html.escape(said)}</span>')]
            return click
        up.on_click(vote("up"))
        down.on_click(vote("down"))
        return box

    def _chips_for(self, turn: Turn):
        """Quick replies under the latest bot turn only."""
        self._remove_chips()
        if turn.role != "bot" or not turn.quick_replies:
            return
        buttons = []
        for label in turn.quick_replies:
            b = w.Button(description=label, icon="camera" if label == EXAMPLE_PHOTO else "",
                         tooltip=("Send an example photo from the catalogue's test split" if label == EXAMPLE_PHOTO
                                  else f"Send \u201c{label}\u201d"), layout=w.Layout(width="auto"))
            b.add_class("shopbot-chip")
            b.on_click(lambda _, label=label: self._run(lambda: self.conversation.quick_reply(label)))
            buttons.append(b)
        self._chips = w.HBox(buttons, layout=w.Layout(flex_flow="row wrap", margin="0 0 0 44px"))
        self._chips.add_class("shopbot-chips")
        self.turns.children = self.turns.children + (self._chips,)

    def _remove_chips(self):
        if self._chips is not None:
            self.turns.children = tuple(c for c in self.turns.children if c is not self._chips)
            self._chips = None


def _typing_bubble() -> w.Widget:
    bubble = w.HTML('<span class="shopbot-face shopbot-face-bot">SB</span> '
                    '<span class="shopbot-typing" role="status">ShopBot is typing\u2026</span>')
    bubble.add_class("shopbot-typing-row")
    return bubble
