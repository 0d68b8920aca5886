"""Config files checked before Detectron2 loads them: yaml that would run code, LazyConfig import cycles.

Detectron2 loads LazyConfig yaml with ``yaml.unsafe_load`` and yacs yaml through ``CfgNode.merge_from_file``,
whose ``allow_unsafe=True`` default falls back to ``yaml.unsafe_load`` when the safe loader refuses a tag: a
``!!python/object/apply:os.system [...]`` in a shared ``config.yaml`` runs that command.
:func:`check_config_file` composes the yaml (nodes only, nothing constructed) and refuses every tag the
safe loader does not know, naming the file, the key and the tag; a yacs ``_BASE_`` file is checked too. A
``.py`` LazyConfig is Python by design (it runs when loaded, as any script); its relative imports of other
config files are followed, and a cycle, which would make Detectron2's loader recurse without end, is named.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import yaml

__all__ = ["ConfigImportCycleError", "UnsafeConfigError", "check_config_file"]

_SAFE_TAGS = frozenset(yaml.SafeLoader.yaml_constructors) - {None}
_BASE_KEY = "_BASE_"  # a yacs config's parent file, relative to it


class UnsafeConfigError(ValueError):
    """A yaml config holding a tag that constructs Python objects (code would run when it is loaded)."""


class ConfigImportCycleError(ValueError):
    """LazyConfig ``.py`` files that import each other."""


def check_config_file(path: str | os.PathLike) -> None:
    """Raise :class:`UnsafeConfigError` / :class:`ConfigImportCycleError` for a config Detectron2 must not
    load; other files (model-zoo names, missing files) are left to the loader."""
    path = Path(path)
    if not path.is_file():
        return
    if path.suffix in (".yaml", ".yml"):
        _check_yaml(path, ())
    elif path.suffix == ".py":
        _check_imports(path.resolve(), ())


def _short_tag(tag: str) -> str:
    return tag.replace("tag:yaml.org,2002:", "!!")


def _check_yaml(path: Path, chain: tuple[Path, ...]) -> None:
    if path.resolve() in chain:
        raise ConfigImportCycleError(
            f"{_BASE_KEY} files form a cycle: {' -> '.join(str(p) for p in (*chain, path.resolve()))}"
        )
    with open(path, encoding="utf-8") as f:
        try:
            root = yaml.compose(f, Loader=yaml.SafeLoader)
        except yaml.YAMLError as error:
            raise ValueError(f"{path} is not a valid yaml file: {error}") from error
    base = None
    stack = [("", root)] if root is not None else []
    while stack:
        key, node = stack.pop()
        if node.tag not in _SAFE_TAGS:
            raise UnsafeConfigError(
                f"{path}: key {key or '(the document)'!r} has the tag {_short_tag(node.tag)}, which would "
                "run code when loaded; a yaml config holds plain values only (refused)"
            )
        if isinstance(node, yaml.MappingNode):
            for key_node, value in node.value:
                name = f"{key}.{key_node.value}" if key else str(key_node.value)
                stack.extend([(name + " (key)", key_node), (name, value)])
                if name == _BASE_KEY and isinstance(value, yaml.ScalarNode):
                    base = value.value
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((f"{key}[{i}]", item) for i, item in enumerate(node.value))
    if base:
        base_path = Path(os.path.expanduser(base))
        base_path = base_path if base_path.is_absolute() else path.parent / base_path
        _check_yaml(base_path, (*chain, path.resolve()))


def _relative_imports(path: Path) -> list[Path]:
    """The config files ``path`` imports relatively, resolved as Detectron2's LazyConfig loader does."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except SyntaxError:
        return []  # Detectron2's loader names it
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom) or node.level == 0:
            continue
        directory = path.parent
        for _ in range(node.level - 1):
            directory = directory.parent
        if node.module:
            candidates = [directory.joinpath(*node.module.split(".")).with_suffix(".py")]
        else:
            candidates = [directory / f"{alias.name}.py" for alias in node.names]
        found.extend(c.resolve() for c in candidates if c.is_file())
    return found


def _check_imports(path: Path, chain: tuple[Path, ...]) -> None:
    if path in chain:
        cycle = [*chain[chain.index(path):], path]
        raise ConfigImportCycleError(
            "LazyConfig files import each other (loading would never end): "
            + " -> ".join(str(p) for p in cycle)
        )
    for imported in _relative_imports(path):
        _check_imports(imported, (*chain, path))
