"""Import path kept for revision 03033cebb647: a committed revision file never changes (the
ledger records its sha256), so the names it imports stay here; they live in migrations.baseline.
"""

from uaip_db.migrations.baseline import init_sql_text, run_script

__all__ = ["init_sql_text", "run_script"]
