#!/bin/sh
# HAProxy external check for deploy/haproxy-postgres.cfg: succeeds only when the server accepts a
# connection AND is not in recovery (a primary, not a standby). HAProxy calls it with
#   $1 proxy address, $2 proxy port, $3 server address, $4 server port
# in an empty environment, so the login comes from pg-probe.env beside this script (0600):
#   PGUSER=wardkeep_probe  PGPASSWORD=...  (a role that needs no privilege: pg_is_in_recovery() is public)
set -u
settings="$(dirname "$0")/pg-probe.env"
if [ -r "$settings" ]; then
  set -a
  . "$settings"
  set +a
fi
out=$(PGCONNECT_TIMEOUT="${PGCONNECT_TIMEOUT:-2}" psql -X -q -A -t -h "$3" -p "$4" -d "${PGDATABASE:-postgres}" -c "SELECT pg_is_in_recovery()" 2>/dev/null) || exit 1
[ "$out" = "f" ]
