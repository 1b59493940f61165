"""The chat's conversation logic (shopbot_utils.chat) on the small test artifacts, without widgets."""
from __future__ import annotations

import json
import os
from collections import Counter

import pytest
from PIL import Image

from conftest import image_bytes, random_image
from shopbot_utils.background_bench import make_composites
from shopbot_utils.chat import (EXAMPLE_PHOTO, MAX_RESULTS, PAGE, START_OVER, STARTERS, Conversation, FeedbackError,
                                Thumbnails)
from shopbot_utils.data import ImageError, load_image
from shopbot_utils.search import TYPE_NAMES, TYPE_NEIGHBOURS


@pytest.fixture(scope="module")
def chat_bot(chat_artifacts):
    from shopbot_utils import ShopBot

    return ShopBot.load(chat_artifacts)


@pytest.fixture
def chat(chat_bot, catalogue, tmp_path):
    return Conversation(chat_bot, catalogue=catalogue, feedback_log=tmp_path / "feedback.jsonl")


def exact_matches(products) -> list:
    """The cards that have everything asked for: they come first, near matches (marked) after them."""
    exact = [p for p in products if not p.near_match]
    assert products[:len(exact)] == exact and products, products
    return exact


def _photo(catalogue, chat_bot, article_type: str) -> tuple[int, bytes]:
    pid = int(chat_bot.products[chat_bot.products["articleType"] == article_type].index[0])
    return pid, catalogue.image_path(pid).read_bytes()


def test_greeting_offers_examples_and_an_example_photo(chat):
    assert len(chat.turns) == 1
    hello = chat.turns[0]
    assert hello.role == "bot" and hello.kind == "greeting" and "photo" in hello.text
    assert hello.quick_replies == list(STARTERS) and EXAMPLE_PHOTO in hello.quick_replies
    split_test = chat.example_id
    assert split_test is not None and chat_bot_article(chat, split_test).endswith("Shoes")


def chat_bot_article(chat, pid):
    return chat.bot.products.loc[pid, "articleType"]


def test_questions_get_intent_answers(chat):
    turn = chat.send("How much is shipping?")
    assert turn.role == "bot" and turn.kind == "answer" and turn.text and not turn.products
    assert turn.intent not in ("", "product_search")
    assert [t.role for t in chat.turns] == ["bot", "shopper", "bot"]
    assert chat.turns[1].text == "How much is shipping?"
    assert "How much is shipping?" not in turn.quick_replies  # what was asked is not offered again


def test_text_search_then_refinement_keeps_the_context(chat):
    first = chat.send("casual shoes for men")
    assert first.kind == "products" and 0 < len(first.products) <= PAGE
    assert all(p.articleType == "Casual Shoes" for p in first.products)
    assert START_OVER in first.quick_replies and any(c.startswith("in ") for c in first.quick_replies)
    black = chat.send("in black")
    assert black.kind == "products" and black.products
    assert all(p.articleType == "Casual Shoes" and p.baseColour == "Black" for p in exact_matches(black.products))
    assert all(p.articleType in ("Casual Shoes", *TYPE_NEIGHBOURS["Casual Shoes"]) for p in black.products)
    assert all(p.gender == "Men" for p in exact_matches(black.products)) or "anyone's" in black.text
    # a new type with no pointer back at the results is a new search, not a refinement
    heels = chat.send("heels for women")
    assert all(p.articleType == "Heels" for p in heels.products)


def test_photo_search_shows_the_cutout_then_refines_those_results(chat, chat_bot, catalogue):
    pid, data = _photo(catalogue, chat_bot, "Tshirts")
    turn = chat.send(photo=data, filename="shirt.jpg", remove_background=True)
    assert turn.kind == "products" and turn.similarity and len(turn.products) == PAGE
    assert turn.photo is not None and Image.open(__import__("io").BytesIO(turn.photo)).format == "JPEG"
    shopper = chat.turns[-2]
    assert shopper.role == "shopper" and shopper.filename == "shirt.jpg" and shopper.photo is not None
    assert len(shopper.photo) < len(data) * 4  # a thumbnail, not the upload
    refined = chat.send("in black")
    assert exact_matches(refined.products) and all(p.baseColour == "Black" for p in exact_matches(refined.products))
    # every path names what it understood: the photo's type, then the colour asked for
    main = Counter(p.articleType for p in turn.products).most_common(1)[0][0]
    assert turn.text.startswith("These look like ") and TYPE_NAMES.get(main, main.lower()) in turn.text
    assert refined.text.startswith(("Here are black ", "No black "))
    kind = max({p.articleType for p in turn.products}, key=[p.articleType for p in turn.products].count)
    assert all(p.articleType == kind for p in refined.products)


def test_photo_with_text_refines_at_once_and_without_background_removal(chat, chat_bot, catalogue):
    _, data = _photo(catalogue, chat_bot, "Tshirts")
    turn = chat.send("these in white", photo=data, filename="a.png", remove_background=False)
    assert turn.photo is None and all(p.baseColour == "White" for p in exact_matches(turn.products))


def test_more_like_this_and_show_more(chat, chat_bot):
    pid = int(chat_bot.products[chat_bot.products["articleType"] == "Watches"].index[0])
    more = chat.more_like_this(pid)
    assert more.kind == "products" and pid not in [p.id for p in more.products]
    assert chat.turns[-2].text.startswith("More like this: ")
    assert more.more
    page2 = chat.show_more()
    assert page2.products and not {p.id for p in page2.products} & {p.id for p in more.products}
    assert pid not in [p.id for p in page2.products]
    again = chat.send("more like this")
    assert again.kind == "products" and pid not in [p.id for p in again.products]
    missing = chat.more_like_this(999_999_999)
    assert missing.kind == "error" and "no product" in missing.text


def test_show_more_stops_at_the_end(chat):
    chat.send("casual shoes for men")
    seen, turn = 0, None
    for _ in range(MAX_RESULTS // PAGE + 2):
        turn = chat.show_more()
        if turn.kind != "products":
            break
        seen += len(turn.products)
    assert turn.kind == "answer" and seen <= MAX_RESULTS


def test_new_chat_and_start_over_clear_history_and_context(chat):
    chat.send("casual shoes for men")
    greeting = chat.new_chat()
    assert chat.turns == [greeting] and greeting.kind == "greeting"
    after = chat.send("in black")  # no results on screen: nothing to refine
    assert after.kind in ("products", "answer")
    assert not (after.kind == "products" and all(p.articleType == "Casual Shoes" for p in after.products))
    chat.send("casual shoes for men")
    reset = chat.send("start over")
    assert chat.turns == [reset] and reset.kind == "greeting"
    assert chat.quick_reply(START_OVER).kind == "greeting" and len(chat.turns) == 1


def test_quick_replies_and_the_example_photo(chat):
    answer = chat.quick_reply("Track my order")
    assert answer.kind == "answer" and chat.turns[-2].text == "Track my order"
    photo = chat.quick_reply(EXAMPLE_PHOTO)  # a catalogue packshot: the switch's auto keeps it as it is
    assert photo.kind == "products" and photo.photo is None and photo.background.startswith("background kept")
    assert chat.turns[-2].filename.startswith("example photo")
    chat.remove_background = "on"  # the chip follows the switch
    assert chat.quick_reply(EXAMPLE_PHOTO).photo is not None


def test_feedback_is_appended_as_json_lines(chat):
    answer = chat.send("How much is shipping?")
    found = chat.send("casual shoes for men")
    chat.feedback(answer.id, "up")
    record = chat.feedback(found.id, "down")
    lines = [json.loads(line) for line in chat.feedback_log.read_text().splitlines()]
    assert [r["verdict"] for r in lines] == ["up", "down"] and lines[1] == record
    assert lines[0]["asked"]["text"] == "How much is shipping?" and lines[0]["answered"]["text"] == answer.text
    assert lines[1]["answered"]["products"] == [p.id for p in found.products]
    with pytest.raises(ValueError, match="verdict"):
        chat.feedback(answer.id, "meh")
    with pytest.raises(ValueError, match="no bot turn"):
        chat.feedback(10_000, "up")


@pytest.mark.parametrize("kwargs, message", [
    ({"text": ""}, "Type a question"),
    ({"text": "   "}, "Type a question"),
    ({"text": "x" * 10_000}, "10,000 characters"),
    ({"photo": b""}, "empty"),
    ({"photo": b"%PDF-1.4 not a photo"}, "not an image"),
    ({"photo": "truncated"}, "truncated or corrupt"),
    ({"photo": "huge"}, "too large"),
    ({"photo": b"\0" * (50 * 2**20)}, "50.0 MB"),
])
def test_bad_input_is_a_chat_message_and_the_chat_goes_on(chat, kwargs, message):
    if kwargs.get("photo") == "truncated":
        kwargs["photo"] = image_bytes(random_image((300, 300)))[:2000]
    elif kwargs.get("photo") == "huge":
        kwargs["photo"] = image_bytes(Image.new("1", (20000, 20000)), "PNG")
    turn = chat.send(filename="bad.bin", **kwargs)
    assert turn.role == "bot" and turn.kind == "error" and message in turn.text
    assert chat.send("How much is shipping?").kind == "answer"


def test_odd_text_gets_an_answer(chat):
    for text in ("\U0001f600\U0001f600", "¿Dónde está mi pedido?", "\x00\x01binary\xff", "<script>alert(1)</script>"):
        turn = chat.send(text)
        assert turn.role == "bot" and turn.kind in ("answer", "products", "error") and turn.text


def test_thumbnails_are_made_once_and_cached_on_disk(catalogue, chat_bot, tmp_path):
    pid = int(chat_bot.products.index[0])
    calls = []

    def path(i):
        calls.append(i)
        return catalogue.image_path(i)
    thumbs = Thumbnails(path, tmp_path / "thumbs")
    first = thumbs(pid)
    assert first and Image.open(__import__("io").BytesIO(first)).size[0] <= 160
    assert thumbs(pid) is first and calls == [pid]
    assert Thumbnails(None, tmp_path / "thumbs")(pid) == first  # the next session reads the file
    assert Thumbnails(path, None)(123_456_789) is None  # a missing image: no picture, no exception


def test_a_bad_cached_thumbnail_is_rebuilt_and_replaced_whole(catalogue, chat_bot, tmp_path):
    pid = int(chat_bot.products.index[0])
    good = Thumbnails(catalogue.image_path, None)(pid)
    folder = tmp_path / "thumbs"
    folder.mkdir()
    cached, reader = folder / f"{pid}.jpg", tmp_path / "what-a-reader-has-open.jpg"
    for bad in (b"", good[:len(good) // 2], b"GIF89a, not a JPEG"):  # a kernel killed mid-write, a stray file
        cached.write_bytes(bad)
        reader.unlink(missing_ok=True)
        os.link(cached, reader)  # the same file, as another visitor's kernel holds it open
        assert Thumbnails(catalogue.image_path, folder)(pid) == good  # rebuilt, not served
        assert cached.read_bytes() == good
        assert reader.read_bytes() == bad  # replaced by a rename: never rewritten under a reader
    cached.write_bytes(good[:100])
    assert Thumbnails(None, folder)(pid) is None  # nothing to rebuild it from: no picture, not a broken one
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")]


def test_feedback_keeps_no_personal_data(chat, catalogue, chat_bot):
    secrets = ["jane.doe+shop@example.co.uk", "123456789", "+44 20 7946 0958", "4111 1111 1111 1111",
               "4111-1111-1111-1111", "(555) 123-4567"]
    turn = chat.send(f"order {secrets[1]} never came, mail {secrets[0]} or call {secrets[2]}; card {secrets[3]}, "
                     f"{secrets[4]}, home {secrets[5]}")
    record = chat.feedback(turn.id, "down")
    _, photo = _photo(catalogue, chat_bot, "Watches")
    found = chat.send(photo=photo, filename="IMG_Jane_Doe_passport.jpg", remove_background=False)
    chat.feedback(found.id, "up")
    log = chat.feedback_log.read_text()
    for secret in secrets + ["Jane_Doe", "7946", "4567"]:
        assert secret not in log
    assert record["asked"]["text"].startswith("order [number] never came, mail [email] or call [number]")
    assert json.loads(log.splitlines()[1])["asked"]["photo"] is True
    assert chat.send("black shoes size 9, under 2000").text  # short numbers are kept: they are the question
    assert "size 9, under 2000" in chat.feedback(chat.turns[-1].id, "up")["asked"]["text"]


def test_feedback_with_a_lone_surrogate_is_saved(chat):
    turn = chat.send("black heels \ud83d")
    chat.feedback(turn.id, "up")
    line = chat.feedback_log.read_bytes().decode("utf-8").splitlines()[-1]
    assert json.loads(line)["asked"]["text"] == "black heels \ufffd"


def test_feedback_that_cannot_be_saved_says_so(chat_bot, catalogue, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    chat = Conversation(chat_bot, catalogue=catalogue, feedback_log=blocker / "feedback.jsonl")
    turn = chat.send("How much is shipping?")
    with pytest.raises(FeedbackError, match="could not be saved"):
        chat.feedback(turn.id, "up")


@pytest.fixture(scope="module")
def duplicate_bot(chat_bot):
    """The chat's bot over a catalogue in which six men's casual shoes are one black shoe listed six times."""
    from shopbot_utils import ShopBot

    products = chat_bot.products.copy()
    listed = products.index[products["articleType"] == "Casual Shoes"][:6]
    products.loc[listed, ["baseColour", "gender", "productDisplayName"]] = \
        ["Black", "Men", "Provogue Men Black Casual Shoes"]
    bot = ShopBot(chat_bot.model, chat_bot.info, chat_bot.index, products, folder=chat_bot.folder, norms=chat_bot.norms)
    return bot, [int(i) for i in listed]


def test_a_duplicate_heavy_search_shows_one_card_per_item(duplicate_bot, catalogue, tmp_path):
    bot, listed = duplicate_bot
    chat = Conversation(bot, catalogue=catalogue, feedback_log=tmp_path / "feedback.jsonl")
    turn = chat.send("provogue casual shoes for men")  # the brand's six listings rank first
    names = [p.productDisplayName for p in turn.products]
    assert len(turn.products) == PAGE and len(set(names)) == PAGE  # one card per item
    card = next(p for p in turn.products if p.productDisplayName == "Provogue Men Black Casual Shoes")
    assert card.duplicates >= 5 and set(listed) <= {card.id, *card.duplicate_ids}  # (and any same picture)
    assert turn.text.startswith("Here are casual shoes for men.") and "brand" in turn.text
    page2 = chat.show_more()
    assert not {p.id for p in page2.products} & {p.id for p in turn.products}
    listings = chat.similar_listings(card.id)  # the collapsed listings, one click away
    assert listings.kind == "products" and [p.id for p in listings.products] == list(card.duplicate_ids)
    assert chat.turns[-2].text.startswith("Similar listings: ")
    more = chat.more_like_this(card.id)  # never the product itself; its other listings as one card at most
    assert card.id not in {p.id for p in more.products} and len({p.id for p in more.products} & set(listed)) <= 1
    assert chat.similar_listings(more.products[-1].id, ()).kind == "answer"  # nothing collapsed: says so


def test_a_short_page_is_filled_with_near_matches_and_says_so(chat, chat_bot):
    products = chat_bot.products
    kind, colour = products.groupby(["articleType", "baseColour"]).size().loc[lambda s: s.between(1, 3)].index[0]
    turn = chat.send(f"{colour} {kind}".lower())
    assert len(turn.products) == PAGE  # the type has far more than a page
    exact = [p for p in turn.products if not p.near_match]
    assert 1 <= len(exact) <= 3 and all(p.articleType == kind and p.baseColour == colour for p in exact)
    assert turn.products[:len(exact)] == exact  # near matches come after every exact one
    assert all(p.articleType in (kind, *TYPE_NEIGHBOURS.get(kind, [])) for p in turn.products)
    assert "near match" in turn.text


def _street(catalogue, pid) -> bytes:
    """Product ``pid`` pasted on a photo, as PNG bytes (a shopper's photo in the wild)."""
    return image_bytes(make_composites({pid: catalogue.image_path(pid)}, seed=4)[0].image, "PNG")


def test_the_background_switch_auto_on_off(chat, chat_bot, catalogue):
    pid, packshot = _photo(catalogue, chat_bot, "Casual Shoes")
    assert chat.remove_background == "auto"  # the default
    kept = chat.send(photo=packshot, filename="shoe.jpg")
    assert kept.kind == "products" and kept.photo is None
    assert kept.background.startswith("background kept: the photo already looks like a catalogue photo")
    street = chat.send(photo=_street(catalogue, pid), filename="street.png")
    assert street.photo is not None and street.background.startswith("background removed with ")
    on = chat.send(photo=packshot, filename="shoe.jpg", remove_background="on")
    assert on.photo is not None and on.background == f"background removed with {chat.background.name}"
    chat.remove_background = "off"
    off = chat.send(photo=_street(catalogue, pid), filename="street.png")
    assert off.photo is None and off.background == "background kept: removal is off"
    assert chat.send(photo=packshot, remove_background=True).photo is not None  # True and False still work
    assert chat.send(photo=packshot, remove_background=False).background == "background kept: removal is off"
    # what auto keeps is searched exactly as the photo is
    assert [p.id for p in kept.products] == [p.id for p in chat_bot.similar(packshot, PAGE, remove_background=False)]
    with pytest.raises(ValueError, match="the background switch is one of auto, on, off"):
        Conversation(chat_bot, catalogue=catalogue, remove_background="sometimes")


@pytest.mark.parametrize("bad", [b"", b"%PDF-1.4 not a photo", "truncated"])
def test_a_bad_photo_gets_the_same_message_as_everywhere(chat, bad):
    if bad == "truncated":
        bad = image_bytes(random_image((300, 300)))[:2000]
    with pytest.raises(ImageError) as raised:
        load_image(bad)
    turn = chat.send(photo=bad, filename="bad.jpg")
    assert turn.kind == "error" and turn.text == f"I could not use that file as a photo: {raised.value}."


def test_the_switch_refuses_other_positions(chat):
    chat.remove_background = True
    assert chat.remove_background == "on" and chat.backend_for().name == chat.background.name
    assert chat.backend_for("off").name == "none" and chat.backend_for("auto").name == "auto"
    with pytest.raises(ValueError, match="the background switch is one of auto, on, off, got 'sometimes'"):
        chat.remove_background = "sometimes"
    assert chat.remove_background == "on"
