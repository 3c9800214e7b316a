#!/usr/bin/env bash
# Creates ./secrets/db_owner_password and ./secrets/db_app_password for docker-compose.yml:
# 32 random bytes each, base64url without padding (no characters that need quoting in a
# connection string or a shell), mode 0600 in a 0700 folder. Refuses to overwrite: a new
# owner password would no longer match the one PostgreSQL initialised its volume with.
#
# Ownership: Docker Compose (outside Swarm) bind-mounts secret files with their host owner and
# mode. PostgreSQL reads its file as root and copes with any owner; the daemon runs as uid 10001
# with every capability dropped, so the files must belong to uid 10001. Run this script with
# sudo to get that, or chown afterwards. Override with WARDKEEP_UID for a remapped user namespace.
#
# Usage (from the repository root or anywhere): deploy/make-secrets.sh [SECRETS_DIR]
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="${1:-$root/secrets}"
owner_uid="${WARDKEEP_UID:-10001}"
names=(db_owner_password db_app_password)

for name in "${names[@]}"; do
  if [ -e "$dir/$name" ]; then
    echo "make-secrets: $dir/$name already exists; refusing to overwrite it (delete it yourself only if no database was ever initialised with it)" >&2
    exit 1
  fi
done

umask 077
mkdir -p "$dir"
chmod 0700 "$dir"

random_password() {
  if command -v openssl >/dev/null 2>&1; then
    openssl rand -base64 32
  else
    head -c 32 /dev/urandom | base64
  fi | tr -d '\n=' | tr '+/' '-_'
}

for name in "${names[@]}"; do
  # noclobber: fail rather than overwrite if the file appeared since the check above.
  ( set -o noclobber; random_password > "$dir/$name" )
  chmod 0600 "$dir/$name"
done

if [ "$(id -u)" -eq 0 ]; then
  for name in "${names[@]}"; do chown "$owner_uid:$owner_uid" "$dir/$name"; done
  echo "make-secrets: wrote ${names[*]} to $dir (mode 0600, owner uid $owner_uid)"
else
  echo "make-secrets: wrote ${names[*]} to $dir (mode 0600, owner $(id -un))"
  echo "make-secrets: the daemon runs as uid $owner_uid and cannot read them yet; run:" >&2
  for name in "${names[@]}"; do echo "  sudo chown $owner_uid:$owner_uid $dir/$name" >&2; done
fi
