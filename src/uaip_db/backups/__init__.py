"""Backups with manifests, restores that verify, rehearsals on restored copies."""
