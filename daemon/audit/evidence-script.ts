/**
 * The offline verification script shipped in every evidence pack as `verify.sh` and printed in
 * docs/audit-format.md (a test checks the two are identical and runs it). POSIX sh, jq,
 * sha256sum, paste, cut and openssl 3 only: what an auditor's workstation already has.
 */
export const VERIFY_SCRIPT = `#!/bin/sh
# Recomputes the Wardkeep audit hash chain of an evidence pack and checks its signatures.
# Usage: sh verify.sh [--fingerprint HEX] [PACK_DIR]     Needs: jq, sha256sum, paste, cut, tail, openssl (3.x).
# HEX: the signing key's fingerprint as the appliance shows it (console Audit page, wardkeep audit fingerprint).
set -eu
fp=""
if [ "\${1:-}" = "--fingerprint" ]; then
  [ -n "\${2:-}" ] || { echo "usage: sh verify.sh [--fingerprint HEX] [PACK_DIR]"; exit 2; }
  fp=$2; shift 2
fi
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
# The key that signed the manifest is the appliance's: compared with a fingerprint obtained from the
# appliance itself, not from the pack (anyone can re-sign a pack with a key of their own).
have=$(openssl pkey -pubin -in "$(jq -r '.publicKey.file' manifest.json)" -outform DER | tail -c 32 | sha256sum | cut -c1-64)
if [ -n "$fp" ]; then
  want=$(printf '%s' "$fp" | tr -d ': ' | tr 'ABCDEF' 'abcdef')
  [ "$have" = "$want" ] || { echo "BROKEN: the pack is signed by key $have, not by the appliance key $want you obtained: do not trust this pack"; exit 1; }
else
  echo "WARNING: signing key $have not checked against the appliance's fingerprint (run: sh verify.sh --fingerprint HEX, HEX from the console's Audit page or wardkeep audit fingerprint)" >&2
fi

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

/**
 * README.md of every evidence pack: what is in it and how an auditor verifies it, step by step,
 * with the pack's verify.sh and standard tools only.
 */
export const AUDITOR_README = `# Wardkeep audit evidence pack

This directory was written by a Wardkeep appliance. It holds the audit events of one time range
and everything needed to check, offline, that they are complete and unaltered.

## What is in it

| File | What it is |
|---|---|
| events.jsonl | The events, one JSON object per line, each with its place in the hash chain (prev_hash, hash). This is the verifiable form. Events of other tenants appear as {"redacted": true} with only their hashes. |
| events.csv, events.fhir.json | The same events as CSV and as a FHIR R4 AuditEvent Bundle, when asked for (for reading; verification uses events.jsonl). |
| checkpoints.jsonl | Signed checkpoints: the appliance's Ed25519 signature over the chain head at a sequence number. |
| audit-signing-*.pem | The public keys the signatures need (the manifest's signer, and keys from before a key rotation). |
| SHA256SUMS | SHA-256 of every file above. |
| manifest.json, manifest.sig | The list of files with their digests, the range and the chain's first and last link, and its Ed25519 signature. |
| verify.sh | The verification script (POSIX sh). |

## How to verify it

You need: sh, jq, sha256sum, paste, cut, tail and openssl 3.x (node is not needed).

1. **Obtain the signing key's fingerprint from the appliance, not from this pack.** In the
   console: Audit trail page, "Checkpoint signing key", the "Fingerprint (SHA-256)" value (it lists
   the fingerprints of older keys too: use the one that was current when the pack was written). Or
   on the appliance host: \`wardkeep audit fingerprint\` (\`--json\` for machines). Note it down through a
   channel you trust (read it yourself, or ask the appliance operator in person).
2. Run, in this directory:

       sh verify.sh --fingerprint <the 64 hex digits from step 1> .

3. Read the last line. \`intact up to seq N, head H\` means every check passed:
   - every file matches SHA256SUMS and the signed manifest;
   - the manifest is signed by the key in the pack, **and that key has the fingerprint you
     obtained from the appliance** (without --fingerprint the script says WARNING on stderr: then
     you only know the pack is self-consistent, not that the appliance wrote it);
   - the hash chain recomputes event by event, with no event missing, added, reordered or changed;
   - every checkpoint signature verifies under a key the signed manifest lists, and the chain
     matches every signed checkpoint.

## What a failure means

Any line starting with BROKEN means: do not rely on this pack; ask for a new export and report it.

- \`BROKEN: the pack is signed by key X, not by the appliance key Y you obtained\`: the pack was
  re-signed with another key (or you used the fingerprint of a newer key: compare with the list on the
  Audit page). Its content cannot be trusted.
- \`BROKEN: a file differs from SHA256SUMS\`, \`... is not in the signed manifest\`, \`manifest.json
  signature\`: a file was changed, added or removed after the appliance wrote it.
- \`BROKEN at seq N: ...\`: the chain breaks at event N (changed, missing or reordered, or a
  checkpoint that does not verify); events before N are intact.
- \`BROKEN: the chain ends at seq N, the manifest says otherwise\`: events were cut from the end.

The format is described in the appliance's docs/audit-format.md.
`;
