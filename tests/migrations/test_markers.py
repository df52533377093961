"""What a revision file says about itself."""

from __future__ import annotations

import ast

from uaip_db.migrations.history import function_is_empty, module_markers

SOURCE = '''
destroys_data_on_downgrade = "sessions.email"
irreversible: str = "data fix"
revision = "abc"

def upgrade() -> None:
    """Doc."""
    op.execute("SELECT 1")

def downgrade() -> None:
    """Nothing."""
    pass
'''


def test_markers_and_empty_functions() -> None:
    tree = ast.parse(SOURCE)
    markers = module_markers(tree)
    assert markers["destroys_data_on_downgrade"] == "sessions.email"
    assert markers["irreversible"] == "data fix"
    assert function_is_empty(tree, "downgrade")
    assert not function_is_empty(tree, "upgrade")
    assert function_is_empty(tree, "missing")
    assert not function_is_empty(
        ast.parse("def downgrade():\n    raise NotImplementedError\n"), "downgrade"
    )
