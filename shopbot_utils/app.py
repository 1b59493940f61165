"""The chat page that ``make demo`` serves (``app/chat.ipynb``): the chat alone, full height, phone-ready, over the API.

Its kernel loads no model: the conversation talks to ``serve`` through ``client.ShopBotClient``, so a
visitor costs what a kernel with ipywidgets costs. The page's own CSS and script (``page_head``) lay
the chat out over the whole window (the composer and photo buttons stay in reach on a phone), let a
phone's "Camera" button open its camera (``capture``), send at most ``MAX_UPLOAD_BYTES`` + 1 bytes of
any file (the chat answers a bigger one with its message instead of the connection closing), and tell
a shopper whose chat was closed for being idle to reload.
"""
from __future__ import annotations

import json

from . import config
from .chat import MAX_UPLOAD_BYTES, Conversation
from .client import ShopBotClient

PAGE_CSS = """
html, body { margin: 0 !important; padding: 0 !important; height: 100%; overflow: hidden; background: #fff; }
#rendered_cells, .jp-Notebook, .jp-Cell, .jp-Cell-outputWrapper, .jp-OutputArea, .jp-OutputArea-child,
.jp-OutputArea-output, .jupyter-widgets-output-area { padding: 0 !important; margin: 0 !important; border: 0 !important; }
.jp-OutputPrompt, .jp-InputPrompt, .jp-Collapser { display: none !important; }
.shopbot-app { height: 100vh; height: 100dvh; max-width: 880px !important; width: 100%; margin: 0 auto;
  box-sizing: border-box; padding: 0 6px 4px; display: flex !important; flex-direction: column; }
.shopbot-app > .shopbot-scroll { flex: 1 1 auto !important; height: auto !important; min-height: 0; }
.shopbot-app > .widget-vbox:last-child { flex: 0 0 auto; padding-top: 4px; }
.shopbot-app .widget-text input { font-size: 16px; }  /* no zoom-in on a phone's focus */
.shopbot-app .widget-text { min-width: 0; }
.shopbot-camera { display: none !important; }
@media (pointer: coarse) { .shopbot-camera { display: inline-flex !important; } }
@media (max-width: 600px) {
  .shopbot-bubble { max-width: 86% !important; }
  .shopbot-bubble-wide { width: calc(100% - 44px) !important; }
  .shopbot-avatar .shopbot-face { width: 26px !important; height: 26px !important; margin: 0 3px !important; font-size: 11px !important; }
  .shopbot-card { width: 124px !important; box-sizing: border-box; }
  .shopbot-card img { width: 112px !important; height: 112px !important; }
  .shopbot-card button { width: 112px !important; }
  .shopbot-turns .widget-gridbox { grid-template-columns: repeat(auto-fill, 128px) !important; }
  .shopbot-chips { margin-left: 30px !important; }
}
.shopbot-ended { position: fixed; inset: 0; background: rgba(255,255,255,.94); display: flex; align-items: center;
  justify-content: center; text-align: center; font: 16px system-ui, sans-serif; padding: 24px; z-index: 1000; }
"""

PAGE_JS = """
(function () {
  if (window.__shopbotPage) return;
  window.__shopbotPage = true;
  var LIMIT = %(limit)d, IDLE_MS = %(idle_ms)d;
  // A file over the chat's limit: only its first LIMIT + 1 bytes travel, and the chat answers with its
  // message (the whole file in one websocket message would close the connection instead).
  var read = FileReader.prototype.readAsArrayBuffer;
  FileReader.prototype.readAsArrayBuffer = function (blob) {
    return read.call(this, blob && blob.size > LIMIT ? blob.slice(0, LIMIT + 1) : blob);
  };
  // The "Camera" button opens a phone's camera; "Photo" offers the library and the camera.
  var click = HTMLInputElement.prototype.click;
  HTMLInputElement.prototype.click = function () {
    if (this.type === 'file') {
      var ev = window.event, camera = ev && ev.target && ev.target.closest && ev.target.closest('.shopbot-camera');
      if (camera) { this.setAttribute('capture', 'environment'); } else { this.removeAttribute('capture'); }
    }
    return click.apply(this, arguments);
  };
  // An idle chat is closed by the server (its kernel is culled): say so instead of a chat that no longer answers.
  if (IDLE_MS > 0) {
    var last = Date.now();
    ['keydown', 'pointerdown', 'change'].forEach(function (name) {
      document.addEventListener(name, function () { last = Date.now(); }, true);
    });
    var timer = setInterval(function () {
      if (Date.now() - last < IDLE_MS) return;
      clearInterval(timer);
      var note = document.createElement('div');
      note.className = 'shopbot-ended';
      note.setAttribute('role', 'alert');
      note.innerHTML = '<div><p>This chat was closed after ' + Math.round(IDLE_MS / 60000) +
        ' minutes without a message.</p><p><button onclick="location.reload()">Start a new chat</button></p></div>';
      document.body.appendChild(note);
    }, 5000);
  }
})();
"""


def page_head(idle_s: float | None = None) -> str:
    """The page's ``<style>`` and ``<script>`` (``idle_s``: when the server closes an idle chat; 0: never)."""
    idle_s = config.chat_idle_seconds() if idle_s is None else idle_s
    script = PAGE_JS % {"limit": MAX_UPLOAD_BYTES, "idle_ms": int(max(idle_s, 0) * 1000)}
    return f"<style>{PAGE_CSS}</style>\n<script>{script}</script>"


def chat_page(url: str | None = None, feedback_log=None):
    """Show the chat over the API at ``url`` (default ``SHOPBOT_API_URL``) with the page's layout; the ``ChatApp``."""
    from IPython.display import HTML, display

    from .widgets import ChatApp

    client = ShopBotClient(url)
    client.wait(timeout_s=60)
    log = feedback_log if feedback_log is not None else config.artifacts_dir() / "feedback.jsonl"
    app = ChatApp(Conversation(client, feedback_log=log, **client.conversation_kwargs()))
    display(HTML(page_head()))
    display(app.show())
    return app


def notebook_json() -> str:
    """``app/chat.ipynb``: one cell that shows ``chat_page()`` (what Voilà serves)."""
    cell = {"cell_type": "code", "execution_count": None, "id": "chat-page", "metadata": {}, "outputs": [],
            "source": ["# The shopper's chat page (make demo). The course's chat chapter is notebooks/08_chat_demo.ipynb.\n",
                       "from shopbot_utils.app import chat_page\n", "\n", "_ = chat_page()"]}
    notebook = {"cells": [cell], "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python",
                                                             "name": "python3"},
                                              "language_info": {"name": "python"}},
                "nbformat": 4, "nbformat_minor": 5}
    return json.dumps(notebook, indent=1) + "\n"
