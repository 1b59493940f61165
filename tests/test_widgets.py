"""The chat's widget tree (shopbot_utils.widgets) without a browser: type and submit, upload the way
ipywidgets 8's front end does, click the buttons, and read the history."""
from __future__ import annotations

import json

import ipywidgets as w
import pytest

from shopbot_utils.chat import EXAMPLE_PHOTO, Conversation
from shopbot_utils.widgets import ChatApp


@pytest.fixture(scope="module")
def chat_bot(chat_artifacts):
    from shopbot_utils import ShopBot

    return ShopBot.load(chat_artifacts)


@pytest.fixture
def app(chat_bot, catalogue, tmp_path):
    return ChatApp(Conversation(chat_bot, catalogue=catalogue, feedback_log=tmp_path / "feedback.jsonl"))


def walk(widget):
    yield widget
    for child in getattr(widget, "children", ()):
        yield from walk(child)


def buttons(root, description=None):
    return [b for b in walk(root) if isinstance(b, w.Button) and (description is None or b.description == description)]


def html_of(root) -> str:
    return "\n".join(h.value for h in walk(root) if isinstance(h, w.HTML))


def rows(app, role):
    return [r for r in app.turns.children if f"shopbot-row-{role}" in r._dom_classes]


def press_enter(app, text):
    app.text.value = text
    app.text._handle_custom_msg({"event": "submit"}, [])  # what the front end sends on Enter


def upload(app, name, data):
    app.upload.set_state({"value": [{"name": name, "type": "image/jpeg", "size": len(data),
                                     "content": memoryview(data), "last_modified": 1_700_000_000_000}]})


def test_empty_state_greets_with_examples(app):
    assert len(rows(app, "bot")) == 1 and not rows(app, "shopper")
    assert "ShopBot" in html_of(app.app) and "Try one of these" in html_of(app.app)
    chips = [b.description for b in walk(app.turns) if isinstance(b, w.Button) and "shopbot-chip" in b._dom_classes]
    assert EXAMPLE_PHOTO in chips and "Track my order" in chips


def test_enter_and_send_button_send_and_clear_the_box(app):
    press_enter(app, "How much is shipping?")
    assert app.text.value == "" and len(rows(app, "shopper")) == 1 and len(rows(app, "bot")) == 2
    assert "How much is shipping?" in html_of(rows(app, "shopper")[0])
    app.text.value = "casual shoes for men"
    app.send_button.click()
    assert len(rows(app, "bot")) == 3 and buttons(rows(app, "bot")[-1], "More like this")
    press_enter(app, "   ")  # nothing to send: nothing happens
    assert len(rows(app, "bot")) == 3 and not app.text.disabled


def test_typing_bubble_and_disabled_composer_while_a_turn_runs(app, monkeypatch):
    seen = {}
    send = app.conversation.send

    def slow_send(*args, **kwargs):
        seen["typing"] = "ShopBot is typing" in html_of(app.turns)
        seen["echo"] = "where is my order" in html_of(app.turns)
        seen["disabled"] = app.text.disabled and app.send_button.disabled and app.upload.disabled
        return send(*args, **kwargs)
    monkeypatch.setattr(app.conversation, "send", slow_send)
    press_enter(app, "where is my order")
    assert seen == {"typing": True, "echo": True, "disabled": True}
    assert "ShopBot is typing" not in html_of(app.turns) and not app.text.disabled


def test_photo_upload_preview_send_cards_more_like_this(app, catalogue, chat_bot):
    pid = int(chat_bot.products[chat_bot.products["articleType"] == "Casual Shoes"].index[0])
    data = catalogue.image_path(pid).read_bytes()
    upload(app, "my shoe.jpg", data)
    assert app.upload.value == ()  # the bytes left the widget state at once
    assert app.preview.layout.display == "flex" and "my shoe.jpg" in html_of(app.preview)
    app.send_button.click()
    assert app.preview.layout.display == "none" and app.conversation.turns[-1].kind == "products"
    shopper = html_of(rows(app, "shopper")[-1])
    assert 'alt="your photo my shoe.jpg"' in shopper and "data:image/jpeg;base64," in shopper
    answer = rows(app, "bot")[-1]
    # a catalogue packshot: the switch's default (auto) searches it as it is, and says so
    assert "background removed" not in html_of(answer) and "Background kept: the photo already looks" in html_of(answer)
    cards = [c for c in walk(answer) if "shopbot-card" in getattr(c, "_dom_classes", ())]
    assert 0 < len(cards) <= 8 and all('alt="' in html_of(c) for c in cards)
    assert "similarity" in html_of(cards[0])
    more = buttons(answer, "More like this")[0]
    assert more.tooltip.startswith("More like ")
    more.click()
    assert app.conversation.turns[-1].kind == "products"
    assert html_of(rows(app, "shopper")[-1]).count("More like this") == 1


def test_show_more_adds_a_page(app):
    press_enter(app, "casual shoes for men")
    first = rows(app, "bot")[-1]
    buttons(first, "Show more")[0].click()
    assert app.conversation.turns[-1].kind in ("products", "answer")
    assert len(rows(app, "bot")) == 3


def test_quick_replies_only_under_the_latest_turn_and_gone_once_clicked(app):
    def chips():
        return [b for b in walk(app.turns) if isinstance(b, w.Button) and "shopbot-chip" in b._dom_classes]
    first = chips()
    track = next(b for b in first if b.description == "Track my order")
    track.click()
    now = chips()
    assert not set(map(id, first)) & set(map(id, now))  # the greeting's chips are gone
    assert app.turns.children[-1] is app._chips  # the new ones sit under the newest turn
    assert "Track my order" in html_of(rows(app, "shopper")[-1])


def test_thumbs_write_the_feedback_log(app):
    press_enter(app, "How much is shipping?")
    answer = rows(app, "bot")[-1]
    buttons(answer, "Not helpful")[0].click()
    record = json.loads(app.conversation.feedback_log.read_text().splitlines()[-1])
    assert record["verdict"] == "down" and record["asked"]["text"] == "How much is shipping?"
    assert "not helpful" in html_of(answer) and not buttons(answer, "Helpful")


def test_new_chat_button_clears_the_history(app):
    press_enter(app, "casual shoes for men")
    app.new_chat.click()
    assert len(app.turns.children) == 2 and len(rows(app, "bot")) == 1  # greeting and its chips
    assert len(app.conversation.turns) == 1


def test_typed_and_uploaded_markup_is_shown_as_text(app):
    press_enter(app, "<script>alert('x')</script><img src=x onerror=alert(1)>")
    shopper = html_of(rows(app, "shopper")[-1])
    assert "<script>" not in shopper and "<img src=x" not in shopper
    assert "&lt;script&gt;" in shopper and "&lt;img src=x onerror=alert(1)&gt;" in shopper
    upload(app, "<img src=x onerror=alert(1)>.jpg", b"not a photo at all")
    assert "<img src=x" not in html_of(app.preview)
    app.send_button.click()
    assert "<img src=x" not in html_of(app.turns)
    assert app.conversation.turns[-1].kind == "error" and not app.text.disabled


def test_errors_keep_the_app_usable(app):
    upload(app, "empty.jpg", b"")
    app.send_button.click()
    assert app.conversation.turns[-1].kind == "error"
    assert "shopbot-bubble-error" in rows(app, "bot")[-1].children[1]._dom_classes
    assert "\u26a0" in html_of(rows(app, "bot")[-1])  # marked by a sign and words, not colour alone
    press_enter(app, "How much is shipping?")
    assert app.conversation.turns[-1].kind == "answer"


def test_thumbs_say_so_when_feedback_cannot_be_saved(chat_bot, catalogue, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")  # the log's folder cannot be made: as a read-only artifacts folder
    app = ChatApp(Conversation(chat_bot, catalogue=catalogue, feedback_log=blocker / "feedback.jsonl"))
    press_enter(app, "How much is shipping?")
    answer = rows(app, "bot")[-1]
    buttons(answer, "Helpful")[0].click()
    assert "could not be saved" in html_of(answer) and not buttons(answer, "Helpful")


def test_cards_show_near_matches_and_open_their_collapsed_listings(app, chat_bot):
    from dataclasses import replace

    found = chat_bot.search("casual shoes", k=4)
    others = tuple(p.id for p in found[1:])
    product = replace(found[0], duplicates=3, duplicate_ids=others, near_match="close colour")
    card = app._card(product, similarity=False)
    assert "near match: close colour" in html_of(card)
    plain = app._card(replace(product, duplicates=0, duplicate_ids=(), near_match=""), similarity=False)
    assert "near match" not in html_of(plain) and not buttons(plain, "+3 similar listings")
    buttons(card, "+3 similar listings")[0].click()
    turn = app.conversation.turns[-1]
    assert turn.kind == "products" and tuple(p.id for p in turn.products) == others
    assert "More like this" in [b.description for b in buttons(rows(app, "bot")[-1])]


def test_the_background_switch_offers_auto_on_off(app, catalogue, chat_bot):
    switch = app.remove_background
    assert isinstance(switch, w.ToggleButtons) and list(switch.options) == [("Auto", "auto"), ("On", "on"), ("Off", "off")]
    assert switch.value == "auto" and app.conversation.remove_background == "auto"
    pid = int(chat_bot.products[chat_bot.products["articleType"] == "Casual Shoes"].index[0])
    data = catalogue.image_path(pid).read_bytes()
    switch.value = "on"
    assert app.conversation.remove_background == "on"
    upload(app, "shoe.jpg", data)
    app.send_button.click()
    answer = html_of(rows(app, "bot")[-1])
    assert 'alt="your photo with the background removed"' in answer and "Background removed with " in answer
    switch.value = "off"
    upload(app, "shoe.jpg", data)
    app.send_button.click()
    answer = html_of(rows(app, "bot")[-1])
    assert "background removed" not in answer and "Background kept: removal is off." in answer
    app.new_chat.click()  # the switch stays where the shopper put it
    buttons(app.turns, EXAMPLE_PHOTO)[0].click()  # and the example chip follows it too
    assert app.conversation.turns[-1].background == "background kept: removal is off"
