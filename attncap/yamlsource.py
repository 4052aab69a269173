"""Safe YAML reading that remembers where every value came from.

We compose the node graph with a SafeLoader-based resolver and build plain Python values
ourselves, so that (a) no tag can construct an object, (b) each value's path maps to its
line and column, and (c) YAML 1.1 surprises are neutralised: only `true`/`false` are
booleans (`no`, `on` stay strings), integers are decimal (no octal `010`, no `1:20`),
dates stay strings, duplicate keys and merge keys are errors.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

import yaml

MAX_FILE_BYTES = 2 * 1024 * 1024
MAX_NODES = 200_000
MAX_DEPTH = 64

Path_ = tuple  # a value's path: keys and list indices from the document root


@dataclass(frozen=True)
class Problem:
    """One finding, rendered as `file:line:col: field.path: message`."""

    file: str
    line: int
    column: int
    field: str
    message: str
    severity: str = "error"
    check: str = "schema"

    def __str__(self) -> str:
        where = f"{self.field}: " if self.field else ""
        return f"{self.file}:{self.line}:{self.column}: {where}{self.message}"


class YamlError(Exception):
    def __init__(self, problem: Problem):
        super().__init__(str(problem))
        self.problem = problem


class _Resolver(yaml.resolver.BaseResolver):
    pass


# YAML 1.2 core schema, as far as this format needs it.
_Resolver.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                list("tTfF"))
_Resolver.add_implicit_resolver("tag:yaml.org,2002:int", re.compile(r"^[-+]?[0-9]+$"), list("-+0123456789"))
_Resolver.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^(?:[-+]?(?:\.[0-9]+|[0-9]+\.[0-9]*)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."))
_Resolver.add_implicit_resolver("tag:yaml.org,2002:null", re.compile(r"^(?:~|null|Null|NULL|)$"), ["~", "n", "N", ""])
_Resolver.add_implicit_resolver("tag:yaml.org,2002:merge", re.compile(r"^<<$"), ["<"])  # so that `<<` is refused


class _Loader(yaml.reader.Reader, yaml.scanner.Scanner, yaml.parser.Parser, yaml.composer.Composer, _Resolver):
    def __init__(self, stream):
        yaml.reader.Reader.__init__(self, stream)
        yaml.scanner.Scanner.__init__(self)
        yaml.parser.Parser.__init__(self)
        yaml.composer.Composer.__init__(self)
        _Resolver.__init__(self)


if getattr(yaml, "__with_libyaml__", False):
    class _CLoader(yaml.cyaml.CParser, _Resolver):
        """libyaml composes ~10x faster, but recurses in C: used only on text proven shallow."""

        def __init__(self, stream):
            yaml.cyaml.CParser.__init__(self, stream)
            _Resolver.__init__(self)
else:  # pragma: no cover
    _CLoader = None

_INNERMOST_FLOW = re.compile(r"\[[^\[\]{}]*\]|\{[^\[\]{}]*\}")
# Block nesting needs a deeper column per level; a line whose first 128 characters are all
# indentation or indicators (`- `, `? `, `: `, with any spacing) may nest that deep on one line.
_DEEP_BLOCK = re.compile(r"^[ \t?:-]{128}|(?:- ){16}", re.MULTILINE)


def _shallow(text: str) -> bool:
    """True when the nesting is provably modest: at most 32 flow levels and plain block structure.

    libyaml's composer recurses in C and crashes the process on ~100,000-deep input, so anything
    not proven shallow goes to the pure-Python parser, which reports deep nesting as an error.
    """
    if _DEEP_BLOCK.search(text):
        return False
    for _ in range(32):
        text, removed = _INNERMOST_FLOW.subn("", text)
        if not removed:
            break
    return "[" not in text and "{" not in text


_SCALARS = {
    "tag:yaml.org,2002:str": str,
    "tag:yaml.org,2002:int": lambda s: int(s, 10),
    "tag:yaml.org,2002:float": lambda s: float(s.lower().replace(".inf", "inf").replace(".nan", "nan")),
    "tag:yaml.org,2002:bool": lambda s: s.lower() == "true",
    "tag:yaml.org,2002:null": lambda s: None,
}


@dataclass
class Document:
    """A parsed YAML file: its value and the position of every path in it."""

    file: str
    value: object
    positions: dict[Path_, tuple[int, int]]
    key_positions: dict[Path_, tuple[int, int]] = field(default_factory=dict)  # where each mapping key is

    def position(self, path: Path_) -> tuple[int, int]:
        """Line and column of `path`, or of its nearest ancestor that has one."""
        path = tuple(path)
        while path not in self.positions and path:
            path = path[:-1]
        return self.positions.get(path, (1, 1))

    def problem(self, path: Path_, message: str, *, at_key: bool = False, **kw) -> Problem:
        """A problem at the value of `path`, or at its key (an unknown or misspelt key)."""
        path = tuple(path)
        line, column = (self.key_positions.get(path) if at_key else None) or self.position(path)
        return Problem(self.file, line, column, dotted(path), message, **kw)


def dotted(path: Path_) -> str:
    out = ""
    for part in path:
        if isinstance(part, str) and not part.isprintable():
            part = repr(part)  # a key with a newline or a control character: keep the problem on one line
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _yaml_hint(text: str, mark, exc) -> str:
    """libyaml's words, and what usually causes them: a tab, or a line indented wrongly."""
    problem = exc.problem or exc.context or ""
    at = text[mark.index] if mark is not None and 0 <= mark.index < len(text) else ""
    if at == "\t":
        return "a tab character: YAML indents with spaces only"
    if any(s in problem for s in ("expected <block end>", "did not find expected key", "mapping values are not allowed",
                                  "could not find expected ':'")):
        return f"{problem} (check this line's indentation: keys of one mapping line up, items of a list too)"
    return problem


def read_document(path: Path, display: str | None = None) -> Document:
    """Read one YAML file; raise YamlError with a located message on any failure."""
    name = display or str(path)
    text = _read_text(path, name)
    try:
        node = yaml.compose(text, Loader=_CLoader if _CLoader and _shallow(text) else _Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise YamlError(Problem(name, line, col, "", f"invalid YAML: {_yaml_hint(text, mark, exc)}")) from None
    except yaml.reader.ReaderError:  # a control character; libyaml's position is in bytes: find it ourselves
        bad = yaml.reader.Reader.NON_PRINTABLE.search(text)
        at = bad.start() if bad else 0
        line, col = text.count("\n", 0, at) + 1, at - text.rfind("\n", 0, at)
        char = f" {bad.group()!r}" if bad else ""
        raise YamlError(Problem(name, line, col, "", f"invalid YAML: character{char} is not allowed")) from None
    except yaml.YAMLError as exc:
        raise YamlError(Problem(name, 1, 1, "", f"invalid YAML: {exc}")) from None
    except RecursionError:
        raise YamlError(Problem(name, 1, 1, "", f"nesting is deeper than {MAX_DEPTH} levels")) from None
    if node is None:
        return Document(name, None, {(): (1, 1)})
    builder = _Builder(name)
    value = builder.build(node, ())
    return Document(name, value, builder.positions, builder.key_positions)


def _read_text(path: Path, name: str) -> str:
    try:
        if path.is_dir():
            raise YamlError(Problem(name, 1, 1, "", "is a directory, not a YAML file"))
        # O_NONBLOCK: opening a FIFO must not wait for a writer; only regular files are read.
        with open(os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)), "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise YamlError(Problem(name, 1, 1, "", "is not a regular file (a FIFO, socket or device?)"))
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise YamlError(Problem(name, 1, 1, "", f"cannot read: {exc.strerror or exc}")) from None
    if len(data) > MAX_FILE_BYTES:
        raise YamlError(Problem(name, 1, 1, "", f"file is larger than {MAX_FILE_BYTES // 1024 // 1024} MiB"))
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        col = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise YamlError(Problem(name, line, col, "", f"not UTF-8 (byte 0x{data[exc.start]:02x})")) from None


class _Builder:
    def __init__(self, name: str):
        self.name = name
        self.positions: dict[Path_, tuple[int, int]] = {}
        self.key_positions: dict[Path_, tuple[int, int]] = {}
        self.count = 0

    def fail(self, node: yaml.Node, path: Path_, message: str):
        mark = node.start_mark
        raise YamlError(Problem(self.name, mark.line + 1, mark.column + 1, dotted(path), message))

    def build(self, node: yaml.Node, path: Path_):
        self.count += 1
        if self.count > MAX_NODES:
            self.fail(node, path, f"more than {MAX_NODES} values (an alias bomb?)")
        if len(path) > MAX_DEPTH:
            self.fail(node, path, f"nesting is deeper than {MAX_DEPTH} levels")
        self.positions.setdefault(path, (node.start_mark.line + 1, node.start_mark.column + 1))
        if isinstance(node, yaml.ScalarNode):
            convert = _SCALARS.get(node.tag)
            if convert is None:
                self.fail(node, path, f"tag {node.tag!r} is not allowed (plain YAML values only)")
            return convert(node.value)
        if isinstance(node, yaml.SequenceNode):
            if node.tag != "tag:yaml.org,2002:seq":
                self.fail(node, path, f"tag {node.tag!r} is not allowed")
            return [self.build(item, path + (i,)) for i, item in enumerate(node.value)]
        if node.tag != "tag:yaml.org,2002:map":
            self.fail(node, path, f"tag {node.tag!r} is not allowed")
        return self._mapping(node, path)

    def _mapping(self, node: yaml.MappingNode, path: Path_) -> dict:
        out: dict = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                self.fail(key_node, path, "merge keys (<<) are not supported: write the keys out")
            key = self.build(key_node, path + ("<key>",))
            if not isinstance(key, (str, int)):
                self.fail(key_node, path, f"keys must be strings, not {type(key).__name__}")
            if key in out:
                self.fail(key_node, path + (key,), f"duplicate key {key!r}")
            self.key_positions[path + (key,)] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            out[key] = self.build(value_node, path + (key,))
        return out
