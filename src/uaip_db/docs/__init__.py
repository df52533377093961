"""Schema documentation rendered from catalog snapshots.

`model` reads a snapshot into typed tables; `markdown` renders docs/schema/README.md;
`diagrams` draws the ER diagram (Mermaid, Graphviz); `changes` says what changed between two
snapshots; `output` writes and checks docs/schema/ (through `uaip_db.generated`).
"""
