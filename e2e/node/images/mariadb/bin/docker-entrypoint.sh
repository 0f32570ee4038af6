#!/bin/bash
# Stand-in for the official mariadb image's docker-entrypoint.sh, on the MariaDB installed on this
# machine: on an empty datadir it initialises the server with MARIADB_ROOT_PASSWORD (root@localhost
# and root@'%', not binary-logged, as the image does), then runs the server with the container's args.
set -euo pipefail
if [ "${1:0:1}" = '-' ]; then set -- mariadbd "$@"; fi
if [ "$1" != mariadbd ] && [ "$1" != mysqld ]; then exec "$@"; fi
shift
DATADIR=/var/lib/mysql
user_arg=()
[ "$(id -u)" = 0 ] && user_arg=(--user=root)
if [ ! -d "$DATADIR/mysql" ]; then
  if [ -z "${MARIADB_ROOT_PASSWORD:-}" ]; then
    echo "error: the database is uninitialized and MARIADB_ROOT_PASSWORD is not set" >&2
    exit 1
  fi
  echo "initialising $DATADIR"
  mariadb-install-db "${user_arg[@]}" --datadir="$DATADIR" --auth-root-authentication-method=normal \
    --skip-test-db --skip-name-resolve >/dev/null
  socket=/run/mysqld/init.sock
  mariadbd "${user_arg[@]}" "$@" --skip-networking --socket="$socket" --expire-logs-days=0 &
  pid=$!
  for _ in $(seq 300); do
    mariadb --protocol=socket --socket="$socket" -uroot -e 'SELECT 1' >/dev/null 2>&1 && break
    sleep 0.1
  done
  pw=${MARIADB_ROOT_PASSWORD//\\/\\\\}
  pw=${pw//\'/\\\'}
  mariadb --protocol=socket --socket="$socket" -uroot <<SQL
SET @@SESSION.SQL_LOG_BIN=0;
DELETE FROM mysql.global_priv WHERE User='' OR (User='root' AND Host NOT IN ('localhost'));
ALTER USER 'root'@'localhost' IDENTIFIED BY '$pw';
CREATE USER 'root'@'%' IDENTIFIED BY '$pw';
GRANT ALL ON *.* TO 'root'@'%' WITH GRANT OPTION;
FLUSH PRIVILEGES;
SQL
  kill "$pid"
  wait "$pid" || true
  echo "initialised"
fi
exec mariadbd "${user_arg[@]}" "$@"
