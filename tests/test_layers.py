"""The package's layers: ops -> http -> store -> core, every import pointing down (or within its layer)."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "sprockets_cache"
# What each layer may import of the package, besides itself.
ALLOWED = {"core": {"core"}, "store": {"core"}, "http": {"core", "store"}, "ops": {"core", "store", "http"}}
# The entry points above every layer: `python -m sprockets_cache` and `uvicorn sprockets_cache.app:app`.
ENTRY_POINTS = {"__main__", "app"}
LAYERS = {"store", "http", "ops"}


def _layer(dotted: str) -> str | None:
    """The layer of a module named from the package down (`http.app`, `settings`); None: an entry point."""
    parts = dotted.split(".")
    if parts[0] in LAYERS:
        return parts[0]
    return None if parts[0] in ENTRY_POINTS else "core"


def _imported(tree: ast.Module, package: list[str]) -> set[str]:
    """The package's modules that `tree` imports, named from the package down."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's own package upwards
                base = ".".join(["sprockets_cache", *package[: len(package) - node.level + 1], base]).rstrip(".")
            names |= {base} | {f"{base}.{alias.name}" for alias in node.names}
    return {name.removeprefix("sprockets_cache.") for name in names if name.startswith("sprockets_cache.")}


def upward_imports(root: Path) -> list[str]:
    """Each import in the package at `root` that points up a layer (or sideways from core), as 'a -> b'."""
    found = []
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        layer = _layer(".".join(parts))
        if layer is None:
            continue
        for target in sorted(_imported(ast.parse(path.read_text()), parts[:-1])):
            target_layer = _layer(target)
            if target_layer is not None and target_layer != layer and target_layer not in ALLOWED[layer]:
                found.append(f"{'.'.join(parts)} ({layer}) -> {target} ({target_layer})")
    return found


def test_every_import_in_the_package_points_down_a_layer() -> None:
    assert upward_imports(PACKAGE) == []


@pytest.mark.parametrize(
    ("module", "line", "upward"),
    [
        ("store/store.py", "from sprockets_cache.http.web import JSON", "store.store (store) -> http.web (http)"),
        ("store/keys.py", "from sprockets_cache.ops import seed", "store.keys (store) -> ops (ops)"),
        ("http/web.py", "import sprockets_cache.ops.cli", "http.web (http) -> ops.cli (ops)"),
        ("http/web.py", "from ..ops import export", "http.web (http) -> ops (ops)"),
        ("settings.py", "from sprockets_cache.store import keys", "settings (core) -> store (store)"),
    ],
    ids=["store-to-http", "store-to-ops", "http-to-ops", "relative", "core-to-store"],
)
def test_an_upward_import_added_anywhere_is_named(tmp_path: Path, module: str, line: str, upward: str) -> None:
    for path in PACKAGE.rglob("*.py"):
        copy = tmp_path / path.relative_to(PACKAGE)
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_text(path.read_text())
    assert upward_imports(tmp_path) == []
    (tmp_path / module).write_text((tmp_path / module).read_text() + f"\n{line}\n")
    assert upward in upward_imports(tmp_path)


def test_no_module_is_over_350_lines() -> None:
    lengths = {str(path.relative_to(PACKAGE)): len(path.read_text().splitlines()) for path in PACKAGE.rglob("*.py")}
    assert {name: length for name, length in lengths.items() if length > 350} == {}
