"""Schema lifecycle of the UAIP Scoping database."""

from __future__ import annotations

__version__ = "1.1.0"
