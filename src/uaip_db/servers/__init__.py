"""Where a database server comes from: local cluster, docker compose, throwaway servers."""
