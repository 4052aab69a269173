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


class _Limit(Exception):
    """Raised before or while composing: a node past MAX_NODES or MAX_DEPTH."""

    def __init__(self, mark, message: str):
        super().__init__(message)
        self.mark, self.message = mark, message


class _Composer(yaml.composer.Composer):
    """PyYAML's composer, enforcing the limits while it composes (not after): a hostile file costs
    at most MAX_NODES nodes of time and memory, and nesting past MAX_DEPTH stops at that depth."""

    def __init__(self):
        super().__init__()
        self._nodes = self._depth = 0

    def compose_node(self, parent, index):
        event = self.peek_event()
        self._nodes += 1
        if self._nodes > MAX_NODES:
            raise _Limit(event.start_mark, f"more than {MAX_NODES} values")
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise _Limit(event.start_mark, f"nesting is deeper than {MAX_DEPTH} levels")
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


class _Loader(yaml.reader.Reader, yaml.scanner.Scanner, yaml.parser.Parser, _Composer, _Resolver):
    def __init__(self, stream):
        yaml.reader.Reader.__init__(self, stream)
        yaml.scanner.Scanner.__init__(self)
        yaml.parser.Parser.__init__(self)
        _Composer.__init__(self)
        _Resolver.__init__(self)


if getattr(yaml, "__with_libyaml__", False):
    class _CLoader(yaml.cyaml.CParser, _Resolver):
        """libyaml composes ~10x faster, but recurses in C and does not count: used only on text
        within the limits (proven by its length and shape, or by counting its events first)."""

        def __init__(self, stream):
            yaml.cyaml.CParser.__init__(self, stream)
            _Resolver.__init__(self)
else:  # pragma: no cover
    _CLoader = None

# A value takes at least 2/3 of a character (`[?,?]`: a mapping, its key and value per `?,`), so text
# this short cannot compose into more than MAX_NODES values.
_SHORT_TEXT = MAX_NODES * 2 // 3
_INNERMOST_FLOW = re.compile(r"\[[^\[\]{}]*\]|\{[^\[\]{}]*\}")
# Block nesting needs a deeper column per level; a line whose first 128 characters are all
# indentation or indicators (`- `, `? `, `: `, with any spacing) may nest that deep on one line.
_DEEP_BLOCK = re.compile(r"^[ \t?:-]{128}|(?:- ){16}", re.MULTILINE)


def _shallow(text: str) -> bool:
    """True when the nesting is provably modest: at most 32 flow levels and plain block structure.

    libyaml's composer recurses in C and crashes the process on ~100,000-deep input, so anything
    not proven shallow has its events counted first (_check_limits).
    """
    if _DEEP_BLOCK.search(text):
        return False
    for _ in range(32):
        text, removed = _INNERMOST_FLOW.subn("", text)
        if not removed:
            break
    return "[" not in text and "{" not in text


def _compose(text: str):
    """The node graph, in time and memory bounded by MAX_NODES and MAX_DEPTH."""
    if _CLoader is None:
        loader = _Loader(text)
    else:
        if len(text) > _SHORT_TEXT or not _shallow(text):
            _check_limits(text)
        loader = _CLoader(text)
    try:
        return loader.get_single_node()
    finally:
        loader.dispose()


_OPEN = (yaml.SequenceStartEvent, yaml.MappingStartEvent)
_CLOSE = (yaml.SequenceEndEvent, yaml.MappingEndEvent)


def _depth_limit_position(text: str, mark) -> tuple[int, int] | None:
    """Where nesting passes MAX_DEPTH, when libyaml stopped at its own limit of 1000 levels (its scanner
    looks ahead, so it fails there before the events reach level 65): the events of the text up to
    that point do reach it."""
    start = 0
    for _ in range(mark.line):
        start = text.index("\n", start) + 1
    try:
        _check_limits(text[:start + mark.column])
    except _Limit as exc:
        return exc.mark.line + 1, exc.mark.column + 1
    except yaml.YAMLError:
        pass
    return None


def _check_limits(text: str) -> None:
    """Stream libyaml's events (its parser keeps a stack, no recursion; no node is built) and stop at
    the first value past MAX_NODES or MAX_DEPTH: ~2 us per value, and nothing kept."""
    parser = yaml.cyaml.CParser(text)
    nodes = depth = 0
    try:
        while True:
            event = parser.get_event()
            if event is None or isinstance(event, yaml.StreamEndEvent):
                return
            if isinstance(event, _CLOSE):
                depth -= 1
            elif isinstance(event, (yaml.ScalarEvent, yaml.AliasEvent, *_OPEN)):
                nodes += 1
                if nodes > MAX_NODES:
                    raise _Limit(event.start_mark, f"more than {MAX_NODES} values")
                if isinstance(event, _OPEN):
                    depth += 1
                    if depth > MAX_DEPTH:
                        raise _Limit(event.start_mark, f"nesting is deeper than {MAX_DEPTH} levels")
    finally:
        parser.dispose()


# The pattern each implicit tag comes from: a plain scalar tagged so but not matching it had its tag written out.
_IMPLICIT_PATTERNS = {tag: pattern for resolvers in _Resolver.yaml_implicit_resolvers.values()
                      for tag, pattern in resolvers}

# Line breaks to YAML 1.1 (and so to the parser's line numbers) that editors do not show as breaks.
_HIDDEN_BREAKS = re.compile("[\u2028\u2029\x85]")
_BREAK_NAMES = {"\u2028": ("LINE SEPARATOR", "\\L"), "\u2029": ("PARAGRAPH SEPARATOR", "\\P"),
                "\x85": ("NEXT LINE", "\\N")}


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
    first_line: str = ""  # kept so that no check reads the file a second time (it may have changed)

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
    return parse_text(_read_text(path, name), name)


def parse_text(text: str, name: str) -> Document:
    """Parse YAML text read from `name`; raise YamlError with a located message on any failure."""
    hidden = ("\u2028" in text or "\u2029" in text or "\x85" in text) and _HIDDEN_BREAKS.search(text)
    if hidden:  # located as an editor counts lines: by "\n" only
        at = hidden.start()
        what, escape = _BREAK_NAMES[hidden.group()]
        raise YamlError(Problem(name, text.count("\n", 0, at) + 1, at - text.rfind("\n", 0, at), "",
                                f"character U+{ord(hidden.group()):04X} ({what}) is a line break to YAML but "
                                f"not to editors: remove it (in a double-quoted string, write {escape})"))
    try:
        node = _compose(text)
    except _Limit as exc:
        raise YamlError(Problem(name, exc.mark.line + 1, exc.mark.column + 1, "", exc.message)) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        if "maximum nesting depth" in str(exc.problem):
            line, col = _depth_limit_position(text, mark) or (line, col)
            raise YamlError(Problem(name, line, col, "", f"nesting is deeper than {MAX_DEPTH} levels")) from None
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
    first_line = text.split("\n", 1)[0]
    if node is None:
        return Document(name, None, {(): (1, 1)}, first_line=first_line)
    builder = _Builder(name)
    value = builder.build(node, ())
    return Document(name, value, builder.positions, builder.key_positions, first_line)


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


def _tag_written(node: yaml.ScalarNode) -> bool:
    """True when a non-string scalar's tag was written out and differs from what the text says by
    itself (`!!int abc`, `!!bool yes`, `!!int "12"`): only `!!str` may be written."""
    if node.style:  # quoted or block: a string unless tagged (None from PyYAML's parser, '' from libyaml's)
        return True
    pattern = _IMPLICIT_PATTERNS.get(node.tag)
    return pattern is None or not pattern.match(node.value)


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
            if convert is None or (convert is not str and _tag_written(node)):
                self.fail(node, path, f"tag {node.tag!r} is not allowed (plain YAML values only)")
            try:
                return convert(node.value)
            except ValueError:  # an integer past int()'s digit limit (sys.get_int_max_str_digits())
                self.fail(node, path, f"an integer of {len(node.value)} digits is too large")
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
