/**
 * The offline verification script shipped in every evidence pack as `verify.sh` and printed in
 * docs/audit-format.md (a test checks the two are identical and runs it). POSIX sh, jq,
 * sha256sum, paste, cut and openssl 3 only: what an auditor's workstation already has.
 */
export const VERIFY_SCRIPT = `#!/bin/sh
# Recomputes the Wardkeep audit hash chain of an evidence pack and checks its signatures.
# Usage: sh verify.sh [PACK_DIR]     Needs: jq, sha256sum, paste, cut, openssl (3.x).
set -eu
dir=\${1:-.}
cd "$dir"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
fail() { echo "BROKEN at seq $1: $2"; exit 1; }

# 1. Every file is the one the appliance wrote: digests, and the Ed25519 signature over them.
sha256sum -c --quiet SHA256SUMS || { echo "BROKEN: a file differs from SHA256SUMS"; exit 1; }
grep -q " manifest.json\$" SHA256SUMS && { echo "BROKEN: manifest.json must not be listed"; exit 1; }
for f in $(cut -c67- SHA256SUMS); do
  [ "$(jq -r --arg f "$f" '.files[] | select(.name == $f) | .sha256' manifest.json)" = "$(sha256sum "$f" | cut -c1-64)" ] \\
    || { echo "BROKEN: $f is not in the signed manifest"; exit 1; }
done
openssl pkeyutl -verify -pubin -inkey "$(jq -r '.publicKey.file' manifest.json)" -rawin -in manifest.json -sigfile manifest.sig >/dev/null \\
  || { echo "BROKEN: manifest.json signature"; exit 1; }
# SHA256SUMS itself is in the signed manifest: no line (a key file's, say) can be dropped from it.
[ "$(jq -r '.files[] | select(.name == "SHA256SUMS") | .sha256' manifest.json)" = "$(sha256sum SHA256SUMS | cut -c1-64)" ] \\
  || { echo "BROKEN: SHA256SUMS is not the one in the signed manifest"; exit 1; }

# 2. The chain: hash_n = SHA-256(hash_{n-1} as 64 hex digits || canonical event bytes).
jq -r '.seq' events.jsonl > "$tmp/seq"
jq -r '.prev_hash' events.jsonl > "$tmp/prev"
jq -r '.hash' events.jsonl > "$tmp/hash"
jq -c 'if .redacted then null else {v, seq, recorded_at, tenant_id, actor_user_id, patient_id, event_id, occurred_at,
  actor_role, impersonator_id, break_glass, action, resource_type, resource_id, outcome, source_ip, user_agent,
  request_id, reason} end' events.jsonl > "$tmp/canon"
tab=$(printf '\\t')
head=$(paste "$tmp/seq" "$tmp/prev" "$tmp/hash" "$tmp/canon" | {
  prev=$(jq -r '.chainStart.hash' manifest.json); last=$(jq -r '.chainStart.seq' manifest.json)
  while IFS="$tab" read -r seq p h c; do
    [ "$seq" -eq $((last + 1)) ] || fail "$seq" "expected seq $((last + 1)) (missing or reordered event)"
    [ "$p" = "$prev" ] || fail "$seq" "prev_hash does not link to seq $last"
    if [ "$c" != "null" ]; then
      [ "$(printf '%s%s' "$prev" "$c" | sha256sum | cut -c1-64)" = "$h" ] || fail "$seq" "the event does not match its hash (changed)"
    fi
    prev=$h; last=$seq
  done
  echo "$last $prev"
}) || :
case "$head" in BROKEN*) echo "$head"; exit 1;; esac
last=\${head% *}; hash=\${head#* }

# 3. Signed checkpoints: each signature, under the key the manifest lists for its key id (keys
#    from before a rotation included), and each signed hash that falls inside the export.
jq -c '.' checkpoints.jsonl | while IFS= read -r cp; do
  seq=$(printf '%s' "$cp" | jq -r .seq)
  kid=$(printf '%s' "$cp" | jq -r .keyId)
  key=$(jq -r --arg k "$kid" '[.keys[] | select(.keyId == $k)][0].file // empty' manifest.json)
  [ -n "$key" ] || fail "$seq" "checkpoint signed by unknown key $kid"
  printf '%s' "$cp" | jq -j .message > "$tmp/msg"
  printf '%s' "$cp" | jq -r .signature | openssl base64 -d -A > "$tmp/sig"
  openssl pkeyutl -verify -pubin -inkey "$key" -rawin -in "$tmp/msg" -sigfile "$tmp/sig" >/dev/null \\
    || fail "$seq" "checkpoint signature does not verify"
  n=$(grep -n -x -- "$seq" "$tmp/seq" | cut -d: -f1 | head -n1)
  if [ -n "$n" ]; then
    [ "$(sed -n "\${n}p" "$tmp/hash")" = "$(printf '%s' "$cp" | jq -r .hash)" ] || fail "$seq" "the chain differs from a signed checkpoint"
  fi
done
[ "$last" = "$(jq -r '.chainEnd.seq' manifest.json)" ] && [ "$hash" = "$(jq -r '.chainEnd.hash' manifest.json)" ] \\
  || { echo "BROKEN: the chain ends at seq $last, the manifest says otherwise"; exit 1; }
echo "intact up to seq $last, head $hash"
`;
