#!/bin/bash
# Stand-in for the official mariadb image's healthcheck.sh: --connect (the server answers a query) and
# --innodb_initialized (InnoDB is up), over the server's socket as root.
set -u
export MYSQL_PWD="${MARIADB_ROOT_PASSWORD:-}"
query="SELECT 1"
for arg in "$@"; do
  case $arg in
    --innodb_initialized)
      query="SELECT 1 FROM information_schema.ENGINES WHERE ENGINE='InnoDB' AND SUPPORT IN ('YES','DEFAULT','ENABLED')" ;;
  esac
done
out=$(mariadb --protocol=socket -uroot --batch --skip-column-names -e "$query" 2>&1)
[ "$out" = 1 ] || { echo "healthcheck failed: $out" >&2; exit 1; }
