"""ShopBot: a shopping assistant that finds catalogue products like a shopper's photo."""
__version__ = "0.1.0"

__all__ = ["Product", "ShopBot", "__version__"]


def __getattr__(name: str):
    """``ShopBot`` and ``Product`` on first use: they import torch, which the chat's API client never needs."""
    if name in ("Product", "ShopBot"):
        from . import bot

        return getattr(bot, name)
    raise AttributeError(f"module 'shopbot_utils' has no attribute {name!r}")
