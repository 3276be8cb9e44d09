"""Runs the `microtopic` command in a child process, inside the PostgreSQL schema of a test.

Each storage test works in a schema of its own, which it selects with a listener on
its engine. A child process builds its own engines, so this entry point selects the
schema named by `MICROTOPIC_TEST_SCHEMA` on every new connection, then runs the
command line unchanged: `python -m tests.jobs.worker_process worker --config FILE`.
"""

from __future__ import annotations

import os
from typing import Any

from sqlalchemy import event
from sqlalchemy.pool import Pool

from microtopic.cli.main import main

SCHEMA_ENV_VAR = "MICROTOPIC_TEST_SCHEMA"


def _set_search_path(dbapi_connection: Any, connection_record: Any) -> None:
    schema = os.environ[SCHEMA_ENV_VAR]
    dbapi_connection.run_async(
        lambda connection: connection.execute(f'SET search_path TO "{schema}"')
    )


if __name__ == "__main__":
    event.listen(Pool, "connect", _set_search_path)
    main()
