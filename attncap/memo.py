"""A memo in front of AttentionQuery's validation, keyed by the raw constructor arguments.

A framework builds the same query on every forward step; validating 19+ fields each time cost
more than TransformerEngine's whole per-step check. `AttentionQuery(**same_arguments)` now
returns the query built the first time, so only the first call validates.

Same semantics as the validated path:
- The key holds each argument's name, value and type (and the window's element types), so values
  that compare equal but validate differently (True vs 1, 128 vs 128.0, a str subclass) never
  share an entry; only successful constructions are kept, so a bad value always reaches the
  validator and raises its error.
- Only immutable argument types are keyed (str, int, float, bool, None, tuples, torch.dtype);
  anything else, and anything unhashable, takes the validated path every time.
- Queries depend on the default vocabulary: `forget()` (called when the default registry is
  forgotten, so by attncap.clear_cache()) drops every entry, and a construction that raced
  with it is not kept.
"""

from __future__ import annotations

import functools

MAX_ENTRIES = 4096
_PLAIN = {str, int, float, bool, type(None), tuple}  # immutable: a hit can reuse the earlier answer

_generation = 0


def forget() -> None:
    """Drop every memoised query (the vocabulary they were validated against may change)."""
    global _generation
    _generation += 1
    _memoised.cache_clear()


def _plain(types) -> bool:
    """All immutable types; torch.dtype is learnt on first sight (torch is never imported here)."""
    for t in types:
        if t not in _PLAIN:
            if t.__module__ == "torch" and t.__name__ == "dtype":
                _PLAIN.add(t)
            else:
                return False
    return True


class _NotKept(Exception):
    """Carries a query out of the lru_cache without it being kept (lru_cache keeps no exceptions)."""

    def __init__(self, query):
        self.query = query


@functools.lru_cache(maxsize=MAX_ENTRIES, typed=True)  # C: thread-safe, bounded; typed: True != 1 != 1.0
def _memoised(cls, window_types, **kwargs):
    generation = _generation
    query = type.__call__(cls, **kwargs)  # validates; raises as before (and nothing is kept)
    window = kwargs.get("window")
    if generation != _generation or not _plain(map(type, kwargs.values())) or \
            (type(window) is tuple and not _plain(window_types)):
        raise _NotKept(query)  # raced with forget(), or an argument of a type that might change
    return query


def _element_types(window) -> tuple | None:
    return tuple(map(type, window)) if type(window) is tuple else None


class Memoised(type):
    """Metaclass: keyword-only construction is looked up in the memo before __init__ validates."""

    def __call__(cls, *args, **kwargs):
        if args:
            return super().__call__(*args, **kwargs)
        # typed=True covers each argument's type; a window's elements need theirs too ((128.0, 0) == (128, 0))
        try:
            return _memoised(cls, _element_types(kwargs["window"]) if "window" in kwargs else None, **kwargs)
        except _NotKept as kept:
            return kept.query
        except TypeError:  # unhashable (a list window, a dict): the validated path, which raises its own errors
            return super().__call__(**kwargs)
