"""AttentionQuery: one attention configuration, validated and normalised once at construction.

Queries are immutable and hashable (the hash is computed once), so resolution can be cached
by query. Names go through the vocabularies: "sm_90a", "9.0", (9, 0), "bfloat16" and
torch.bfloat16 are all accepted.
"""

from __future__ import annotations

import operator
from operator import attrgetter
from typing import Any

from .memo import Memoised

MASKS = ("none", "causal", "causal_bottom_right", "padding", "arbitrary", "padding_causal",
         "padding_causal_bottom_right")
LAYOUTS = ("bshd", "sbhd", "thd")
BIASES = ("none", "alibi", "post_scale", "pre_scale")
# TransformerEngine's dimensions (None = not asked: never rejects a support rule, never triggers a known issue)
CONTEXT_PARALLEL = ("none", "p2p", "a2a", "all_gather", "a2a+p2p")  # cp_comm_type; "none" = no CP
PACKINGS = ("none", "kv", "qkv")  # separate q, k, v; k and v in one tensor (bshd_bs2hd); all three (bs3hd, t3hd)
FP8_RECIPES = ("delayed", "current", "mxfp8", "block", "nvfp4")


class InvalidQueryError(ValueError):
    """A query field has a value attncap cannot accept; names the field, value and what is allowed."""

    def __init__(self, field: str, value: object, allowed: str):
        self.field, self.value, self.allowed = field, value, allowed
        try:
            shown = repr(value)
        except Exception:  # e.g. an int too long to print (sys.set_int_max_str_digits)
            shown = f"<{type(value).__name__}>"
        super().__init__(f"{field}={shown} is invalid: expected {allowed}")


FIELDS = ("arch", "dtype", "head_dim_qk", "head_dim_v", "num_heads_q", "num_heads_kv", "seqlen_q", "seqlen_kv",
          "training", "mask", "window", "dropout", "softcap", "bias", "layout", "pad_between_seqs", "page_size",
          "deterministic", "sinks")
# TransformerEngine's further dimensions, kept in one tuple (`_extra`, properties below) so that a
# query that asks none of them costs one attribute, not ten.
OPTIONAL_FIELDS = ("kv_cache", "context_parallel", "return_max_logit", "score_mod", "num_splits", "packing",
                   "bias_grad", "bottom_right", "fp8_recipe", "fp8_mha")
_UNASKED = (None,) * len(OPTIONAL_FIELDS)
_BASE_FIELDS = FIELDS
FIELDS = FIELDS + OPTIONAL_FIELDS

_FIELD_VALUES = attrgetter(*_BASE_FIELDS, "_extra")  # one C call for the key tuple


class AttentionQuery(metaclass=Memoised):
    """What the caller wants to run. `arch=None` means "the environment's arch".

    Built with the same keyword arguments again, it is the same object (attncap.memo): validated once.
    """

    # _last: the last resolution of this query and what it was resolved under (attncap.resolver.resolve)
    __slots__ = _BASE_FIELDS + ("_extra", "gqa", "cross_attention", "features", "_vocabulary", "_key", "_hash",
                                "_last")

    def __init__(self, *, head_dim_qk: int, dtype: Any = "bf16", head_dim_v: int | None = None, arch: Any = None,
                 num_heads_q: int | None = None, num_heads_kv: int | None = None, seqlen_q: int | None = None,
                 seqlen_kv: int | None = None, training: bool = False, mask: str = "none",
                 window: tuple[int, int] | None = None, dropout: float = 0.0, softcap: float = 0.0,
                 bias: str = "none", layout: str = "bshd", pad_between_seqs: bool = False,
                 page_size: int | None = None, deterministic: bool = False, sinks: bool = False,
                 kv_cache: bool | None = None, context_parallel: str | None = None,
                 return_max_logit: bool | None = None, score_mod: bool | None = None, num_splits: int | None = None,
                 packing: str | None = None, bias_grad: bool | None = None, bottom_right: bool | None = None,
                 fp8_recipe: str | None = None, fp8_mha: bool | None = None, vocabulary=None):
        vocab = vocabulary or _default_vocabulary()
        s = object.__setattr__
        s(self, "_vocabulary", vocabulary)  # kept for replace(): an overlay's arch must stay valid
        s(self, "arch", None if arch is None else _arch(vocab, arch))
        s(self, "dtype", _dtype(vocab, dtype))
        s(self, "head_dim_qk", _positive("head_dim_qk", head_dim_qk))
        s(self, "head_dim_v", self.head_dim_qk if head_dim_v is None else _positive("head_dim_v", head_dim_v))
        s(self, "num_heads_q", _optional_positive("num_heads_q", num_heads_q))
        kv = self.num_heads_q if num_heads_kv is None else _positive("num_heads_kv", num_heads_kv)
        if kv is not None and self.num_heads_q is not None and self.num_heads_q % kv:
            raise InvalidQueryError("num_heads_kv", kv, f"a divisor of num_heads_q={self.num_heads_q}")
        s(self, "num_heads_kv", kv)
        s(self, "seqlen_q", _optional_positive("seqlen_q", seqlen_q))
        s(self, "seqlen_kv", self.seqlen_q if seqlen_kv is None else _positive("seqlen_kv", seqlen_kv))
        s(self, "training", _bool("training", training))
        s(self, "mask", _choice("mask", mask, MASKS))
        s(self, "window", _window(window))
        s(self, "dropout", _fraction("dropout", dropout))
        s(self, "softcap", _nonnegative("softcap", softcap))
        s(self, "bias", _choice("bias", bias, BIASES))
        s(self, "layout", _choice("layout", layout, LAYOUTS))
        s(self, "pad_between_seqs", _bool("pad_between_seqs", pad_between_seqs))
        s(self, "page_size", _optional_positive("page_size", page_size))
        s(self, "deterministic", _bool("deterministic", deterministic))
        s(self, "sinks", _bool("sinks", sinks))
        if (page_size is None and kv_cache is None and context_parallel is None and return_max_logit is None
                and score_mod is None and num_splits is None and packing is None and bias_grad is None
                and bottom_right is None and fp8_recipe is None and fp8_mha is None):
            s(self, "_extra", _UNASKED)
        else:
            s(self, "_extra", _optional(page_size, kv_cache, context_parallel, return_max_logit, score_mod,
                                        num_splits, packing, bias_grad, bottom_right, fp8_recipe, fp8_mha))
        s(self, "gqa", kv is not None and self.num_heads_q is not None and kv != self.num_heads_q)
        known = self.seqlen_q is not None and self.seqlen_kv is not None
        s(self, "cross_attention", known and self.seqlen_q != self.seqlen_kv)
        # Unknown lengths do not reject (as everywhere in attncap): either causal alignment will do.
        s(self, "features", _features(self, same_lengths=not self.cross_attention))
        s(self, "_key", _FIELD_VALUES(self))
        s(self, "_hash", hash(self._key))
        s(self, "_last", None)

    def __setattr__(self, name, value):
        raise AttributeError("AttentionQuery is immutable; use .replace(...)")

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other) -> bool:
        return self is other or (isinstance(other, AttentionQuery) and self._key == other._key)

    def __repr__(self) -> str:
        defaults = _DEFAULTS
        parts = [f"{f}={getattr(self, f)!r}" for f in FIELDS if getattr(self, f) != defaults.get(f, object())]
        return f"AttentionQuery({', '.join(parts)})"

    def __reduce__(self):
        return (_rebuild, (self.as_dict(), self._vocabulary))

    def as_dict(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in FIELDS}

    def replace(self, **changes) -> AttentionQuery:
        """A copy with some fields changed, validated against the vocabulary this query was built with."""
        return AttentionQuery(**{**self.as_dict(), "vocabulary": self._vocabulary, **changes})


def _optional_property(i: int, name: str) -> property:
    return property(lambda self: self._extra[i], doc=f"{name} (None: not asked)")


for _i, _name in enumerate(OPTIONAL_FIELDS):
    setattr(AttentionQuery, _name, _optional_property(_i, _name))


def _optional(page_size, kv_cache, context_parallel, return_max_logit, score_mod, num_splits, packing, bias_grad,
              bottom_right, fp8_recipe, fp8_mha) -> tuple:
    """The optional fields validated, in OPTIONAL_FIELDS order; None stays None (not asked)."""
    if kv_cache is not None and _bool("kv_cache", kv_cache) is False and page_size is not None:
        raise InvalidQueryError("kv_cache", kv_cache, "True (or None) when page_size is given")
    return (True if page_size is not None else kv_cache,  # a paged cache is a KV cache
            None if context_parallel is None else _choice("context_parallel", context_parallel, CONTEXT_PARALLEL),
            None if return_max_logit is None else _bool("return_max_logit", return_max_logit),
            None if score_mod is None else _bool("score_mod", score_mod),
            None if num_splits is None else _positive("num_splits", num_splits),
            None if packing is None else _choice("packing", packing, PACKINGS),
            None if bias_grad is None else _bool("bias_grad", bias_grad),
            None if bottom_right is None else _bool("bottom_right", bottom_right),
            None if fp8_recipe is None else _choice("fp8_recipe", fp8_recipe, FP8_RECIPES),
            None if fp8_mha is None else _bool("fp8_mha", fp8_mha))


def _rebuild(fields: dict, vocabulary=None) -> AttentionQuery:
    return AttentionQuery(**fields, vocabulary=vocabulary)


_DEFAULTS = AttentionQuery.__init__.__kwdefaults__  # for a short repr


def _features(q: AttentionQuery, *, same_lengths: bool) -> tuple:
    """The features the query uses; a tuple entry is a set of alternatives, any one suffices."""
    used: list = []
    mask = q.mask
    if mask.startswith("padding"):  # padding, padding_causal, padding_causal_bottom_right
        used.append(("padding_mask",))
        mask = mask[8:]
    if mask in ("causal", "causal_bottom_right"):
        # With equal lengths both alignments give the same mask.
        used.append(("causal", "causal_bottom_right") if same_lengths else (mask,))
    elif q.mask == "arbitrary":
        used.append(("arbitrary_mask",))
    flags = [
        (q.window is not None, "sliding_window"), (q.dropout > 0, "dropout"), (q.softcap > 0, "softcap"),
        (q.bias == "alibi", "alibi"), (q.bias == "post_scale", "post_scale_bias"),
        (q.bias == "pre_scale", "pre_scale_bias"), (q.gqa, "gqa"),
        (q.layout == "thd", "varlen"), (q.pad_between_seqs, "pad_between_seqs"),
        (q.page_size is not None, "paged_kv"), (q.deterministic and q.training, "deterministic"),
        (q.sinks, "sinks"),
    ]
    return tuple(used + [(name,) for on, name in flags if on])


def _default_vocabulary():
    from .loader import default_registry
    return default_registry().vocabulary


def _arch(vocab, value) -> str:
    try:
        name = vocab.arch_name(value)
    except (TypeError, ValueError):  # str(value) failed: not a name
        name = None
    if name is None:
        raise InvalidQueryError("arch", value, f"one of {', '.join(vocab.archs)} (or an alias such as sm_90a, "
                                               "'9.0', (9, 0))")
    return name


def _dtype(vocab, value) -> str:
    try:
        name = vocab.dtype_name(value)
    except (TypeError, ValueError):
        name = None
    if name is None:
        raise InvalidQueryError("dtype", value, f"one of {', '.join(vocab.dtypes)} (or an alias such as "
                                                "'bfloat16', torch.bfloat16)")
    return name


def _positive(field: str, value) -> int:
    if type(value) is not int or value < 1:
        value = _integral(field, value)
        if value < 1:
            raise InvalidQueryError(field, value, "a positive integer")
    return value


def _integral(field: str, value) -> int:
    """An int from an integer-like value (numpy/torch integer scalars, 0-d integer tensors).

    operator.index refuses floats and float arrays (int() would truncate 64.7 to 64); booleans
    (Python, numpy or torch) are refused by name, and so is any array that is not 0-d.
    """
    if isinstance(value, bool) or "bool" in str(getattr(value, "dtype", "")) or getattr(value, "ndim", 0) != 0:
        raise InvalidQueryError(field, value, "a positive integer")
    try:
        return operator.index(value)
    except Exception:
        raise InvalidQueryError(field, value, "a positive integer") from None


def _optional_positive(field: str, value) -> int | None:
    return None if value is None else _positive(field, value)


def _bool(field: str, value) -> bool:
    if not isinstance(value, bool):
        raise InvalidQueryError(field, value, "True or False")
    return value


def _choice(field: str, value, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise InvalidQueryError(field, value, f"one of {', '.join(allowed)}")
    return value


def _number(field: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise InvalidQueryError(field, value, "a number")
    try:
        return float(value)
    except OverflowError:  # an int beyond float range
        raise InvalidQueryError(field, value, "a finite number") from None


def _fraction(field: str, value) -> float:
    value = _number(field, value)
    if not 0.0 <= value < 1.0:
        raise InvalidQueryError(field, value, "a probability in [0, 1)")
    return value


def _nonnegative(field: str, value) -> float:
    value = _number(field, value)
    if value < 0 or value == float("inf"):
        raise InvalidQueryError(field, value, "a finite number >= 0")
    return value


def _window(value) -> tuple[int, int] | None:
    """(left, right) in tokens, -1 meaning unbounded; (-1, -1) is no window."""
    if value is None:
        return None
    if isinstance(value, (str, bytes)):
        raise InvalidQueryError("window", value, "(left, right) with -1 for unbounded, or None")
    try:
        left, right = value
    except (TypeError, ValueError):
        raise InvalidQueryError("window", value, "(left, right) with -1 for unbounded, or None") from None
    if not all(type(v) is int and v >= -1 for v in (left, right)):
        raise InvalidQueryError("window", value, "(left, right) integers >= -1")
    return None if (left, right) == (-1, -1) else (left, right)
