"""Safe YAML loading that remembers where every key and value came from.

PyYAML's constructors throw away positions, yet every problem we report must say
`FILE:LINE:COL`. So we let PyYAML *compose* the node tree (which keeps marks) with a
`SafeLoader` subclass, and build plain Python data from the nodes ourselves, recording a
1-based (line, col) for each mapping key and each value under its key path. Building the data
ourselves is also where duplicate keys are caught: PyYAML silently keeps the last one, which
would make a typo'd second `temperature:` override the first without a word.

Only plain mappings, lists and scalars are accepted: a spec is frozen to JSON in the run
folder, so anything JSON cannot hold (dates, binary, sets, custom tags) is refused here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from runner.errors import SpecError, SpecProblem

__all__ = ["KeyPath", "Mark", "Marks", "SpecLoader", "dotted", "load_with_marks"]

KeyPath = tuple[Any, ...]
"""A path into the data: mapping keys (str) and list indices (int)."""

Mark = tuple[int, int]
"""A 1-based (line, column)."""

_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"
_MERGE = "tag:yaml.org,2002:merge"
_TIMESTAMP = "tag:yaml.org,2002:timestamp"
_PLAIN_TYPES = (str, int, float, bool, type(None))


class SpecLoader(yaml.SafeLoader):
    """A SafeLoader that leaves dates as text, so every loaded value is JSON-friendly."""


_BOOL = "tag:yaml.org,2002:bool"
# YAML 1.1 reads yes/no/on/off as booleans, so `retry: {on: [...]}` would become `True: [...]`.
# Only true/false are booleans in a spec (as in YAML 1.2).
_BOOL_RE = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")

# Copy the resolver table rather than editing it in place: SafeLoader's table is shared.
SpecLoader.yaml_implicit_resolvers = {
    first: [(tag, _BOOL_RE if tag == _BOOL else rx) for tag, rx in resolvers if tag != _TIMESTAMP]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


@dataclass
class Marks:
    """Where each key and value of a loaded document starts (1-based line, column)."""

    keys: dict[KeyPath, Mark] = field(default_factory=dict)
    values: dict[KeyPath, Mark] = field(default_factory=dict)

    def key(self, path: KeyPath) -> Mark:
        """Mark of the key at `path`; falls back to its value, then to the nearest ancestor."""
        return self._find(path, prefer_key=True)

    def value(self, path: KeyPath) -> Mark:
        """Mark of the value at `path`; falls back to its key, then to the nearest ancestor."""
        return self._find(path, prefer_key=False)

    def _find(self, path: KeyPath, prefer_key: bool) -> Mark:
        # A path that is not in the document (a missing key, a pydantic loc we do not know)
        # is reported at the closest thing that is: its parent mapping, and so on up.
        for end in range(len(path), -1, -1):
            sub = path[:end]
            first, second = (self.keys, self.values) if prefer_key else (self.values, self.keys)
            if sub in first:
                return first[sub]
            if sub in second:
                return second[sub]
        return (1, 1)


def _mark(m: yaml.Mark | None) -> Mark:
    return (m.line + 1, m.column + 1) if m is not None else (1, 1)


class _Builder:
    """Turns a composed node tree into plain data, recording marks and structural problems."""

    def __init__(self, loader: SpecLoader, file: str) -> None:
        self.loader = loader
        self.file = file
        self.marks = Marks()
        self.problems: list[SpecProblem] = []

    def problem(self, node: yaml.Node, path: KeyPath, message: str) -> None:
        line, col = _mark(node.start_mark)
        self.problems.append(SpecProblem(self.file, line, col, dotted(path), message))

    def build(self, node: yaml.Node, path: KeyPath, active: frozenset[int]) -> Any:
        self.marks.values[path] = _mark(node.start_mark)
        if id(node) in active:  # `&a [*a]`: an alias inside its own anchor
            self.problem(node, path, "recursive YAML alias; a spec must be a tree")
            return None
        active = active | {id(node)}
        if isinstance(node, yaml.MappingNode):
            return self.mapping(node, path, active)
        if isinstance(node, yaml.SequenceNode):
            if node.tag != _SEQ:
                self.problem(node, path, f"YAML tag '{node.tag}' is not supported; use a plain list")
                return None
            return [self.build(item, path + (i,), active) for i, item in enumerate(node.value)]
        return self.scalar(node, path)

    def scalar(self, node: yaml.Node, path: KeyPath) -> Any:
        try:
            value = self.loader.construct_object(node, deep=True)
        except yaml.MarkedYAMLError as exc:
            self.problem(node, path, f"cannot read this YAML value: {exc.problem}")
            return None
        if not isinstance(value, _PLAIN_TYPES):
            self.problem(
                node, path,
                f"YAML tag '{node.tag}' ({type(value).__name__}) is not supported; "
                "use text, a number, true/false or null",
            )
            return None
        return value

    def mapping(self, node: yaml.MappingNode, path: KeyPath, active: frozenset[int]) -> Any:
        if node.tag != _MAP:
            self.problem(node, path, f"YAML tag '{node.tag}' is not supported; use a plain mapping")
            return None
        merged: dict[Any, Any] = {}
        explicit: dict[Any, Any] = {}
        # `<<: *base` first, wherever it stands: merged keys are overridden by explicit keys
        # (YAML's rule, so an override is not a duplicate), and their marks must be too.
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                merged.update(self.merge_sources(value_node, path, active))
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                self.problem(key_node, path, "a mapping key must be a plain value, not a list or mapping")
                continue
            key = self.scalar(key_node, path)
            if key in explicit:
                line, _ = self.marks.keys[path + (key,)]
                self.problem(
                    key_node, path + (key,),
                    f"duplicate key '{key}' (first at line {line}); keep only one of them",
                )
                continue
            self.marks.keys[path + (key,)] = _mark(key_node.start_mark)
            explicit[key] = self.build(value_node, path + (key,), active)
        self.marks.values[path] = _mark(node.start_mark)
        return {**merged, **explicit}

    def merge_sources(self, node: yaml.Node, path: KeyPath, active: frozenset[int]) -> dict[Any, Any]:
        sources = node.value if isinstance(node, yaml.SequenceNode) else [node]
        result: dict[Any, Any] = {}
        # Earlier sources win (YAML merge rule), so build the later ones first.
        for source in reversed(sources):
            if not isinstance(source, yaml.MappingNode):
                self.problem(source, path, "'<<' must merge a mapping or a list of mappings")
                continue
            if id(source) in active:
                self.problem(source, path, "recursive YAML alias; a spec must be a tree")
                continue
            built = self.mapping(source, path, active | {id(source)})
            if isinstance(built, dict):
                result.update(built)
        return result


def dotted(path: KeyPath) -> str:
    """`('phases', 2, 'uses')` -> `phases[2].uses`: how problems name a place."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) and not isinstance(part, bool) else (
            f".{part}" if out else str(part)
        )
    return out


def _syntax_problem(exc: yaml.YAMLError, text: str, file: str) -> SpecProblem:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        line, col = _mark(mark)
        what = exc.problem or exc.context or str(exc)
        if exc.context and exc.problem:
            what = f"{exc.context}, {exc.problem}"
        lines = text.splitlines()
        source_line = lines[line - 1] if 0 < line <= len(lines) else ""
        hint = ""
        if "${" in source_line or (line >= 2 and "${" in lines[line - 2]):
            hint = "; a ${...} inside a flow mapping {...} or list [...] must be quoted"
        return SpecProblem(file, line, col, "", f"YAML syntax error: {what}{hint}")
    position = getattr(exc, "position", None)
    if isinstance(position, int):  # ReaderError: a character YAML does not allow
        line = text.count("\n", 0, position) + 1
        col = position - (text.rfind("\n", 0, position) + 1) + 1
        char = getattr(exc, "character", 0)
        why = getattr(exc, "reason", "not allowed")
        return SpecProblem(file, line, col, "", f"character #x{char:04x} is not allowed in YAML ({why}); remove it")
    return SpecProblem(file, 1, 1, "", f"YAML error: {exc}")


def load_with_marks(text: str, file: str) -> tuple[Any, Marks]:
    """Parse one YAML document safely into plain data plus the marks of its keys and values.

    Raises `SpecError` for a syntax error (one problem at its mark) or for duplicate keys and
    unsupported tags (every one of them). An empty document gives `None`.
    """
    try:
        loader = SpecLoader(text)  # the reader refuses control characters right here
    except yaml.YAMLError as exc:
        raise SpecError([_syntax_problem(exc, text, file)]) from None
    try:
        try:
            node = loader.get_single_node()
        except yaml.YAMLError as exc:
            raise SpecError([_syntax_problem(exc, text, file)]) from None
        if node is None:
            return None, Marks()
        builder = _Builder(loader, file)
        data = builder.build(node, (), frozenset())
    finally:
        loader.dispose()
    if builder.problems:
        raise SpecError(sorted(builder.problems, key=lambda p: (p.line, p.col)))
    return data, builder.marks
