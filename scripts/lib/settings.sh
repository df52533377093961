# shellcheck shell=sh
# Sourced by the scripts in scripts/ (POSIX sh): the database settings, read like
# src/uaip_db/settings.py reads them, and the libpq environment the client tools get.
#
# Settings come from the real environment only: these scripts do not read .env (parsing its
# quoting rules in shell would be a second, subtly different reader). DATABASE_URL, when set and
# not empty, overrides DB_HOST/DB_PORT/DB_NAME/DB_USER/DB_PASSWORD; an empty DB_* counts as unset
# (the default applies), except DB_PASSWORD= (empty), which means no password (libpq's passfile
# may supply one). The password reaches the tools through PGPASSWORD, never their arguments.

uaip_program=${0##*/}
# Read before uaip_settings clears the PG* variables.
uaip_bindir=${PG_BINDIR:-}

# One line on stderr, then exit with $1 (2 usage/settings/connection, 1 a check or step failed).
uaip_die() {
    uaip_status=$1
    shift
    printf '%s: %s\n' "$uaip_program" "$*" >&2
    exit "$uaip_status"
}

# $1 without leading and trailing white space (a value of only white space counts as unset).
uaip_trim() {
    printf '%s' "$1" | sed 's/^[[:space:]]*//; s/[[:space:]]*$//'
}

# Epoch seconds with POSIX tools only (date +%s is not POSIX).
uaip_now() {
    awk 'BEGIN { srand(); print srand() }'
}

# Percent-decode $1 (DATABASE_URL's parts), byte by byte.
uaip_unquote() {
    printf '%s' "$1" | LC_ALL=C awk '
        BEGIN { for (i = 0; i < 256; i++) hex[sprintf("%02x", i)] = i }
        {
            if (NR > 1) printf "\n"
            line = $0
            while ((at = index(line, "%")) > 0) {
                printf "%s", substr(line, 1, at - 1)
                code = tolower(substr(line, at + 1, 2))
                if (code in hex) { printf "%c", hex[code]; line = substr(line, at + 3) }
                else { printf "%%"; line = substr(line, at + 1) }
            }
            printf "%s", line
        }'
}

uaip_check_port() {
    case $1 in
        '' | *[!0-9]*) uaip_die 2 "$2=$1 is not a port number (1-65535); fix it in your environment." ;;
    esac
    if [ "${#1}" -gt 5 ] || [ "$1" -lt 1 ] || [ "$1" -gt 65535 ]; then
        uaip_die 2 "$2=$1 is not a port number (1-65535); fix it in your environment."
    fi
}

# libpq parameters a DATABASE_URL's query may set (settings.URL_OPTIONS): none changes which
# database is used. Those with a libpq variable are exported; keepalives and tcp_user_timeout
# only tune TCP and have none, so the client tools use their defaults for them.
uaip_url_option() {
    case $1 in
        sslmode) PGSSLMODE=$2 && export PGSSLMODE ;;
        sslcert) PGSSLCERT=$2 && export PGSSLCERT ;;
        sslkey) PGSSLKEY=$2 && export PGSSLKEY ;;
        sslrootcert) PGSSLROOTCERT=$2 && export PGSSLROOTCERT ;;
        sslcrl) PGSSLCRL=$2 && export PGSSLCRL ;;
        sslcompression) PGSSLCOMPRESSION=$2 && export PGSSLCOMPRESSION ;;
        gssencmode) PGGSSENCMODE=$2 && export PGGSSENCMODE ;;
        channel_binding) PGCHANNELBINDING=$2 && export PGCHANNELBINDING ;;
        requirepeer) PGREQUIREPEER=$2 && export PGREQUIREPEER ;;
        target_session_attrs) PGTARGETSESSIONATTRS=$2 && export PGTARGETSESSIONATTRS ;;
        keepalives | keepalives_idle | keepalives_interval | keepalives_count | tcp_user_timeout) ;;
        *)
            uaip_die 2 "DATABASE_URL's query sets '$1', which could connect somewhere other than" \
                "the URL names; put the host, port, user and database in the URL itself and drop it."
            ;;
    esac
}

uaip_parse_url() {
    uaip_url_hint="expected postgresql://USER:PASSWORD@HOST:PORT/NAME (percent-encode @ : / % # in parts)."
    url=$1
    case $url in
        postgres://* | postgresql://* | postgres+*://* | postgresql+*://*) ;;
        *) uaip_die 2 "DATABASE_URL is not a PostgreSQL URL; $uaip_url_hint" ;;
    esac
    rest=${url#*://}
    query=''
    case $rest in *\#*) rest=${rest%%#*} ;; esac
    case $rest in *\?*) query=${rest#*\?} rest=${rest%%\?*} ;; esac
    case $rest in
        */*) netloc=${rest%%/*} path=${rest#*/} ;;
        *) netloc=$rest path= ;;
    esac
    [ -n "$netloc" ] || uaip_die 2 "DATABASE_URL is not a PostgreSQL URL; $uaip_url_hint"
    userinfo='' hostport=$netloc
    case $netloc in *@*) userinfo=${netloc%@*} hostport=${netloc##*@} ;; esac
    case $userinfo in
        *:*) url_user=${userinfo%%:*} url_password=${userinfo#*:} ;;
        *) url_user=$userinfo url_password= ;;
    esac
    case $hostport in
        \[*) url_host=${hostport#\[} url_host=${url_host%%\]*} url_port=${hostport##*\]} ;;
        *) url_host=${hostport%%:*} url_port=${hostport#"$url_host"} ;;
    esac
    url_port=${url_port#:}
    name=$(uaip_unquote "$path")
    case $name in
        '' | */*) uaip_die 2 "DATABASE_URL is not a PostgreSQL URL: it names no database; $uaip_url_hint" ;;
    esac
    if [ -n "$url_port" ]; then
        case $url_port in
            *[!0-9]*) uaip_die 2 "DATABASE_URL is not a PostgreSQL URL: its port is not a number from 1 to 65535; $uaip_url_hint" ;;
        esac
        uaip_check_port "$url_port" "DATABASE_URL's port"
    fi
    DB_HOST=$(uaip_unquote "${url_host:-localhost}")
    DB_PORT=${url_port:-5432}
    DB_NAME=$name
    DB_USER=$(uaip_unquote "${url_user:-uaip_user}")
    # Command substitution strips trailing newlines: a password may end in one (%0A).
    DB_PASSWORD=$(uaip_unquote "$url_password" && printf x)
    DB_PASSWORD=${DB_PASSWORD%x}
    if [ -n "$query" ]; then
        rest=$query
        while [ -n "$rest" ]; do
            pair=${rest%%&*}
            case $rest in *\&*) rest=${rest#*&} ;; *) rest= ;; esac
            [ -n "$pair" ] || continue
            uaip_url_option "$(uaip_unquote "${pair%%=*}")" "$(uaip_unquote "${pair#*=}")"
        done
    fi
}

# Read the settings into DB_HOST, DB_PORT, DB_NAME, DB_USER, DB_PASSWORD, DB_ENV, and set the
# libpq environment: the caller's PG* variables (PGSERVICE, PGHOSTADDR, PGOPTIONS, PGDATABASE,
# ...; all but PGPASSFILE) are cleared first, search_path is pinned to public.
uaip_settings() {
    # The caller's libpq variables would decide where the tools connect: clear them first.
    for uaip_name in $(env | sed -n 's/^\(PG[A-Za-z0-9_]*\)=.*/\1/p'); do
        [ "$uaip_name" = PGPASSFILE ] || unset "$uaip_name"
    done
    uaip_password_set=${DB_PASSWORD+set}
    uaip_password_given=${DB_PASSWORD-}
    DB_ENV=$(uaip_trim "${DB_ENV:-}" | tr '[:upper:]' '[:lower:]')
    [ -n "$DB_ENV" ] || DB_ENV=development
    case $DB_ENV in
        development | ci | production) ;;
        *) uaip_die 2 "DB_ENV='$DB_ENV' is not one of development, ci, production; fix it in your environment." ;;
    esac
    uaip_url=$(uaip_trim "${DATABASE_URL:-}")
    if [ -n "$uaip_url" ]; then
        uaip_parse_url "$uaip_url"
    else
        [ -n "$(uaip_trim "${DB_HOST:-}")" ] || DB_HOST=localhost
        [ -n "$(uaip_trim "${DB_PORT:-}")" ] || DB_PORT=15432
        [ -n "$(uaip_trim "${DB_NAME:-}")" ] || DB_NAME=uaip_scoping
        [ -n "$(uaip_trim "${DB_USER:-}")" ] || DB_USER=uaip_user
        if [ "$uaip_password_set" = set ] && [ -z "$uaip_password_given" ]; then
            DB_PASSWORD=
        elif [ -z "$(uaip_trim "$uaip_password_given")" ]; then
            DB_PASSWORD=changeme
        fi
        uaip_check_port "$DB_PORT" DB_PORT
    fi
    PGHOST=$DB_HOST
    PGPORT=$DB_PORT
    PGDATABASE=$DB_NAME
    PGUSER=$DB_USER
    PGCONNECT_TIMEOUT=5
    PGAPPNAME=uaip-db
    PGOPTIONS='-c search_path=public'
    PGCLIENTENCODING=UTF8
    export PGHOST PGPORT PGDATABASE PGUSER PGCONNECT_TIMEOUT PGAPPNAME PGOPTIONS PGCLIENTENCODING
    if [ -n "$DB_PASSWORD" ]; then
        PGPASSWORD=$DB_PASSWORD
        export PGPASSWORD
    fi
}

# How people may see the connection: never the password.
uaip_display_url() {
    printf 'postgresql://%s:***@%s:%s/%s' "$DB_USER" "$DB_HOST" "$DB_PORT" "$DB_NAME"
}

# PG_BINDIR, when set, must be a folder: a typo must not fall back to another program silently.
uaip_check_bindir() {
    if [ -n "$uaip_bindir" ] && [ ! -d "$uaip_bindir" ]; then
        uaip_die 2 "PG_BINDIR=$uaip_bindir is not a folder; point it at a PostgreSQL bin folder" \
            "or unset it."
    fi
}

# A libpq client program: $PG_BINDIR/NAME when PG_BINDIR has it (as on the Python side), else
# the one on PATH.
uaip_tool() {
    uaip_check_bindir
    if [ -n "$uaip_bindir" ] && [ -x "$uaip_bindir/$1" ]; then
        printf '%s\n' "$uaip_bindir/$1"
    elif command -v "$1" >/dev/null 2>&1; then
        command -v "$1"
    else
        uaip_die 2 "$1 is not installed; install the PostgreSQL client (apt-get install" \
            "postgresql-client) or set PG_BINDIR to its bin folder."
    fi
}

# The major version of a client program ("pg_dump (PostgreSQL) 16.15" gives 16).
uaip_tool_major() {
    "$1" --version 2>/dev/null | sed -n 's/^[^)]*) *\([0-9][0-9]*\).*/\1/p'
}

# The folder `inv db.up` and the tests fetch PostgreSQL releases into (servers/binaries.py).
uaip_release_cache() {
    if [ -n "${UAIP_PG_CACHE:-}" ]; then
        printf '%s\n' "$UAIP_PG_CACHE"
    elif [ "$(id -u)" = 0 ]; then
        printf '%s\n' /var/cache/uaip-db/postgresql
    else
        printf '%s\n' "${XDG_CACHE_HOME:-$HOME/.cache}/uaip-db/postgresql"
    fi
}

# A client program NAME that works with a server of major $2: its own major is $2 or newer
# (pg_dump refuses a newer server). PG_BINDIR when set (and then only it); else the closest
# of Debian's /usr/lib/postgresql/*/bin, the release cache, then PATH.
uaip_tool_for() {
    uaip_check_bindir
    uaip_cache=$(uaip_release_cache)
    if [ -n "$uaip_bindir" ]; then
        set -- "$1" "$2" "$uaip_bindir/$1"
    else
        set -- "$1" "$2" /usr/lib/postgresql/*/bin/"$1" "$uaip_cache"/*/bin/"$1" \
            "$(command -v "$1" 2>/dev/null || true)"
    fi
    uaip_name=$1 uaip_wanted=$2
    shift 2
    uaip_seen=
    for uaip_candidate in "$@"; do
        [ -n "$uaip_candidate" ] && [ -x "$uaip_candidate" ] || continue
        uaip_major=$(uaip_tool_major "$uaip_candidate")
        [ -n "$uaip_major" ] || continue
        if [ "$uaip_major" -ge "$uaip_wanted" ]; then
            printf '%s\n' "$uaip_candidate"
            return 0
        fi
        uaip_seen="$uaip_seen $uaip_candidate ($uaip_major)"
    done
    uaip_die 2 "No $uaip_name for this PostgreSQL $uaip_wanted server (it needs version" \
        "$uaip_wanted or newer; found:${uaip_seen:- none}). Set PG_BINDIR to such a bin folder" \
        "(inv db.up fetches PostgreSQL 16 into $uaip_cache)."
}
