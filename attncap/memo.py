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

`resolve_fields(env, **fields)` goes one step further for the per-forward path: one key for
both the query and its resolution, so a repeated call costs one dict lookup.
"""

from __future__ import annotations

import threading

MAX_ENTRIES = 4096
_PLAIN = {str, int, float, bool, type(None), tuple}  # immutable: a hit can reuse the earlier answer

_memo: dict = {}
_resolutions: dict = {}
_lock = threading.Lock()
_generation = 0


def forget() -> None:
    """Drop every memoised query and resolution (the vocabulary they were validated against may change)."""
    global _generation
    with _lock:
        _generation += 1
        _memo.clear()
        _resolutions.clear()


def _keep(table: dict, key, value, generation: int) -> None:
    with _lock:
        if generation == _generation:
            if len(table) >= MAX_ENTRIES:
                table.pop(next(iter(table)), None)
            table[key] = value


def _key(kwargs: dict) -> tuple:
    """Names, values and types of the arguments (and the window's element types: the one tuple field)."""
    values = kwargs.values()
    key = (*kwargs, *values, *map(type, values))
    window = kwargs.get("window")
    if type(window) is tuple:
        key += tuple(map(type, window))
    return key


def _keepable(kwargs: dict) -> bool:
    window = kwargs.get("window")
    return _plain(map(type, kwargs.values())) and (type(window) is not tuple or _plain(map(type, window)))


def _plain(types) -> bool:
    """All immutable types; torch.dtype is learnt on first sight (torch is never imported here)."""
    for t in types:
        if t not in _PLAIN:
            if t.__module__ == "torch" and t.__name__ == "dtype":
                _PLAIN.add(t)
            else:
                return False
    return True


class Memoised(type):
    """Metaclass: keyword-only construction is looked up in the memo before __init__ validates."""

    def __call__(cls, *args, **kwargs):
        key = _key(kwargs)
        try:
            found = _memo.get(key)
        except TypeError:  # unhashable (a list window, a dict): validate every time
            return super().__call__(*args, **kwargs)
        if found is not None and not args:
            return found
        generation = _generation
        made = super().__call__(*args, **kwargs)  # validates; raises as before
        if not args and _keepable(kwargs):
            _keep(_memo, key, made, generation)
        return made


_OPTIONS = ("prefer", "disable", "force", "probes", "registry")  # resolve()'s keywords; the rest is the query
_overrides = _detect = _resolve = _query = None  # bound on first use (resolver imports the loader)


def resolve_fields(env=None, /, **fields):
    """`resolve(AttentionQuery(**fields), env, **options)` for the per-forward path: the same Resolution
    (or error), where options are resolve()'s keywords (prefer, disable, force, probes, registry).

    One key for the query and its resolution: the arguments (names, values, types, as for the
    query memo), the environment (detected on every call when None) and the ATTNCAP_* variables
    (read on every call, as resolve does). A provisional resolution is not kept, and a forced
    backend that cannot run raises on every call. The signature is kept bare on purpose: named
    keyword parameters next to **fields cost more than the lookup itself.
    """
    if _overrides is None:
        _bind()
    if env is None:
        env = _detect()
    values = fields.values()
    key = (env, _overrides(), *fields, *values, *map(type, values))
    window = fields.get("window")
    if type(window) is tuple:  # the one tuple-valued field: its elements' types too
        key += tuple(map(type, window))
    try:
        found = _resolutions.get(key)
    except TypeError:  # unhashable fields, or prefer/disable given as a list
        found = key = None
    if found is not None:
        return found
    generation = _generation
    keepable = key is not None and _keepable(fields)
    options = {name: fields.pop(name) for name in _OPTIONS if name in fields}
    resolution = _resolve(_query(**fields), env, **options)
    if keepable and not getattr(resolution, "provisional", False):
        _keep(_resolutions, key, resolution, generation)
    return resolution


def _bind() -> None:
    global _overrides, _detect, _resolve, _query
    from .environment import Environment
    from .query import AttentionQuery
    from .resolver import _environment_overrides, resolve
    _detect, _resolve, _query, _overrides = Environment.detect, resolve, AttentionQuery, _environment_overrides
