"""A stand-in for `polars`, used only on the GPU machine of benchmarks/gpu (never installed, never in the package).

mteb imports polars at module level for its leaderboard and benchmark tables, which the reproduction never builds;
the real wheel is too large to carry there. Any attribute of this module is an inert placeholder class: it can be
called, subclassed, indexed and used in annotations, and it does nothing. If mteb ever needs real polars on the
evaluation path, the placeholder returns itself instead of data and the scores would fail loudly downstream.
"""

from typing import Any

__version__ = "0.0.0+retromae-hf-stand-in"
IS_STAND_IN = True


class _PlaceholderMeta(type):
    def __getattr__(cls, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return cls

    def __getitem__(cls, item: Any) -> Any:
        return cls

    def __or__(cls, other: Any) -> Any:
        return cls

    def __ror__(cls, other: Any) -> Any:
        return cls


class Placeholder(metaclass=_PlaceholderMeta):
    """Accepts any arguments; every attribute and call gives a placeholder back."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return Placeholder

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return Placeholder


def __getattr__(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)
    return Placeholder
