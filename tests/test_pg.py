"""Connection failures in plain words; no password in any of them."""

from __future__ import annotations

import pytest

from uaip_db.pg import explain, scrub
from uaip_db.settings import DatabaseConfig

CONFIG = DatabaseConfig(host="db.example", port=5433, name="scoping", password="s3cret!")


@pytest.mark.parametrize(
    ("driver_message", "expected"),
    [
        ('FATAL:  password authentication failed for user "uaip_user"', "the password was refused"),
        ('FATAL:  database "scoping" does not exist', "does not exist. Create it"),
        ('FATAL:  role "bob" does not exist', "The role 'uaip_user' does not exist"),
        ('could not translate host name "db.example" to address', "Unknown host 'db.example'"),
        ("connection refused", "No PostgreSQL server answers at db.example:5433"),
        ("something odd with s3cret! inside", "Cannot use database 'scoping'"),
    ],
)
def test_each_failure_says_what_to_do(driver_message: str, expected: str) -> None:
    message = str(explain(Exception(driver_message), CONFIG))
    assert expected in message
    assert "s3cret!" not in message


def test_scrub_hides_passwords_in_urls_and_text() -> None:
    assert scrub("postgresql://u:pw@h/db and s3cret!", CONFIG) == "postgresql://u:***@h/db and ***"
