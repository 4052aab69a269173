"""The plain form of validated capability data: what an installed wheel's snapshot loads into.

The pydantic models (models.py) check what the YAML says; after that the data is only read.
A Record is one model's data as plain attributes: the same names, every field present (defaults
included, written out by the build hook, so no model is needed to fill them in), frozen. Its
class is named after the model (`Rule`, `Conditions`, `IntRange`, ...), so a repr reads alike.

Code that reads the data works on both forms: attribute access, `==` (field by field, same kind),
`model_copy(update=...)` (the rule compiler and the matrix make a changed copy of a rule) and
`model_dump()` (plain dicts, as a model's default dump). Nothing else of pydantic's API is offered:
code that needs more (the overlay merge, lint) only ever sees the full load's models.

A Record pickles (and copies) by value, its kind and fields, as a model does.
"""

from __future__ import annotations


class Record:
    """One validated model's fields, read-only. Subclasses (one per model name, the class's name) come
    from `kind`; the name is not an attribute, so no field can hide it."""

    __slots__ = ("__dict__",)

    def __setattr__(self, name, value):
        raise AttributeError(f"{type(self).__name__} is frozen (validated data): use model_copy(update=...)")

    def __delattr__(self, name):
        raise AttributeError(f"{type(self).__name__} is frozen (validated data)")

    def __eq__(self, other):
        if type(other) is not type(self):
            return NotImplemented
        return self.__dict__ == other.__dict__

    def __hash__(self):
        return hash((type(self).__name__, *self.__dict__.values()))  # fails on list fields, as a frozen model's does

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.__dict__.items())})"

    def __reduce__(self):
        return make, (type(self).__name__, dict(self.__dict__))

    def model_copy(self, *, update: dict | None = None) -> Record:
        """A copy with some fields replaced (no validation, as pydantic's model_copy)."""
        return make(type(self).__name__, {**self.__dict__, **(update or {})})

    def model_dump(self) -> dict:
        """The fields as plain dicts and lists, nested records included (pydantic's default model_dump)."""
        return {k: _dumped(v) for k, v in self.__dict__.items()}


def _dumped(value):
    if isinstance(value, Record):
        return value.model_dump()
    if isinstance(value, dict):
        return {k: _dumped(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_dumped(v) for v in value]
    return value


_KINDS: dict[str, type[Record]] = {}


def kind(name: str) -> type[Record]:
    """The Record class for model `name` (one per name, made on first use)."""
    cls = _KINDS.get(name)
    if cls is None:
        cls = _KINDS[name] = type(name, (Record,), {"__slots__": (), "__module__": __name__})
    return cls


def make(name: str, fields: dict) -> Record:
    """A Record of kind `name` that owns `fields` (the dict becomes its attributes: not copied)."""
    record = object.__new__(kind(name))
    object.__setattr__(record, "__dict__", fields)
    return record
