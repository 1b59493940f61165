"""The HTTP API over real HTTP on 127.0.0.1: every endpoint, bad input in the chat's words, size limits
read from the headers, the Host check, the token, the busy gate, concurrency without mixed answers,
and the client a chat uses in its place."""
from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from urllib.parse import urlparse

import pytest

from shopbot_utils.chat import MAX_MESSAGE_CHARS, MAX_UPLOAD_BYTES, Conversation, decode_upload, upload_too_large
from shopbot_utils.client import UNREACHABLE, ApiError, ShopBotClient
from shopbot_utils.serve import BUSY, Settings, create_app, running

from conftest import image_bytes, random_image


@pytest.fixture(scope="module")
def chat_bot(chat_artifacts):
    from shopbot_utils import ShopBot

    return ShopBot.load(chat_artifacts)


@pytest.fixture(scope="module")
def api(chat_bot, catalogue):
    with running(create_app(chat_bot, catalogue=catalogue)) as url:
        yield url


@pytest.fixture(scope="module")
def client(api):
    with ShopBotClient(api) as c:
        yield c


def call(url: str, method: str = "GET", body: bytes | None = None, headers: dict | None = None):
    """(status, headers, parsed JSON or bytes) of one request."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            status, got, data = response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        status, got, data = exc.code, dict(exc.headers), exc.read()
    if got.get("content-type", "").startswith("application/json"):
        data = json.loads(data)
    return status, got, data


def post_json(url: str, payload: dict, headers: dict | None = None):
    return call(url, "POST", json.dumps(payload).encode(), {"Content-Type": "application/json", **(headers or {})})


def raw_request(url: str, head: str, body: bytes = b"", wait_s: float = 10.0) -> tuple[bytes, float]:
    """Send raw bytes (a request head and part of a body); the answer and how long it took."""
    parsed = urlparse(url)
    start = time.perf_counter()
    with socket.create_connection((parsed.hostname, parsed.port), timeout=wait_s) as s:
        s.sendall(head.encode() + body)
        answer = b""
        try:
            while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                answer += chunk
        except socket.timeout:
            pass
    return answer, time.perf_counter() - start


def test_every_endpoint_answers(api, chat_bot, catalogue):
    status, _, health = call(api + "/health")
    assert status == 200 and health["status"] == "ok" and health["products"] == len(chat_bot.products)
    assert health["limits"]["upload_bytes"] == MAX_UPLOAD_BYTES
    assert call(api + "/openapi.json")[2]["info"]["title"] == "ShopBot API"
    assert b"swagger" in call(api + "/docs")[2].lower()

    status, _, reply = post_json(api + "/ask", {"text": "where is my order?"})
    assert status == 200 and reply["intent"] == chat_bot.ask("where is my order?").intent
    status, _, found = post_json(api + "/search", {"text": "black heels for women", "k": 3})
    truth = chat_bot.search("black heels for women", 3)
    assert [p["id"] for p in found["products"]] == [p.id for p in truth]
    assert found["reply"] == truth.reply and found["ignored"] == truth.ignored
    assert [tuple(p["duplicate_ids"]) for p in found["products"]] == [p.duplicate_ids for p in truth]
    assert found["query"]["include"] == truth.query.include and found["understood"] == truth.understood
    # a refinement's query travels back: "in black" on top of the search above
    refined = {"text": "casual shoes in black", "include": {"articleType": ["Casual Shoes"], "baseColour": ["Black"]}}
    status, _, again = post_json(api + "/search", {"text": "in black", "k": 3, "query": refined})
    assert status == 200 and all(p["baseColour"] == "Black" for p in again["products"])

    pid = int(chat_bot.index.ids[4])
    photo = catalogue.image_path(pid).read_bytes()
    client = ShopBotClient(api)
    assert [p.id for p in client.similar(photo, 5)] == [p.id for p in chat_bot.similar(photo, 5)]
    assert len(client.similar(photo, 3, remove_background=True)) == 3
    # the switch's positions: auto keeps a catalogue photo as it is (= off), on cuts it out
    for position in ("auto", "off", False):
        assert [p.id for p in client.similar(photo, 5, remove_background=position)] == \
               [p.id for p in chat_bot.similar(photo, 5, remove_background=False)], position
    status, _, answer = call(api + "/similar", "POST", *_multipart({"k": "3", "remove_background": "on"}, photo))
    assert status == 200 and len(answer["products"]) == 3
    status, _, answer = call(api + "/openapi.json")
    assert "auto (default)" in json.dumps(answer["components"])  # the form field's description
    ids = [int(i) for i in chat_bot.index.ids[:3]]
    assert [p.as_dict() for p in client.lookup(ids)] == [p.as_dict() for p in chat_bot.lookup(ids)]
    assert call(f"{api}/products?ids={int(chat_bot.products.index.max()) + 1}")[0] == 404
    assert call(f"{api}/products?ids=x")[0] == 400
    assert [p.id for p in client.similar(pid, 4)] == [p.id for p in chat_bot.similar(pid, 4)]
    assert pid not in [p.id for p in client.similar(pid, 4)]
    by_photo, truth = client.refine(photo, "in black", 3), chat_bot.refine(photo, "in black", 3)
    assert [p.id for p in by_photo] == [p.id for p in truth] and by_photo.query == truth.query
    assert by_photo.message == truth.message and by_photo.relaxed == truth.relaxed
    by_id = client.refine(pid, "for women", 3)
    assert [p.id for p in by_id] == [p.id for p in chat_bot.refine(pid, "for women", 3)]
    assert client.product(pid).productDisplayName == chat_bot.products.loc[pid, "productDisplayName"]
    assert client.thumbnail(pid)[:2] == b"\xff\xd8"  # a JPEG
    assert call(f"{api}/products/{pid}/image")[2] == photo
    assert set(client.products.index) == set(chat_bot.products.index)
    mask = client.conversation_kwargs()["background"].mask(random_image((300, 200)))
    assert mask.shape == (200, 300) and 0 <= mask.min() <= mask.max() <= 1


def test_bad_input_gets_the_chats_words(api, chat_bot, catalogue):
    chat = Conversation(chat_bot, catalogue=catalogue)
    for text in ["", "   ", "x" * (MAX_MESSAGE_CHARS + 1)]:
        status, _, answer = post_json(api + "/ask", {"text": text})
        assert status == 400 and answer["error"] == chat.send(text).text
    status, _, answer = call(api + "/similar", "POST", *_multipart({"k": "3"}, b"this is not a photo"))
    assert status == 400 and answer["error"] == chat.send(photo=b"this is not a photo").text
    status, _, answer = call(api + "/similar", "POST", *_multipart({"k": "3"}, b""))
    assert status == 400 and answer["error"] == chat.send(photo=b"").text
    missing = int(chat_bot.products.index.max()) + 1
    status, _, answer = call(f"{api}/products/{missing}/similar")
    assert status == 404 and answer["error"] == chat.more_like_this(missing).text
    for path, payload, words in [("/search", {"text": "shoes", "k": 0}, "k must be between"),
                                 ("/search", {"text": "shoes", "query": {"include": {"price": ["cheap"]}}}, "query.include"),
                                 ("/ask", {"k": 3}, "text: Field required"),
                                 ("/ask", {"text": ["a", "list"]}, "text")]:
        status, _, answer = post_json(api + path, payload)
        assert status in (400, 422) and words in answer["error"], (path, answer)
    status, _, answer = call(api + "/similar", "POST", *_multipart({"remove_background": "magic"}, image_bytes(random_image())))
    assert status == 400 and "remove_background must be" in answer["error"]
    status, _, answer = call(api + "/refine", "POST", *_multipart({"text": "in black"}, None))
    assert status == 400 and answer["error"] == "Send either a photo or a product_id to refine."
    status, _, answer = call(api + "/ask", "POST", b"{not json", {"Content-Type": "application/json"})
    assert status == 422 and "JSON" in answer["error"]


def test_size_limits_are_read_from_the_headers_before_the_body(api):
    host = urlparse(api).netloc
    # A 100 MB photo announced: refused at once with the chat's words, with not one byte of it sent.
    head = (f"POST /similar HTTP/1.1\r\nHost: {host}\r\nContent-Type: multipart/form-data; boundary=x\r\n"
            f"Content-Length: {100 * 2**20}\r\n\r\n")
    answer, seconds = raw_request(api, head)
    assert answer.startswith(b"HTTP/1.1 413") and seconds < 5
    body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    assert body["error"] == upload_too_large(100 * 2**20)  # what the chat says (decode_upload)
    # A JSON endpoint takes 64 KB.
    answer, _ = raw_request(api, f"POST /ask HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                                 f"Content-Length: {2**20}\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 413") and b"takes up to 65,536" in answer
    # No Content-Length (chunked): counted as it arrives, refused once over.
    chunk = b"x" * 100_000
    chunked = (f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n") * 2
    answer, _ = raw_request(api, f"POST /ask HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                                 "Transfer-Encoding: chunked\r\n\r\n", chunked)
    assert answer.startswith(b"HTTP/1.1 413")
    # A photo just over 20 MB in a real upload: the chat's words too.
    status, _, answer = call(api + "/similar", "POST", *_multipart({}, b"\xff" * (MAX_UPLOAD_BYTES + 10)))
    assert status == 413 and answer["error"] == decode_upload(b"\xff" * (MAX_UPLOAD_BYTES + 1))[1]


def test_concurrent_requests_get_their_own_answers(api, chat_bot):
    words = ["black heels for women", "blue jeans for men", "watches", "red tshirts", "sports shoes for men",
             "handbags", "white shirts", "casual shoes"]
    ids = [int(i) for i in chat_bot.index.ids[:8]]
    expected = {("search", w): [p.id for p in chat_bot.search(w, 5)] for w in words}
    expected |= {("similar", i): [p.id for p in chat_bot.similar(i, 5)] for i in ids}
    jobs = list(expected) * 3

    def one(job):
        kind, what = job
        with ShopBotClient(api) as c:  # a connection each, as separate shoppers
            found = c.search(what, 5) if kind == "search" else c.similar(what, 5)
        return job, [p.id for p in found]

    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(one, jobs))
    assert [job for job, _ in answers] == jobs
    assert all(found == expected[job] for job, found in answers)


def test_foreign_host_is_refused_and_allowed_names_answer(api, chat_bot):
    port = urlparse(api).port
    for host in ["evil.example", f"evil.example:{port}", "127.0.0.1.evil.example", "192.168.1.20"]:
        status, _, answer = call(api + "/health", headers={"Host": host})
        assert status == 403 and "is not served here" in answer["error"], host
    for host in [f"127.0.0.1:{port}", f"localhost:{port}", "LOCALHOST", f"[::1]:{port}"]:
        assert call(api + "/health", headers={"Host": host})[0] == 200, host
    with running(create_app(chat_bot, settings=Settings(allowed_hosts=("shop.example",)))) as other:
        assert call(other + "/health", headers={"Host": "shop.example"})[0] == 200
        assert call(other + "/health")[0] == 403  # only the names given


def test_a_token_guards_everything_but_health(chat_bot):
    with running(create_app(chat_bot, settings=Settings(token="s3cret"))) as url:
        assert call(url + "/health")[0] == 200
        status, got, answer = post_json(url + "/ask", {"text": "hi"})
        assert status == 401 and "needs a token" in answer["error"] and got["www-authenticate"] == "Bearer"
        assert post_json(url + "/ask", {"text": "hi"}, {"Authorization": "Bearer wrong"})[0] == 401
        assert post_json(url + "/ask", {"text": "hi"}, {"Authorization": "Bearer s3cret"})[0] == 200
        assert ShopBotClient(url, token="s3cret").ask("where is my order?").intent
    with pytest.raises(ValueError, match="give a token"):
        Settings(host="0.0.0.0").check()
    with pytest.raises(ValueError, match="--allowed-host"):
        Settings(host="0.0.0.0", token="t").check()
    Settings(host="0.0.0.0", token="t", allowed_hosts=("shop.example",)).check()
    Settings(host="0.0.0.0", behind_proxy=True, allowed_hosts=("shop.example",)).check()


def test_past_the_queue_callers_are_told_to_come_back(chat_bot):
    release = threading.Event()
    entered = threading.Semaphore(0)

    class SlowBot:  # the real bot, whose search waits until the test lets it go
        def __getattr__(self, name):
            return getattr(chat_bot, name)

        def search(self, *args, **kwargs):
            entered.release()
            release.wait(30)
            return chat_bot.search(*args, **kwargs)

    with running(create_app(SlowBot(), settings=Settings(concurrency=1, queue=1))) as url:
        with ThreadPoolExecutor(max_workers=2) as pool:
            first = pool.submit(post_json, url + "/search", {"text": "shoes"})
            assert entered.acquire(timeout=30)
            second = pool.submit(post_json, url + "/search", {"text": "watches"})
            deadline = time.monotonic() + 10
            while call(url + "/health")[2]["load"]["waiting"] < 1 and time.monotonic() < deadline:
                time.sleep(0.05)
            status, got, answer = post_json(url + "/search", {"text": "bags"})
            assert status == 503 and answer["error"] == BUSY and got["retry-after"] == "60"
            assert call(url + "/health")[0] == 200  # health never waits for the models
            release.set()
            assert first.result()[0] == 200 and second.result()[0] == 200
        assert post_json(url + "/search", {"text": "bags"})[0] == 200


def _same_turn(a, b, what: str) -> None:
    """Two bot turns answer alike: kind, intent, words (an answer's wording is drawn at random among the
    intent's responses: there the intent), every product field (duplicates, near matches, scores),
    the chips, the cut-out shown and what was done to the photo's background."""
    assert (a.kind, a.intent, a.more, a.quick_replies, a.background, a.photo) == \
           (b.kind, b.intent, b.more, b.quick_replies, b.background, b.photo), what
    assert a.kind == "answer" or a.text == b.text, what
    assert [p.as_dict() for p in a.products] == [p.as_dict() for p in b.products], what


def test_a_conversation_over_the_client_answers_like_one_over_the_bot(client, chat_bot, catalogue, tmp_path):
    """Turn for turn, the same answer over the API as in-process: text, a search and its refinements, the
    example photo with the switch on Auto (a packshot, searched as it is) and a refinement of it, a photo in
    the wild cut out on Auto with the server's masks, the switch On and Off, more like this, the listings a
    card collapsed."""
    from shopbot_utils.background_bench import make_composites

    remote = Conversation(client, feedback_log=tmp_path / "f.jsonl", **client.conversation_kwargs())
    local = Conversation(chat_bot, catalogue=catalogue, feedback_log=tmp_path / "g.jsonl",
                         example_id=remote.example_id)
    assert remote.remove_background == local.remove_background == "auto"
    for text in ["How much is shipping?", "casual shoes for men", "in black", "show more", "Start over", ""]:
        _same_turn(remote.send(text), local.send(text), text)
    a, b = remote.send_example_photo(), local.send_example_photo()  # Auto: a catalogue photo is kept
    _same_turn(a, b, "example photo")
    assert a.kind == "products" and a.background.startswith("background kept")
    _same_turn(remote.send("in black"), local.send("in black"), "in black after the photo")
    pid = a.products[0].id
    street = image_bytes(make_composites({pid: catalogue.image_path(pid)}, seed=4)[0].image, "PNG")
    a, b = remote.send(photo=street, filename="street.png"), local.send(photo=street, filename="street.png")
    _same_turn(a, b, "a photo in the wild on Auto")
    assert a.photo is not None and a.background == f"background removed with {local.background.name}"
    _same_turn(remote.send("for women"), local.send("for women"), "for women after the cut-out")
    for switch in ("on", "off"):
        remote.remove_background = local.remove_background = switch
        a, b = remote.send(photo=street, filename="street.png"), local.send(photo=street, filename="street.png")
        _same_turn(a, b, f"the switch {switch}")
    a, b = remote.more_like_this(pid), local.more_like_this(pid)
    _same_turn(a, b, "more like this")
    _same_turn(remote.show_more(), local.show_more(), "show more after more like this")
    listed = [int(i) for i in chat_bot.products.index[:3]]  # the +N button's call, with any ids
    _same_turn(remote.similar_listings(pid, listed), local.similar_listings(pid, listed), "similar listings")
    assert remote.thumbnails(pid) == client.thumbnail(pid)
    assert remote.feedback(a.id, "up")["verdict"] == "up"


def test_an_unreachable_api_is_a_message_not_a_traceback(chat_bot):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = ShopBotClient(f"http://127.0.0.1:{port}", timeout=2)
    with pytest.raises(ApiError, match="cannot be reached") as error:
        client.search("shoes")
    assert error.value.status == 503
    chat = Conversation(client, thumbnails=client.thumbnail, example_id=0,
                        catalogue=SimpleNamespace(image_path=lambda product_id: None))
    turn = chat.send("black heels for women")
    assert turn.kind == "error" and UNREACHABLE in turn.text
    with pytest.raises(ValueError, match="http"):
        ShopBotClient("127.0.0.1:8765")


def _multipart(fields: dict, photo: bytes | None):
    from shopbot_utils.client import _multipart as encode

    body, kind = encode({k: str(v) for k, v in fields.items()}, {} if photo is None else {"photo": ("p.jpg", photo, "image/jpeg")})
    return body, {"Content-Type": kind}


def test_a_chat_over_the_api_loads_no_model(api, chat_bot, catalogue, tmp_path):
    """What a chat page's kernel runs (app.chat_page's conversation, a photo turn with its background removed)
    imports neither torch nor onnxruntime: a visitor costs a kernel, not the models."""
    import subprocess
    import sys

    from shopbot_utils.background_bench import make_composites

    pid = int(chat_bot.index.ids[4])  # a product pasted on a scene: a photo with a background to remove
    photo = tmp_path / "photo.png"
    photo.write_bytes(image_bytes(make_composites({pid: catalogue.image_path(pid)}, seed=4)[0].image, "PNG"))
    script = f"""
import sys
from shopbot_utils.client import ShopBotClient
from shopbot_utils.chat import Conversation
from shopbot_utils import widgets, app
client = ShopBotClient({api!r})
chat = Conversation(client, feedback_log={str(tmp_path / 'f.jsonl')!r}, **client.conversation_kwargs())
turn = chat.send(photo=open({str(photo)!r}, 'rb').read(), remove_background=True)
assert turn.kind == "products" and turn.photo is not None and turn.background.startswith("background removed"), turn
print(sorted(m for m in ("torch", "onnxruntime", "sentence_transformers", "fastapi") if m in sys.modules))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_a_second_replica_needs_nothing_from_the_first(api, chat_bot, catalogue, tmp_path):
    """Stateless: a conversation whose calls alternate between two replicas (as behind a round-robin load
    balancer) answers turn for turn as one over a single replica."""
    with running(create_app(chat_bot, catalogue=catalogue)) as other:
        one, two = ShopBotClient(api), ShopBotClient(other)

        class RoundRobin:  # each call to the next replica
            def __init__(self):
                self.calls = 0

            def __getattr__(self, name):
                self.calls += 1
                return getattr((one, two)[self.calls % 2], name)

        balanced = RoundRobin()
        hopping = Conversation(balanced, feedback_log=tmp_path / "a.jsonl", **one.conversation_kwargs())
        single = Conversation(one, feedback_log=tmp_path / "b.jsonl", **one.conversation_kwargs())
        for step in ["black casual shoes for men", "for women", "show more", "in white"]:
            a, b = hopping.send(step), single.send(step)
            assert (a.kind, a.text, [p.id for p in a.products]) == (b.kind, b.text, [p.id for p in b.products]), step
        a, b = hopping.send_example_photo(), single.send_example_photo()
        assert [p.id for p in a.products] == [p.id for p in b.products]
        a, b = hopping.send("in black"), single.send("in black")
        assert [p.id for p in a.products] == [p.id for p in b.products]
        assert balanced.calls > 8
