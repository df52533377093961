"""Alembic environment: settings, lock and timeouts come from the uaip_db package."""

from logging.config import fileConfig
from typing import cast

from alembic import context
from alembic.runtime.environment import EnvironmentContext

from uaip_db.migrations.runner import run_env

# Plain `alembic` gets alembic.ini's logging; inv tasks report progress themselves.
if context.config.config_file_name and "uaip_db" not in context.config.attributes:
    fileConfig(context.config.config_file_name, disable_existing_loggers=False)

run_env(cast(EnvironmentContext, context))
