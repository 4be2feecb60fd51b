#!/usr/bin/env bash
# selftest.sh — self-check of the provider emulator.
#
# Starts the emulator in a temporary directory (start.sh), exercises every
# endpoint, check order, control member and fault with curl, asserts statuses,
# bodies, headers and ledger values, prints "N passed, N failed", stops the
# emulator and exits non-zero on any failure.  Set VERBOSE=1 to list passes.
# Needs: bash, curl, node, openssl.  Uses free ports only.
set -u

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
T=$(mktemp -d "${TMPDIR:-/tmp}/emu-selftest.XXXXXX")
pass=0
fail=0

cleanup() {
  bash "$here/stop.sh" "$T" >/dev/null 2>&1
  rm -rf "$T"
}
trap cleanup EXIT

ok() { pass=$((pass + 1)); [ -n "${VERBOSE:-}" ] && echo "ok   - $1"; return 0; }
bad() { fail=$((fail + 1)); echo "FAIL - $1: $2"; return 0; }
eq() { if [ "$2" == "$3" ]; then ok "$1"; else bad "$1" "expected [$2] got [$3]"; fi; }
ge() { if [ "$3" -ge "$2" ] 2>/dev/null; then ok "$1"; else bad "$1" "expected >= $2, got [$3]"; fi; }
le() { if [ "$3" -le "$2" ] 2>/dev/null; then ok "$1"; else bad "$1" "expected <= $2, got [$3]"; fi; }
has() { case "$3" in *"$2"*) ok "$1" ;; *) bad "$1" "expected to contain [$2], got [${3:0:300}]" ;; esac; }

if ! bash "$here/start.sh" "$T" >"$T/start.out" 2>&1; then
  echo "FAIL - start.sh: $(cat "$T/start.out")"
  echo "0 passed, 1 failed"
  exit 1
fi

cat >"$T/j.js" <<'EOF'
// node j.js FILE EXPR...  — print each JS expression evaluated with j = parsed JSON of FILE
const fs = require('fs');
const [, , file, ...exprs] = process.argv;
let j;
try { j = JSON.parse(fs.readFileSync(file, 'utf8')); } catch (e) { j = undefined; }
for (const e of exprs) {
  let v;
  if (j === undefined && e !== 'valid') v = '<invalid json>';
  else if (e === 'valid') v = j !== undefined;
  else { try { v = Function('j', 'return (' + e + ')')(j); } catch (err) { v = '<error: ' + err.message + '>'; } }
  console.log(typeof v === 'string' ? v : JSON.stringify(v));
}
EOF
jf() { node "$T/j.js" "$@"; }
j() { jf "$T/b" "$@"; }

HP=$(jf "$T/ports.json" j.http)
SP=$(jf "$T/ports.json" j.https)
WP=$(jf "$T/ports.json" j.wrong_host)
EPID=$(jf "$T/ports.json" j.pid)
CA="$T/ca.pem"
H="http://127.0.0.1:$HP"
S="https://localhost:$SP"
LLP=/functions/v1/api-gateway/v1/enrich/company
SLP=/v2.0/lead/enrich
LLURL="$H$LLP"
SLURL="$H$SLP"

# r [curl args...]: one request; ST=status, RC=curl exit, body in $T/b, headers in $T/h
r() {
  ST=$(curl -s -o "$T/b" -D "$T/h" -w '%{http_code}' --max-time 15 "$@")
  RC=$?
}
hdr() { grep -i "^$1:" "$T/h" | head -1 | cut -d' ' -f2- | tr -d '\r'; }
body() { cat "$T/b"; }
# ll BODY [curl args] — LeadLex request with the test key on plain HTTP (override with URL=...)
ll() {
  local b=$1; shift
  r -X POST -H "Authorization: Bearer ${KEY:-wbk_test_key}" -H 'Content-Type: application/json' \
    --data-binary "$b" "$@" "${URL:-$LLURL}"
}
# sl LINKEDIN_URL [curl args] — Slintel request with the test key
sl() {
  local u=$1; shift
  r -G --data-urlencode "linkedin_url=$u" -H "x-api-key: ${SKEY:-sl_test_key}" "$@" "${URL:-$SLURL}"
}
ctl() { # ctl JSON — POST /_control, must be 200
  local st
  st=$(curl -s -o "$T/c" -w '%{http_code}' -X POST -H 'Content-Type: application/json' --data-binary "$1" "$H/_control")
  [ "$st" = 200 ] || bad "control $1" "status $st $(cat "$T/c")"
}
ctl_st() { curl -s -o "$T/c" -w '%{http_code}' -X POST --data-binary "$1" "$H/_control"; }
led() { curl -s -o "$T/l" "$H/_ledger"; jf "$T/l" "$@"; }
reset() { ctl '{"reset":true}'; }

sha() { node -e "const c=require('crypto');const j=JSON.parse(require('fs').readFileSync(process.argv[1]));if(process.argv[2])delete j.data.credits_remaining;console.log(c.createHash('sha256').update(JSON.stringify(j)).digest('hex'))" "$T/b" "${1:-}"; }

# ---------------------------------------------------------------------------
echo "# start, ports, health"
eq "ports.json has a live pid" 0 "$(kill -0 "$EPID" 2>/dev/null; echo $?)"
has "emulator log says ready" "emulator ready http=$HP https=$SP" "$(cat "$T/emulator.log")"
r "$H/_health"; eq "health" "200 true" "$ST $(j j.ok)"
r --cacert "$CA" "$S/_health"; eq "https health" 200 "$ST"

# ---------------------------------------------------------------------------
echo "# LeadLex: success, seed, synthetic"
reset
ll '{"domain":"acme.com"}'
eq "acme 200" 200 "$ST"
eq "acme body is the document's example (except credits_remaining)" \
  ac83e930cf555803530f278a0e406f18fe06f46a950f59a98886d6424f51265f "$(sha nocredits)"
eq "acme credits_remaining is the balance after the charge" 999999 "$(j j.data.credits_remaining)"
eq "content-type" "application/json" "$(hdr Content-Type)"
rid1=$(hdr X-Request-ID)
has "X-Request-ID" "req_" "$rid1"
eq "X-RateLimit-Limit" 1000000 "$(hdr X-RateLimit-Limit)"
eq "X-RateLimit-Remaining" 999999 "$(hdr X-RateLimit-Remaining)"
reset_next=$(node -e 'console.log(Math.ceil((Math.floor(Date.now()/864e5)+1)*864e5/1000))')
eq "X-RateLimit-Reset is next UTC midnight" "$reset_next" "$(hdr X-RateLimit-Reset)"
ll '{"domain":"acme.com"}'
[ "$(hdr X-Request-ID)" != "$rid1" ] && ok "X-Request-ID unique" || bad "X-Request-ID unique" "same id twice"
eq "second acme credits_remaining" 999998 "$(j j.data.credits_remaining)"

ll '{"domain":"globex.io"}'
eq "synthetic 200" 200 "$ST"
cp "$T/b" "$T/globex1"
eq "synthetic name" "Globex Inc" "$(j j.data.company.name)"
eq "synthetic domain" "globex.io" "$(j j.data.company.domain)"
eq "synthetic linkedin_url" "https://linkedin.com/company/globex" "$(j j.data.company.linkedin_url)"
eq "synthetic id is a UUID" true "$(j '/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/.test(j.data.company.id)')"
eq "synthetic founded_year in 1950..2020" true "$(j 'j.data.company.founded_year>=1950&&j.data.company.founded_year<=2020')"
eq "synthetic keys" '["id","name","domain","industry","size","founded_year","hq_location","linkedin_url"]' "$(j 'Object.keys(j.data.company)')"
GLOBEX_ID=$(j j.data.company.id)
ll '{"domain":"globex.io"}'
eq "synthetic deterministic" "$(jf "$T/globex1" 'JSON.stringify(j.data.company)')" "$(j 'JSON.stringify(j.data.company)')"
# fixed expected value: the same across restarts and machines
eq "synthetic id is stable across runs" "9eb2cd38-21cc-5994-ba7f-f06c49065aff" "$GLOBEX_ID"

ll '{"domain":"initech.io","fields":["name","industry"],"overwrite":true}'
eq "fields whitelist 200" 200 "$ST"
eq "fields whitelist limits company keys" '["id","name","domain","industry"]' "$(j 'Object.keys(j.data.company)')"
eq "fields whitelist limits fields_updated" '["industry"]' "$(j j.data.fields_updated)"
ll '{"domain":"acme.com","fields":[]}'
eq "empty fields -> id and domain only" '["id","domain"]' "$(j 'Object.keys(j.data.company)')"

ll '{"company_id":"'"$GLOBEX_ID"'"}'
eq "known company_id 200" 200 "$ST"
eq "known company_id gives its company" "globex.io" "$(j j.data.company.domain)"
ll '{"company_id":"c0mpany-uuid-0001"}'
eq "seed company_id accepted after it was returned" 200 "$ST"
ll '{"company_id":"00000000-0000-4000-8000-000000000000"}'
eq "unknown company_id 404" 404 "$ST"
eq "unknown company_id code" not_found "$(j j.error.code)"

ll '{"domain":"nomatch-17.com"}'
eq "nomatch 409" 409 "$ST"
eq "nomatch code" no_match "$(j j.error.code)"
has "nomatch message" '"message":' "$(body)"
has "nomatch has X-Request-ID" req_ "$(hdr X-Request-ID)"
eq "ledger charged" 8 "$(led j.charged.leadlex.wbk_test_key)"
eq "ledger by_status 200" 8 "$(led 'j.by_status.leadlex["200"]')"
eq "ledger by_status 409" 1 "$(led 'j.by_status.leadlex["409"]')"
eq "ledger by_status 404" 1 "$(led 'j.by_status.leadlex["404"]')"
eq "ledger charged_inputs acme (incl. via company_id)" 4 "$(led 'j.charged_inputs.leadlex["acme.com"]')"
eq "ledger charged_inputs nomatch absent" undefined "$(led 'String(j.charged_inputs.leadlex["nomatch-17.com"])')"
eq "ledger requests_by_input nomatch" 1 "$(led 'j.requests_by_input.leadlex["nomatch-17.com"]')"
eq "ledger balance" 999992 "$(led j.balances.leadlex.wbk_test_key)"
eq "ledger requests" 10 "$(led j.requests.leadlex)"

# ---------------------------------------------------------------------------
echo "# LeadLex: auth, method, path"
reset
r -X POST -H 'Content-Type: application/json' -d '{"domain":"acme.com"}' "$LLURL"
eq "no Authorization 401" 401 "$ST"; eq "401 code" invalid_key "$(j j.error.code)"
has "401 carries X-Request-ID" req_ "$(hdr X-Request-ID)"
has "401 carries X-RateLimit-Limit" 1000000 "$(hdr X-RateLimit-Limit)"
KEY=nope ll '{"domain":"acme.com"}'; eq "unknown key 401" 401 "$ST"
r -X POST -H 'Authorization: Token wbk_test_key' -H 'Content-Type: application/json' -d '{"domain":"acme.com"}' "$LLURL"
eq "malformed Authorization 401" 401 "$ST"
r -X POST -H 'Authorization: Bearer  wbk_test_key' -H 'Content-Type: application/json' -d '{"domain":"acme.com"}' "$LLURL"
eq "Bearer with two spaces 401" 401 "$ST"
KEY=wbk_readonly_key ll '{"domain":"acme.com"}'
eq "read-only key 403" 403 "$ST"; eq "403 code" insufficient_permissions "$(j j.error.code)"
KEY=wbk_readonly_key ll 'not json'
eq "auth before validation (403 wins over 400)" 403 "$ST"
KEY=nope ll 'not json'
eq "auth before validation (401 wins over 400)" 401 "$ST"
r -H 'Authorization: Bearer wbk_test_key' "$LLURL"
eq "GET 405" 405 "$ST"; eq "405 code" method_not_allowed "$(j j.error.code)"
eq "405 Allow" POST "$(hdr Allow)"
r -X POST -H 'Authorization: Bearer wbk_test_key' -H 'Content-Type: application/json' -d '{"domain":"acme.com"}' "$H/functions/v1/api-gateway/v1/enrich/company/"
eq "unknown path 404" 404 "$ST"; eq "unknown path code" not_found_path "$(j j.error.code)"
r "$H/nothing/here"; eq "unknown path 404 (root)" 404 "$ST"; eq "unknown path code (root)" not_found_path "$(j j.error.code)"
eq "ledger counts nothing charged" 0 "$(led j.charged_total.leadlex)"
eq "ledger other_requests" 2 "$(led j.other_requests)"

# ---------------------------------------------------------------------------
echo "# LeadLex: validation"
reset
r -X POST -H 'Authorization: Bearer wbk_test_key' -H 'Content-Type: text/plain' -d '{"domain":"acme.com"}' "$LLURL"
eq "text/plain 400" 400 "$ST"; eq "400 code" validation_error "$(j j.error.code)"
r -X POST -H 'Authorization: Bearer wbk_test_key' -d '{"domain":"acme.com"}' "$LLURL"
eq "form content type 400" 400 "$ST"
r -X POST -H 'Authorization: Bearer wbk_test_key' -H 'Content-Type: application/json; charset=utf-8' -d '{"domain":"acme.com"}' "$LLURL"
eq "application/json; charset=utf-8 accepted" 200 "$ST"
r -X POST -H 'Authorization: Bearer wbk_test_key' -H 'Content-Type: application/json; charset=latin1' -d '{"domain":"acme.com"}' "$LLURL"
eq "charset latin1 400" 400 "$ST"
for b in 'not json' '[1]' 'null' '"acme.com"' '{}' '{"domain":"acme.com","extra":1}' '{"domain":1}' \
  '{"domain":""}' '{"domain":"ACME.com"}' '{"domain":"https://acme.com"}' '{"domain":"acme.com/about"}' \
  '{"domain":"acme.com."}' '{"domain":" acme.com"}' '{"domain":"acme"}' '{"domain":"localhost"}' \
  '{"domain":"127.0.0.1"}' '{"domain":"acme.com:443"}' '{"domain":"jane@acme.com"}' '{"domain":"-acme.com"}' \
  '{"domain":"acme.com","company_id":"00000000-0000-4000-8000-000000000000"}' '{"company_id":"abc"}' \
  '{"company_id":12}' '{"domain":"acme.com","fields":"name"}' '{"domain":"acme.com","fields":["name","revenue"]}' \
  '{"domain":"acme.com","fields":[1]}' '{"domain":"acme.com","overwrite":"true"}' '{"domain":null}' \
  '{"__proto__":{"x":1},"domain":"acme.com"}'; do
  ll "$b"
  eq "invalid body $b -> 400 validation_error" "400 validation_error" "$ST $(j j.error.code)"
done
printf '{"domain":"acme\xff.com"}' >"$T/badutf8"
r -X POST -H 'Authorization: Bearer wbk_test_key' -H 'Content-Type: application/json' --data-binary @"$T/badutf8" "$LLURL"
eq "invalid UTF-8 body 400" 400 "$ST"
ll '{"domain":"acme.com"}' -H 'Idempotency-Key: not-a-uuid'
eq "bad Idempotency-Key 400" 400 "$ST"
ll '{"domain":"xn--mnchen-3ya.de"}'
eq "punycode domain accepted" 200 "$ST"
ll '{"domain":"blog.acme.co.uk"}'
eq "multi-label domain accepted" 200 "$ST"
URL="$LLURL?x=1" ll '{"domain":"acme.com"}'
eq "query string 400" 400 "$ST"
URL="$LLURL?api_key=wbk_test_key" ll '{"domain":"acme.com"}'
eq "key in URL 400" 400 "$ST"
r -X POST -H 'Content-Type: application/json' -d '{"domain":"acme.com"}' "$LLURL?token=wbk_test_key"
eq "key in URL without header still 400" 400 "$ST"
eq "ledger keys_in_url" 2 "$(led j.keys_in_url)"
eq "validation failures never charged" 3 "$(led j.charged_total.leadlex)"
eq "ledger records un-normalised input" 1 "$(led 'j.requests_by_input.leadlex["ACME.com"]')"
eq "ledger records input of a rejected body" 1 "$(led 'j.requests_by_input.leadlex["acme.com:443"]')"

# ---------------------------------------------------------------------------
echo "# LeadLex: balance, check order"
reset
ctl '{"balance":{"wbk_test_key":1}}'
ll '{"domain":"acme.com"}'
eq "last credit 200" 200 "$ST"; eq "credits_remaining 0" 0 "$(j j.data.credits_remaining)"
ll '{"domain":"acme.com"}'
eq "balance 0 -> 402" 402 "$ST"; eq "402 code" insufficient_credits "$(j j.error.code)"
ll '{"domain":"nomatch-1.com"}'
eq "balance checked before match (402 over 409)" 402 "$ST"
ll '{"domain":"ACME.com"}'
eq "validation before balance (400 over 402)" 400 "$ST"
ctl '{"rate_limit":{"leadlex":{"per_second":0}}}'
ll '{"domain":"acme.com"}'
eq "rate limit before balance (429 over 402)" 429 "$ST"
ll '{"domain":"ACME.com"}'
eq "validation before rate limit (400 over 429)" 400 "$ST"
eq "only one charge" 1 "$(led j.charged.leadlex.wbk_test_key)"
eq "balance 0 in ledger" 0 "$(led j.balances.leadlex.wbk_test_key)"

# ---------------------------------------------------------------------------
echo "# LeadLex: idempotency"
reset
IK=6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b
ll '{"domain":"acme.com"}' -H "Idempotency-Key: $IK"
eq "idem first 200" 200 "$ST"; cp "$T/b" "$T/idem1"
eq "idem first not replayed" "" "$(hdr Idempotent-Replayed)"
ll '{"domain":"acme.com"}' -H "Idempotency-Key: $IK"
eq "idem replay 200" 200 "$ST"
eq "idem replay header" true "$(hdr Idempotent-Replayed)"
eq "idem replay same body" "$(cat "$T/idem1")" "$(body)"
ll '{"domain":"acme.com","fields":["name"]}' -H "Idempotency-Key: $IK"
eq "idem key with different body 400" "400 validation_error" "$ST $(j j.error.code)"
ll '{"domain":"acme.com"}' -H "Idempotency-Key: ${IK^^}"
eq "idem key case-insensitive replay" true "$(hdr Idempotent-Replayed)"
ctl '{"keys":{"leadlex":{"wbk_other":{"permissions":["write:enrich"],"balance":10}}}}'
KEY=wbk_other ll '{"domain":"acme.com"}' -H "Idempotency-Key: $IK"
eq "idem key scoped per API key (new charge)" "200 9" "$ST $(j j.data.credits_remaining)"
eq "idem: one charge for the test key" 1 "$(led j.charged.leadlex.wbk_test_key)"
eq "idem: replays counted" 2 "$(led j.idempotent_replays)"
ll '{"domain":"nomatch-9.com"}' -H "Idempotency-Key: 11111111-2222-4333-8444-555555555555"
ll '{"domain":"nomatch-9.com"}' -H "Idempotency-Key: 11111111-2222-4333-8444-555555555555"
eq "idem replays a 409" "409 true" "$ST $(hdr Idempotent-Replayed)"
# in progress: the second waits for the first and replays it
ctl '{"latency_ms":{"leadlex":600}}'
IK2=22222222-3333-4444-8555-666666666666
t0=$(date +%s%N)
curl -s -o "$T/p1" -D "$T/p1h" -X POST -H 'Authorization: Bearer wbk_test_key' -H 'Content-Type: application/json' -H "Idempotency-Key: $IK2" -d '{"domain":"initech.com"}' "$LLURL" &
sleep 0.2
curl -s -o "$T/p2" -D "$T/p2h" -X POST -H 'Authorization: Bearer wbk_test_key' -H 'Content-Type: application/json' -H "Idempotency-Key: $IK2" -d '{"domain":"initech.com"}' "$LLURL" &
wait
eq "concurrent idem: same body" "$(cat "$T/p1")" "$(cat "$T/p2")"
has "concurrent idem: second replayed" "Idempotent-Replayed: true" "$(cat "$T/p2h")"
eq "concurrent idem: one charge" 1 "$(led 'j.charged_inputs.leadlex["initech.com"]')"
ctl '{"faults":[{"kind":"reset","count":1,"after_charge":true}],"latency_ms":0}'
IK3=33333333-4444-4555-8666-777777777777
ll '{"domain":"umbrella.com"}' -H "Idempotency-Key: $IK3"
eq "after_charge reset: no response" 56 "$RC"
eq "after_charge reset: charged" 1 "$(led 'j.charged_inputs.leadlex["umbrella.com"]')"
ll '{"domain":"umbrella.com"}' -H "Idempotency-Key: $IK3"
eq "retry with same key replays" "200 true" "$ST $(hdr Idempotent-Replayed)"
eq "retry not charged again" 1 "$(led 'j.charged_inputs.leadlex["umbrella.com"]')"

# ---------------------------------------------------------------------------
echo "# LeadLex: rate limits and daily quota"
reset
ctl '{"rate_limit":{"leadlex":{"per_second":3}}}'
codes=""
for i in 1 2 3 4 5; do ll '{"domain":"acme.com"}'; codes="$codes$ST "; done
eq "per_second 3: 3 pass, 2 rejected" "200 200 200 429 429 " "$codes"
eq "429 code" rate_limited "$(j j.error.code)"
ra=$(hdr Retry-After)
eq "Retry-After 1" 1 "$ra"
eq "429 carries X-RateLimit headers" 1000000 "$(hdr X-RateLimit-Limit)"
sleep 1.05
ll '{"domain":"acme.com"}'
eq "window frees after a second" 200 "$ST"
eq "429s counted in by_status" 2 "$(led 'j.by_status.leadlex["429"]')"
eq "429s not charged" 4 "$(led j.charged.leadlex.wbk_test_key)"
ctl '{"rate_limit":{"leadlex":{"per_second":1,"retry_after":false}}}'
ll '{"domain":"acme.com"}'; ll '{"domain":"acme.com"}'
eq "retry_after false: 429 without Retry-After" "429 " "$ST $(hdr Retry-After)"
# a fixed window per second, announced in the headers (start early in a second)
ctl '{"rate_limit":{"leadlex":{"per_second":3,"window":"fixed"}}}'
while [ $(( $(date +%s%N) / 1000000 % 1000 )) -gt 300 ]; do sleep 0.01; done
win=$(( $(date +%s) + 1 ))
hdrs=""
for i in 1 2 3 4; do ll '{"domain":"acme.com"}'; hdrs="$hdrs$ST/$(hdr X-RateLimit-Limit)/$(hdr X-RateLimit-Remaining)/$(hdr X-RateLimit-Reset) "; done
eq "fixed window: 3 pass with the window in the headers, then 429" \
  "200/3/2/$win 200/3/1/$win 200/3/0/$win 429/3/0/$win " "$hdrs"
eq "fixed window: Retry-After 1" 1 "$(hdr Retry-After)"
ctl '{"rate_limit":{"leadlex":{"max_concurrent":2}},"latency_ms":{"leadlex":800}}'
for i in 1 2 3 4; do
  curl -s -o /dev/null -w '%{http_code}\n' -X POST -H 'Authorization: Bearer wbk_test_key' -H 'Content-Type: application/json' -d '{"domain":"acme.com"}' "$LLURL" >"$T/mc$i" &
  sleep 0.05
done
wait
eq "max_concurrent 2: two 200, two 429" "200 200 429 429" "$(cat "$T"/mc? | sort | tr '\n' ' ' | sed 's/ $//')"
ctl '{"rate_limit":null,"latency_ms":0}'
ctl '{"daily_quota":{"leadlex":2}}'
ll '{"domain":"acme.com"}'; eq "quota: remaining 1" "200 1 2" "$ST $(hdr X-RateLimit-Remaining) $(hdr X-RateLimit-Limit)"
ll '{"domain":"acme.com"}'; eq "quota: remaining 0" "200 0" "$ST $(hdr X-RateLimit-Remaining)"
ll '{"domain":"acme.com"}'
eq "quota exhausted 429" "429 rate_limited 0" "$ST $(j j.error.code) $(hdr X-RateLimit-Remaining)"
now=$(date +%s)
ra=$(hdr Retry-After); rs=$(hdr X-RateLimit-Reset)
eq "quota Retry-After = time until reset" true "$(node -e "console.log(Math.abs($rs-$now-$ra)<=2)")"
KEY=wbk_readonly_key ll '{"domain":"acme.com"}'
eq "quota does not hide 403" 403 "$ST"
ctl '{"daily_quota":{"leadlex":{"limit":1,"period_s":1}}}'
ll '{"domain":"acme.com"}'; s1=$ST
ll '{"domain":"acme.com"}'; s2=$ST
sleep 1.1
ll '{"domain":"acme.com"}'; s3=$ST
eq "quota with period_s resets" "200 429 200" "$s1 $s2 $s3"

# ---------------------------------------------------------------------------
echo "# latency and concurrency"
reset
ctl '{"latency_ms":{"leadlex":400,"slintel":0}}'
t=$(curl -s -o /dev/null -w '%{time_total}' -X POST -H 'Authorization: Bearer wbk_test_key' -H 'Content-Type: application/json' -d '{"domain":"acme.com"}' "$LLURL")
eq "latency applied" true "$(node -e "console.log($t>=0.39)")"
t=$(curl -s -o /dev/null -w '%{time_total}' -H 'x-api-key: sl_test_key' "$SLURL?linkedin_url=https%3A%2F%2Fwww.linkedin.com%2Fin%2Fjane-doe")
eq "latency per provider (slintel 0)" true "$(node -e "console.log($t<0.3)")"
ctl '{"latency_ms":500}'
cat >"$T/many.js" <<'EOF'
// 1000 concurrent Slintel requests over one HTTP/2 session
const http2 = require('http2'); const fs = require('fs');
const [, , url, ca] = process.argv;
const s = http2.connect(url, { ca: fs.readFileSync(ca) });
const N = 1000; let done = 0, ok = 0; const t0 = Date.now();
for (let i = 0; i < N; i++) {
  const q = s.request({ ':path': '/v2.0/lead/enrich?linkedin_url=' + encodeURIComponent('https://www.linkedin.com/in/many-' + i), 'x-api-key': 'sl_test_key' });
  let st = 0; q.on('response', (h) => { st = h[':status']; }); q.resume();
  q.on('close', () => { if (st === 200) ok++; if (++done === N) { console.log(ok + ' ' + (Date.now() - t0)); s.close(); } });
}
EOF
out=$(node "$T/many.js" "$S" "$CA")
eq "1000 delayed h2 requests all 200" 1000 "${out% *}"
le "1000 delayed requests finish together (ms)" 4000 "${out#* }"
eq "peak_concurrency slintel" 1000 "$(led j.peak_concurrency.slintel)"
eq "in_flight back to 0" 0 "$(led j.in_flight.slintel)"
eq "h2: one session" 1 "$(led j.connections.h2_sessions)"
ctl '{"latency_ms":0,"latency_jitter_ms":{"slintel":300}}'
t=$(curl -s -o /dev/null -w '%{time_total}' -H 'x-api-key: sl_test_key' "$SLURL?linkedin_url=https%3A%2F%2Fwww.linkedin.com%2Fin%2Fjane-doe")
eq "jitter bounded" true "$(node -e "console.log($t<0.6)")"

# ---------------------------------------------------------------------------
echo "# keep-alive and protocols"
reset
curl -s -o /dev/null -o /dev/null -o /dev/null -X POST -H 'Authorization: Bearer wbk_test_key' -H 'Content-Type: application/json' \
  -d '{"domain":"acme.com"}' "$LLURL" "$LLURL" "$LLURL"
curl -s --cacert "$CA" -o "$T/l" "$S/_ledger"
eq "HTTP/1.1 keep-alive: 3 requests, 1 connection" "3 1" "$(jf "$T/l" j.requests.leadlex) $(jf "$T/l" j.connections.http)"
ctl '{"reset":true}'
v=$(curl -s --cacert "$CA" -o /dev/null -o /dev/null -w '%{http_version} ' -H 'x-api-key: sl_test_key' \
  "$S$SLP?linkedin_url=https%3A%2F%2Fwww.linkedin.com%2Fin%2Fa" "$S$SLP?linkedin_url=https%3A%2F%2Fwww.linkedin.com%2Fin%2Fb")
eq "HTTPS negotiates HTTP/2" "2 2 " "$v"
eq "HTTP/2: 2 requests, 1 session, 1 TCP connection" "2 1 1" "$(led j.requests.slintel) $(led j.connections.h2_sessions) $(led j.connections.https)"
v=$(curl -s --http1.1 --cacert "$CA" -o /dev/null -o /dev/null -w '%{http_version} ' -H 'x-api-key: sl_test_key' \
  "$S$SLP?linkedin_url=https%3A%2F%2Fwww.linkedin.com%2Fin%2Fa" "$S$SLP?linkedin_url=https%3A%2F%2Fwww.linkedin.com%2Fin%2Fb")
eq "HTTPS HTTP/1.1 also served" "1.1 1.1 " "$v"
eq "HTTPS HTTP/1.1 keep-alive" 2 "$(led j.connections.https)"
r --cacert "$CA" "https://localhost:$WP/_health"
eq "wrong-host certificate rejected (curl 60)" 60 "$RC"
r --cacert "$CA" --resolve "wrong.example:$WP:127.0.0.1" "https://wrong.example:$WP/_health"
eq "wrong-host certificate valid for wrong.example" 200 "$ST"
r --cacert "$T/other-ca.pem" "$S/_health"
eq "unrelated CA rejected (curl 60)" 60 "$RC"
r --cacert "$CA" "https://127.0.0.1:$SP/_health"
eq "IP SAN 127.0.0.1 valid" 200 "$ST"
eq "wrong_host connections counted" 2 "$(led j.connections.wrong_host)"

# ---------------------------------------------------------------------------
echo "# Slintel"
reset
sl "http://www.linkedin.com/in/deepak-anchala-0043707"
eq "seed 200" 200 "$ST"
eq "seed body is the document's example" 1f7a6e612b5aa444249ea969755504a6e4497bc5755bc669b81cf1854ee05699 "$(sha)"
eq "no X-Request-ID" "" "$(hdr X-Request-ID)"
eq "no X-RateLimit-Limit" "" "$(hdr X-RateLimit-Limit)"
eq "content-type" "application/json" "$(hdr Content-Type)"
for v in "https://linkedin.com/in/Deepak-Anchala-0043707" "https://uk.linkedin.com/in/deepak-anchala-0043707" "HTTPS://WWW.LINKEDIN.COM/in/deepak-anchala-0043707"; do
  sl "$v"; eq "seed variant $v" "200 1f7a6e612b5aa444249ea969755504a6e4497bc5755bc669b81cf1854ee05699" "$ST $(sha)"
done
r -H 'x-api-key: sl_test_key' "$SLURL?linkedin_url=http://www.linkedin.com/in/deepak-anchala-0043707"
eq "unencoded URL in the query (as in the document)" 200 "$ST"
sl "https://www.linkedin.com/in/jane-doe-8a7b6c"
eq "synthetic 200" 200 "$ST"; cp "$T/b" "$T/jane1"
eq "synthetic name from slug" "Jane Doe" "$(j j.data.name)"
eq "synthetic linkedin_url" "http://www.linkedin.com/in/jane-doe-8a7b6c" "$(j j.data.linkedin_url)"
eq "synthetic has company_name, lead_title, email, country" true "$(j '!!(j.data.company_name&&j.data.lead_title&&j.data.email&&j.data.country)')"
sl "https://www.linkedin.com/in/Jane-Doe-8A7B6C"
eq "synthetic deterministic (slug case-insensitive)" "$(cat "$T/jane1")" "$(body)"
eq "synthetic id stable across runs" "$(printf 'slintel:jane-doe-8a7b6c' | sha256sum | cut -c1-24)" "$(j j.data.id)"
sl "https://www.linkedin.com/in/m%C3%BCller-x"
eq "percent-encoded slug" "200 http://www.linkedin.com/in/m%C3%BCller-x" "$ST $(j j.data.linkedin_url)"
sl "https://www.linkedin.com/in/nomatch-42"
eq "nomatch 404 not_found" "404 not_found" "$ST $(j j.error.code)"
sl "https://www.linkedin.com/in/empty-1"
eq "empty -> 200 {\"data\":{}}" '200 {"data":{}}' "$ST $(body)"
eq "charged on every success incl. repeats and empty" 9 "$(led j.charged.slintel.sl_test_key)"
eq "charged_inputs by slug" 5 "$(led 'j.charged_inputs.slintel["deepak-anchala-0043707"]')"
eq "empty charged" 1 "$(led 'j.charged_inputs.slintel["empty-1"]')"
eq "nomatch not charged" undefined "$(led 'String(j.charged_inputs.slintel["nomatch-42"])')"
eq "slintel balance" 999991 "$(led j.balances.slintel.sl_test_key)"

echo "# Slintel: auth, validation"
reset
r "$SLURL?linkedin_url=https%3A%2F%2Fwww.linkedin.com%2Fin%2Fjane"
eq "no x-api-key 401 unauthorized" "401 unauthorized" "$ST $(j j.error.code)"
SKEY=wrong sl "https://www.linkedin.com/in/jane"; eq "unknown key 401" 401 "$ST"
r "$SLURL?linkedin_url=https%3A%2F%2Fwww.linkedin.com%2Fin%2Fjane&x-api-key=sl_test_key"
eq "key in query 400" "400 validation_error" "$ST $(j j.error.code)"
r -H 'x-api-key: sl_test_key' "$SLURL?linkedin_url=https%3A%2F%2Fwww.linkedin.com%2Fin%2Fjane&api_key=sl_test_key"
eq "key in query with header 400" 400 "$ST"
eq "keys_in_url counted" 2 "$(led j.keys_in_url)"
r -X POST -H 'x-api-key: sl_test_key' "$SLURL?linkedin_url=https%3A%2F%2Fwww.linkedin.com%2Fin%2Fjane"
eq "POST 405" "405 method_not_allowed" "$ST $(j j.error.code)"
r -H 'x-api-key: sl_test_key' "$SLURL"; eq "missing linkedin_url 400" 400 "$ST"
r -H 'x-api-key: sl_test_key' "$SLURL?linkedin_url=https%3A%2F%2Fwww.linkedin.com%2Fin%2Fa&linkedin_url=https%3A%2F%2Fwww.linkedin.com%2Fin%2Fa"
eq "linkedin_url twice 400" 400 "$ST"
r -H 'x-api-key: sl_test_key' "$SLURL?linkedin_url=https%3A%2F%2Fwww.linkedin.com%2Fin%2Fa&trk=x"
eq "extra parameter 400" 400 "$ST"
for u in "" "jane-doe" "linkedin.com/in/jane-doe" "ftp://www.linkedin.com/in/jane" "https://evil-linkedin.com/in/jane" \
  "https://linkedin.com.evil.com/in/jane" "https://www.linkedin.com/company/acme" "https://www.linkedin.com/in/" \
  "https://www.linkedin.com/in/jane/details" "https://www.linkedin.com/in/jane/" "https://www.linkedin.com/in/jane?trk=x" \
  "https://www.linkedin.com/in/jane#top" "https://www.linkedin.com:8443/in/jane" "https://user@www.linkedin.com/in/jane" \
  " https://www.linkedin.com/in/jane" "https://www.linkedin.com/sales/people/jane" "https://www.linkedin.com/in/%ZZ" \
  "https://www.linkedin.com./in/jane"; do
  sl "$u"
  eq "invalid linkedin_url [$u] -> 400" "400 validation_error" "$ST $(j j.error.code)"
done
ctl '{"balance":{"sl_test_key":0}}'
sl "https://www.linkedin.com/in/nomatch-1"
eq "402 before match" "402 insufficient_credits" "$ST $(j j.error.code)"
SKEY=nope sl "bad"; eq "401 before 400" 401 "$ST"
ctl '{"rate_limit":{"slintel":{"per_second":0}}}'
sl "https://www.linkedin.com/in/jane"; eq "429 before 402" "429 rate_limited" "$ST $(j j.error.code)"
sl "bad"; eq "400 before 429" 400 "$ST"
eq "slintel nothing charged" 0 "$(led j.charged_total.slintel)"

# ---------------------------------------------------------------------------
echo "# faults"
reset
ctl '{"faults":[{"kind":"status","status":503,"count":2}]}'
ll '{"domain":"acme.com"}'; eq "status 503" "503 service_unavailable" "$ST $(j j.error.code)"
has "fault response carries X-Request-ID" req_ "$(hdr X-Request-ID)"
sl "https://www.linkedin.com/in/jane"; eq "provider any applies to slintel" 503 "$ST"
ll '{"domain":"acme.com"}'; eq "count expires" 200 "$ST"
ctl '{"faults":[{"kind":"status","status":500}]}'
KEY=nope ll '{"domain":"acme.com"}'; eq "fault never hides 401" 401 "$ST"
ll '{"domain":"ACME.com"}'; eq "fault after validation (400)" 400 "$ST"
ll '{"domain":"acme.com"}'; eq "count omitted = forever (1)" 500 "$ST"
ll '{"domain":"acme.com"}'; eq "count omitted = forever (2)" 500 "$ST"
ctl '{"faults":[{"kind":"status","status":502,"provider":"slintel","match":"bob"}]}'
ll '{"domain":"bob.com"}'; eq "provider filter" 200 "$ST"
sl "https://www.linkedin.com/in/alice"; eq "match filter (no match)" 200 "$ST"
sl "https://www.linkedin.com/in/bob-smith"; eq "match filter (match)" "502 bad_gateway" "$ST $(j j.error.code)"
ctl '{"faults":[{"kind":"status","status":429,"retry_after":7,"rate_reset_in":30,"count":1},{"kind":"status","status":401,"code":"invalid_key","count":1},{"kind":"status","status":402,"count":1}]}'
ll '{"domain":"acme.com"}'
now=$(date +%s)
eq "429 fault" "429 rate_limited 7 0" "$ST $(j j.error.code) $(hdr Retry-After) $(hdr X-RateLimit-Remaining)"
eq "rate_reset_in sets Reset" true "$(node -e "const r=$(hdr X-RateLimit-Reset);console.log(r>=$now+29&&r<=$now+31)")"
ll '{"domain":"acme.com"}'; eq "401 fault" "401 invalid_key" "$ST $(j j.error.code)"
ll '{"domain":"acme.com"}'; eq "402 fault" "402 insufficient_credits" "$ST $(j j.error.code)"
ctl '{"faults":[{"kind":"status","status":429,"count":1}]}'
ll '{"domain":"acme.com"}'; eq "429 fault without retry_after has no Retry-After" "429 " "$ST $(hdr Retry-After)"

curl -s -o /dev/null -X POST "$H/_ledger/reset"
ctl '{"faults":[{"kind":"reset","count":3}]}'
ll '{"domain":"acme.com"}'; eq "reset (HTTP/1.1): connection reset" "000 56" "$ST $RC"
URL="$S$LLP" ll '{"domain":"acme.com"}' --cacert "$CA" --http1.1; eq "reset (TLS HTTP/1.1)" "000 56" "$ST $RC"
URL="$S$LLP" ll '{"domain":"acme.com"}' --cacert "$CA"; eq "reset (HTTP/2): stream reset" "000 92" "$ST $RC"
ctl '{"faults":[{"kind":"reset","count":1,"scope":"connection"}]}'
# the session is cut under curl: whether it notices while reading (56) or
# while still writing a frame of its own (55, a SETTINGS ack or a window
# update) is a race on the client's side; either is a connection error,
# never the stream reset (92) of the stream-scoped fault above
URL="$S$LLP" ll '{"domain":"acme.com"}' --cacert "$CA"
case "$ST $RC" in "000 55") RC=56 ;; esac
eq "reset (HTTP/2, scope connection): connection error" "000 56" "$ST $RC"
ctl '{"faults":[{"kind":"reset_mid_body","count":2}]}'
ll '{"domain":"acme.com"}'; eq "reset_mid_body (HTTP/1.1): partial body" "200 18" "$ST $RC"
has "reset_mid_body sent half a body" '{"data":{"company"' "$(body)"
URL="$S$LLP" ll '{"domain":"acme.com"}' --cacert "$CA"; eq "reset_mid_body (HTTP/2)" "200 92" "$ST $RC"
ctl '{"faults":[{"kind":"hang","count":2}]}'
ll '{"domain":"acme.com"}' --max-time 1; eq "hang (HTTP/1.1): timeout" "000 28" "$ST $RC"
URL="$S$LLP" ll '{"domain":"acme.com"}' --cacert "$CA" --max-time 1; eq "hang (HTTP/2): timeout" "000 28" "$ST $RC"
sleep 0.2
eq "hung requests cleaned up when the client leaves" 0 "$(led j.in_flight.leadlex)"
ctl '{"faults":[{"kind":"slow_drip","count":1,"bytes":40,"interval_ms":20}]}'
t=$(curl -s -o "$T/b" -w '%{time_total}' -X POST -H 'Authorization: Bearer wbk_test_key' -H 'Content-Type: application/json' -d '{"domain":"acme.com"}' "$LLURL")
eq "slow_drip body valid" "Acme Corp" "$(j j.data.company.name)"
eq "slow_drip is slow" true "$(node -e "console.log($t>=0.15)")"
ctl '{"faults":[{"kind":"malformed_json","count":1},{"kind":"truncated_json","count":1},{"kind":"invalid_utf8","count":1},{"kind":"nul_escape","count":1}]}'
ll '{"domain":"acme.com"}'; eq "malformed_json: 200, not JSON" "200 <invalid json>" "$ST $(j j)"
has "malformed_json starts like the real thing" '{"data": {"company": {"name": "Acme"' "$(body)"
ll '{"domain":"acme.com"}'; eq "truncated_json: 200, cut, complete transfer" "200 0 <invalid json>" "$ST $RC $(j j)"
eq "truncated_json Content-Length matches" "$(hdr Content-Length)" "$(wc -c <"$T/b" | tr -d ' ')"
ll '{"domain":"acme.com"}'; eq "invalid_utf8: 200" 200 "$ST"
eq "invalid_utf8: has invalid bytes" true "$(node -e "const b=require('fs').readFileSync('$T/b');try{new TextDecoder('utf-8',{fatal:true}).decode(b);console.log(false)}catch(e){console.log(b.includes(Buffer.from([0xff])))}")"
ll '{"domain":"acme.com"}'; eq "nul_escape: valid JSON with \\u0000" "200 true" "$ST $(j 'j.data.company.name.includes("\u0000")')"
has "nul_escape: escape in the text" '\u0000' "$(body)"
ctl '{"faults":[{"kind":"deep_nesting","count":1},{"kind":"deep_nesting","count":1,"depth":3,"provider":"slintel"}]}'
ll '{"domain":"acme.com"}'
eq "deep_nesting 10000 (leadlex, in company)" "200 10000" "$ST $(node -e "const t=require('fs').readFileSync('$T/b','utf8');let d=0,m=0;for(const c of t){if(c==='[')m=Math.max(m,++d);else if(c===']')d--;}console.log(m)")"
sl "https://www.linkedin.com/in/jane"
eq "deep_nesting depth 3 (slintel, in data)" '200 [[[]]]' "$ST $(j 'JSON.stringify(j.data.deep)')"
ctl '{"faults":[{"kind":"wrong_shape","count":1},{"kind":"wrong_shape","shape":"company_not_object","count":1},{"kind":"wrong_shape","shape":"data_not_object","count":1}]}'
ll '{"domain":"acme.com"}'; eq "wrong_shape no_data" '200 {"result":{}}' "$ST $(body)"
ll '{"domain":"acme.com"}'; eq "wrong_shape company_not_object" '200 {"data":{"company":"Acme"}}' "$ST $(body)"
ll '{"domain":"acme.com"}'; eq "wrong_shape data_not_object" '200 {"data":[1,2]}' "$ST $(body)"
ctl '{"faults":[{"kind":"html","count":1},{"kind":"html","status":502,"count":1}]}'
ll '{"domain":"acme.com"}'; eq "html 200" "200 text/html" "$ST $(hdr Content-Type)"
has "html body" "<html>" "$(body)"
ll '{"domain":"acme.com"}'; eq "html 502" "502 text/html" "$ST $(hdr Content-Type)"
ctl '{"faults":[{"kind":"redirect","count":1,"location":"http://elsewhere.example/x"},{"kind":"redirect","status":307,"count":1,"location":"/y"}]}'
ll '{"domain":"acme.com"}'; eq "redirect 302 with Location" "302 http://elsewhere.example/x" "$ST $(hdr Location)"
has "redirect has an X-Request-ID" "req_" "$(hdr X-Request-ID)"
sl "https://www.linkedin.com/in/jane"; eq "redirect 307 (slintel)" "307 /y" "$ST $(hdr Location)"
eq "redirect needs a location" 400 "$(ctl_st '{"add_fault":{"kind":"redirect"}}')"
eq "redirect status must be 3xx" 400 "$(ctl_st '{"add_fault":{"kind":"redirect","status":200,"location":"/z"}}')"
eq "location only for redirects" 400 "$(ctl_st '{"add_fault":{"kind":"reset","location":"/z"}}')"
ctl '{"faults":[{"kind":"huge_body","count":1},{"kind":"huge_body","count":1,"bytes":100000,"content_length":true},{"kind":"huge_body","count":1,"bytes":3000000}]}'
ll '{"domain":"acme.com"}'
eq "huge_body 20 MB chunked, valid JSON" "200 20971520 chunked true" "$ST $(wc -c <"$T/b" | tr -d ' ') $(hdr Transfer-Encoding) $(j valid)"
ll '{"domain":"acme.com"}'
eq "huge_body with Content-Length" "200 100000 100000" "$ST $(hdr Content-Length) $(wc -c <"$T/b" | tr -d ' ')"
URL="$S$LLP" ll '{"domain":"acme.com"}' --cacert "$CA"
eq "huge_body over HTTP/2" "200 3000000 true" "$ST $(wc -c <"$T/b" | tr -d ' ') $(j valid)"
sleep 0.2
eq "nothing left in flight after faults" "0 0" "$(led j.in_flight.leadlex j.in_flight.slintel | tr '\n' ' ' | sed 's/ $//')"
eq "faulted requests never charged" 0 "$(led j.charged_total.leadlex+j.charged_total.slintel)"
eq "faults_applied ledger" 3 "$(led j.faults_applied.leadlex.huge_body)"
eq "redirects counted by status" "1 1" "$(led j.by_status.leadlex[302] j.by_status.slintel[307] | tr '\n' ' ' | sed 's/ $//')"
eq "by_status records resets" 4 "$(led j.by_status.leadlex.reset)"

# ---------------------------------------------------------------------------
echo "# control and ledger"
reset
eq "unknown control member 400" 400 "$(ctl_st '{"bogus":1}')"
eq "bad control JSON 400" 400 "$(ctl_st 'nope')"
eq "bad fault kind 400" 400 "$(ctl_st '{"add_fault":{"kind":"explode"}}')"
eq "bad fault status 400" 400 "$(ctl_st '{"add_fault":{"kind":"status","status":200}}')"
eq "unknown key in balance 400" 400 "$(ctl_st '{"balance":{"nobody":5}}')"
eq "invalid control applies nothing" 400 "$(ctl_st '{"latency_ms":300,"balance":{"nobody":5}}')"
eq "...latency unchanged" 0 "$(curl -s "$H/_control" | node "$T/j.js" /dev/stdin j.latency_ms.leadlex)"
ctl '{"balance":{"leadlex":{"wbk_test_key":5}, "sl_test_key":6}}'
eq "balance set (per provider form)" "5 6" "$(led j.balances.leadlex.wbk_test_key) $(led j.balances.slintel.sl_test_key)"
ctl '{"keys":{"slintel":{"sl_second":{"balance":3}},"leadlex":{"wbk_test_key":null}}}'
SKEY=sl_second sl "https://www.linkedin.com/in/jane"; eq "added slintel key works" "200 2" "$ST $(led j.balances.slintel.sl_second)"
ll '{"domain":"acme.com"}'; eq "removed key -> 401" 401 "$ST"
ctl '{"add_fault":{"kind":"hang","match":"zzz"}}'
ctl '{"add_fault":{"kind":"status","status":500,"count":4}}'
eq "GET /_control lists faults" '["hang","status"]' "$(curl -s "$H/_control" | node "$T/j.js" /dev/stdin 'j.faults.map(f=>f.kind)')"
eq "fault remaining count" 4 "$(curl -s "$H/_control" | node "$T/j.js" /dev/stdin 'j.faults[1].remaining')"
ctl '{"faults":[]}'
eq "faults replaced" '[]' "$(curl -s "$H/_control" | node "$T/j.js" /dev/stdin 'j.faults')"
st=$(curl -s -o /dev/null -w '%{http_code}' -X POST "$H/_ledger/reset")
eq "POST /_ledger/reset" 200 "$st"
eq "ledger reset clears counters" "0 0 {}" "$(led j.requests.slintel j.charged_total.slintel 'JSON.stringify(j.charged.slintel)' | tr '\n' ' ' | sed 's/ $//')"
eq "ledger reset keeps balances" 2 "$(led j.balances.slintel.sl_second)"
eq "control endpoints not counted" 0 "$(led j.requests.leadlex+j.requests.slintel+j.other_requests)"
reset
eq "reset restores default keys" "1000000 1000000 undefined" "$(led j.balances.leadlex.wbk_test_key j.balances.slintel.sl_test_key 'String(j.balances.slintel.sl_second)' | tr '\n' ' ' | sed 's/ $//')"
eq "no internal errors" 0 "$(led j.internal_errors)"

# ---------------------------------------------------------------------------
echo "# capture"
reset
eq "capture off by default" "0 0" "$(curl -s "$H/_captured" | node "$T/j.js" /dev/stdin j.capture j.requests.length | tr '\n' ' ' | sed 's/ $//')"
ctl '{"capture":2}'
ll '{"domain":"first.com"}'
ll '{"domain":"acme.com"}' -H 'X-Extra: yes'
sl "https://www.linkedin.com/in/jane"
curl -s "$H/_captured" >"$T/cap"
eq "capture keeps the last n" '2 ["leadlex","slintel"]' "$(jf "$T/cap" j.requests.length 'JSON.stringify(j.requests.map(r=>r.provider))' | tr '\n' ' ' | sed 's/ $//')"
eq "captured method, target, body" "POST $LLP {\"domain\":\"acme.com\"}" "$(jf "$T/cap" 'j.requests[0].method+" "+j.requests[0].url+" "+j.requests[0].body')"
eq "captured headers as sent" "yes Bearer wbk_test_key" "$(jf "$T/cap" 'j.requests[0].headers.find(h=>h[0]==="X-Extra")[1]+" "+j.requests[0].headers.find(h=>h[0]==="Authorization")[1]')"
has "captured slintel query" "linkedin_url=" "$(jf "$T/cap" 'j.requests[1].url')"
eq "capture bounds" 400 "$(ctl_st '{"capture":-1}')"
eq "GET /_control shows capture" 2 "$(curl -s "$H/_control" | node "$T/j.js" /dev/stdin j.capture)"
reset
eq "reset clears capture" "0 0" "$(curl -s "$H/_captured" | node "$T/j.js" /dev/stdin j.capture j.requests.length | tr '\n' ' ' | sed 's/ $//')"

# ---------------------------------------------------------------------------
echo "# LeadLex workspace records: fill-only, overwrite, data versions"
reset
ll '{"domain":"acme.com"}'
eq "a new record: fields_updated as in the document" '["industry","size","founded_year","hq_location"]' "$(j j.data.fields_updated)"
ll '{"domain":"acme.com"}'
eq "again, fill-only: nothing changed" '[] Legal Services' "$(j j.data.fields_updated j.data.company.industry | tr '\n' ' ' | sed 's/ $//')"
eq "a fill-only answer is charged too" 2 "$(led j.charged_inputs.leadlex[\"acme.com\"])"
ll '{"domain":"acme.com","overwrite":true}'
eq "overwrite with the same data: nothing changed" '[]' "$(j j.data.fields_updated)"
ctl '{"data_version":1}'
eq "GET /_control shows data_version and the records" "1 1" "$(curl -s "$H/_control" | node "$T/j.js" /dev/stdin j.data_version j.workspace_records | tr '\n' ' ' | sed 's/ $//')"
ll '{"domain":"acme.com"}'
eq "new data, fill-only: the record keeps its values" '[] Legal Services' "$(j j.data.fields_updated j.data.company.industry | tr '\n' ' ' | sed 's/ $//')"
ll '{"domain":"acme.com","overwrite":true}'
eq "new data, overwrite: replaced" '["industry","size","hq_location"]' "$(j j.data.fields_updated)"
v1=$(j j.data.company.industry)
[ "$v1" != "Legal Services" ] && ok "overwrite brings the new industry" || bad "overwrite brings the new industry" "$v1"
eq "the record keeps its id and name" "c0mpany-uuid-0001 Acme Corp" "$(j j.data.company.id j.data.company.name | tr '\n' ' ' | sed 's/ $//')"
ctl '{"data_version":2}'
ll '{"domain":"acme.com","fields":["industry"],"overwrite":true}'
eq "overwrite within the whitelist only" '["industry"]' "$(j j.data.fields_updated)"
[ "$(j j.data.company.industry)" != "$v1" ] && ok "each version changes the data" || bad "each version changes the data" "$v1"
KEY=wbk_other
ctl '{"keys":{"leadlex":{"wbk_other":{}}}}'
ll '{"domain":"acme.com"}'
eq "another workspace has its own record" '["industry","size","founded_year","hq_location"]' "$(j j.data.fields_updated)"
unset KEY
ll '{"domain":"acme.com","overwrite":true}' -H 'Idempotency-Key: 7d4f2c1a-3b5e-4f60-8a9b-0c1d2e3f4a5b'
ll '{"domain":"acme.com"}' -H 'Idempotency-Key: 7d4f2c1a-3b5e-4f60-8a9b-0c1d2e3f4a5b'
eq "the same Idempotency-Key without overwrite is another request: 400" "400 validation_error" "$ST $(j j.error.code)"
eq "data_version bounds" 400 "$(ctl_st '{"data_version":-1}')"
reset
eq "reset clears the records and the version" "0 0" "$(curl -s "$H/_control" | node "$T/j.js" /dev/stdin j.data_version j.workspace_records | tr '\n' ' ' | sed 's/ $//')"

# ---------------------------------------------------------------------------
echo "# stop"
bash "$here/stop.sh" "$T"
sleep 0.1
# a zombie awaiting its reaper has an empty cmdline: count only a live process
eq "stop.sh ends the process" "" "$(tr -d '\0' <"/proc/$EPID/cmdline" 2>/dev/null)"
eq "stop.sh removes ports.json" 1 "$([ -e "$T/ports.json" ]; echo $?)"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
