"""`inv release.check`, `db.docs`, `db.diff`: what a release changes, written for people."""

from __future__ import annotations

from uaip_db import paths

# Task bodies import what only their own task needs (marked for ruff's PLC0415): at the top of cli/, these  # noqa: E501
# imports load the backups, release, fleet, docs and servers layers for every `inv` command,
# `inv --list` included (median of 15 runs on the shared 2 cores: 1.65 s against 0.89-1.12 s).
from uaip_db.catalog import expected
from uaip_db.cli.backups import load_settings
from uaip_db.cli.reporter import Say, say
from uaip_db.errors import CheckFailed
from uaip_db.migrations import history, snapshots
from uaip_db.settings import DatabaseConfig

SVG = "schema.svg"


# The release check's writers are measured for a shorter time than db.rehearse --load's: the
# checklist runs often, and its verdict is about the upgrade, not the steady state.
RELEASE_BEFORE_SECONDS = 2.0


def release_check(*, load: bool = True, max_writer_wait: str | None = None, out: Say = say) -> None:
    """Write reports/release-<time>.md (with its .sql appendix and .json twin beside it);
    exit 1 when any item failed."""
    from uaip_db.release.check import release_check as check_release  # noqa: PLC0415

    writers = load_settings(load, max_writer_wait, before_seconds=RELEASE_BEFORE_SECONDS)
    config = DatabaseConfig.from_env()
    report, path = check_release(config, paths.release_backup_dir(), out, load=writers)
    for number, item in enumerate(report.items, 1):
        out(f"  {number}. {item.title}: {item.status}" + (f" ({item.brief})" if item.brief else ""))
    out(f"  SQL appendix: {path.with_suffix('.sql')}; JSON for CI: {path.with_suffix('.json')}")
    if not report.passed:
        raise CheckFailed(f"Release check failed; see {path}.")
    out(f"Release check passed; the report to sign is {path}.")


def docs(*, check: bool = False, out: Say = say) -> None:
    """Write docs/SETTINGS.md from the settings table, and docs/schema/ from the head schema
    built on a throwaway database (or check them)."""
    from uaip_db.docs import diagrams, markdown, model, output  # noqa: PLC0415
    from uaip_db.docs import settings as settings_doc  # noqa: PLC0415
    from uaip_db.servers.scratch import scratch_server  # noqa: PLC0415

    head = history.load().single_head()
    directory = paths.project_root() / "docs" / "schema"
    if check:
        stale_settings = settings_doc.differences()
        if stale_settings:
            raise CheckFailed(
                "docs/SETTINGS.md is not what the settings table renders:\n"
                + "\n".join(stale_settings)
                + "\nRun `inv db.docs`, then commit."
            )
        readme = directory / markdown.README
        recorded = (
            markdown.recorded_sources(readme.read_text(encoding="utf-8"))
            if readme.is_file()
            else {}
        )
        stale = snapshots.staleness(recorded=recorded, what="docs/schema/", command="inv db.docs")
        if stale:
            raise CheckFailed(stale)
    with scratch_server() as server:
        built = snapshots.build(server)
    snapshot = built[head]
    files = markdown.render(snapshot, revision=head, sources=snapshots.current_sources())
    undocumented = model.missing_comments(snapshot)
    if check:
        # The SVG depends on the local Graphviz version, so it is written but never compared.
        problems = [
            line for line in output.check(directory, files) if not line.startswith(SVG + ":")
        ]
        problems += [f"no comment: {item}" for item in undocumented]
        if problems:
            raise CheckFailed(
                "docs/schema/ is not what the migrations produce:\n"
                + "\n".join(problems)
                + "\nRun `inv db.docs` (and comment every table and column), then commit."
            )
        out(f"docs/schema/ matches the schema at {head}; every table and column has a comment.")
        return
    for path in settings_doc.write():
        out(f"  wrote {path.relative_to(paths.project_root())}")
    svg = diagrams.render_svg(snapshot)
    if svg is not None:
        files[SVG] = svg
    changed = output.write(directory, files)
    for path in changed:
        out(f"  wrote {path.relative_to(paths.project_root())}")
    out(f"docs/schema/ describes revision {head}" + ("" if changed else " (unchanged)") + ".")
    if undocumented:
        # The same verdict as `db.docs --check`, so that the two never disagree.
        raise CheckFailed(
            "Every table and column needs a comment (set_comments in a revision); none on: "
            + ", ".join(undocumented)
        )


def schema_diff(start: str, end: str, *, out: Say = say) -> None:
    """The schema change between two revisions, in words and as a Mermaid diagram."""
    from uaip_db.docs import changes  # noqa: PLC0415

    index = history.load()
    old_revision, new_revision = index.resolve(start), index.resolve(end)
    old, new = expected.snapshot(old_revision), expected.snapshot(new_revision)
    summary = changes.change_summary(old, new)
    out(f"Schema change from {old_revision} to {new_revision}:")
    for line in summary or ["no change"]:
        out(f"  {line}")
    if summary:
        out("")
        out("```mermaid")
        out(changes.change_diagram(old, new).rstrip())
        out("```")
