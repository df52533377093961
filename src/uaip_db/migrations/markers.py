"""What a revision file says about itself: its markers, and whether its downgrade does anything.

Markers are module-level assignments in a revision:
- `destroys_data_on_downgrade = "sessions.email"`: the downgrade drops data (it asks for --yes).
- `irreversible = "why"`: the downgrade deliberately does nothing or refuses.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from alembic.script import Script


@dataclass(frozen=True)
class RevisionFacts:
    revision: str
    path: Path
    destroys_data_on_downgrade: str | None
    irreversible: str | None
    downgrade_is_empty: bool

    @property
    def downgrade_missing(self) -> bool:
        """downgrade() does nothing and the revision does not say it is irreversible."""
        return self.downgrade_is_empty and not self.irreversible


def facts(script: Script) -> RevisionFacts:
    path = Path(script.path)
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    markers = module_markers(tree)
    return RevisionFacts(
        revision=script.revision,
        path=path,
        destroys_data_on_downgrade=markers.get("destroys_data_on_downgrade"),
        irreversible=markers.get("irreversible"),
        downgrade_is_empty=function_is_empty(tree, "downgrade"),
    )


def module_markers(tree: ast.Module) -> dict[str, str]:
    found: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            value = node.value
            for target in targets:
                if isinstance(target, ast.Name) and isinstance(value, ast.Constant) and value.value:
                    found[target.id] = str(value.value)
    return found


def function_is_empty(tree: ast.Module, name: str) -> bool:
    """True when `name()` only has a docstring, `pass` or `...` (a missing function counts too)."""
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return all(_is_filler(statement) for statement in node.body)
    return True


def _is_filler(statement: ast.stmt) -> bool:
    if isinstance(statement, ast.Pass):
        return True
    return isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant)
