"""Alembic environment: settings, lock and timeouts come from the uaip_db package."""

import sys
from logging.config import fileConfig
from typing import cast

from alembic import context
from alembic.runtime.environment import EnvironmentContext

from uaip_db.errors import UaipDbError
from uaip_db.migrations.runner import run_env

from_task = "uaip_db" in context.config.attributes
# Plain `alembic` gets alembic.ini's logging; inv tasks report progress themselves.
if context.config.config_file_name and not from_task:
    fileConfig(context.config.config_file_name, disable_existing_loggers=False)

try:
    run_env(cast(EnvironmentContext, context))
except UaipDbError as error:
    if from_task:
        raise
    # The `alembic` command line: one line on stderr, the exit status `inv` would give.
    print(f"FAILED: {error}", file=sys.stderr)
    sys.exit(error.exit_code)
