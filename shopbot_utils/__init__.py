"""ShopBot: a shopping assistant that finds catalogue products like a shopper's photo."""
__version__ = "0.1.0"

from .bot import Product, ShopBot  # noqa: E402

__all__ = ["Product", "ShopBot", "__version__"]
