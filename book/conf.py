"""Sphinx configuration of the course's website (``make book``; ``shopbot_utils.book`` stages the sources).

The notebooks are shown with the outputs they carry (``make run`` wrote them); the book never runs them.
Nothing is fetched from the web, at build time or when a page is read: MathJax is served from the site
(``sphinx-mathjax-offline``) and the theme's fonts and icons ship with it.
"""
project = "ShopBot"
author = "the ShopBot course"
copyright = "the ShopBot course, MIT licence"

extensions = ["myst_nb", "sphinx-mathjax-offline"]
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3
nb_execution_mode = "off"  # the committed notebooks carry the outputs of `make run`
nb_ipywidgets_js = {}  # never load the widget manager from a CDN (the committed notebooks keep no widget state)
exclude_patterns = ["_build", "**.ipynb_checkpoints"]

html_theme = "sphinx_book_theme"
html_title = "ShopBot"
html_static_path = ["_static"]
html_theme_options = {
    "show_toc_level": 2,
    "use_download_button": True,
    "use_fullscreen_button": False,
    "home_page_in_toc": True,
}
html_last_updated_fmt = None
