#!/usr/bin/env bash
# Makes the seed corpora of the fuzz targets in DIR (default build/seeds):
#
#   normalize/  every string literal of sql/normalize.sql (both normalisers)
#   response/   the bodies the provider emulator sends: LeadLex and Slintel
#               answers, no matches, error bodies, and every fault body
#               (malformed, truncated, invalid UTF-8, \u0000, deep nesting,
#               wrong shapes, HTML); plus bodies at jsonb's limits (numbers,
#               nesting, duplicate keys, surrogates)
#   headers/    the response headers the emulator sends, and Retry-After in
#               each of its forms
#
# The emulator (test/provider, needs node and curl) runs in a scratch
# directory for the time it takes; without node its part is left out.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
OUT=${1:-$HERE/build/seeds}

rm -rf "$OUT"
mkdir -p "$OUT/normalize" "$OUT/response" "$OUT/headers"

# --- normalize: the string literals of the regress file, one per file
perl -e '
  my ($sql, $out) = @ARGV;
  open my $fh, "<", $sql or die "$sql: $!";
  local $/; my $text = <$fh>;
  my $n = 0;
  while ($text =~ /(E?)\x27((?:[^\x27]|\x27\x27)*)\x27/g) {
    my ($e, $s) = ($1, $2);
    $s =~ s/\x27\x27/\x27/g;
    if ($e) { $s =~ s/\\n/\n/g; $s =~ s/\\r/\r/g; $s =~ s/\\t/\t/g; }
    open my $o, ">", sprintf("%s/sql-%04d", $out, $n++) or die; print $o $s; close $o;
  }
' "$ROOT/sql/normalize.sql" "$OUT/normalize"

# --- response: bodies at the limits of numeric, jsonb and the shape check
seed() { printf '%s' "$2" >"$OUT/response/$1"; }
seed num-weight-max    '{"data":{"company":{"n":1e131071}}}'
seed num-weight-over   '{"data":{"company":{"n":1e131072}}}'
seed num-weight-neg    '{"data":{"company":{"n":-9.99e131071}}}'
seed num-huge-exp      '{"data":{"company":{"n":1e1000000}}}'
seed num-exp-limit     '[0e1073741822, 0e1073741823]'
seed num-exp-neg-limit '[1e-16383, 1e-16384, 0e-16383, 0e-16384]'
seed num-tiny          '[1.5e-16382, 0.000001e-16378]'
seed num-frac-max      "[0.$(printf '%016383d' 0)]"
seed num-frac-over     "[0.$(printf '%016384d' 0)]"
seed num-long-int      "[1$(printf '%020000d' 0)]"
seed num-sci-mix       '[-0, -0.0, 0e0, 1E+2, 1e-0, 12.5e+000000000000000000003]'
seed nest-512          "$(printf '%0512d' 0 | tr 0 '[')$(printf '%0512d' 0 | tr 0 ']')"
seed nest-513          "$(printf '%0513d' 0 | tr 0 '[')$(printf '%0513d' 0 | tr 0 ']')"
seed nest-in-string    "[\"$(printf '%01000d' 0 | tr 0 '[')\"]"
seed dup-data          '{"data":{"company":{"name":"Acme"}},"data":5}'
seed dup-company       '{"data":{"company":{"name":"Acme"},"company":[1]}}'
seed dup-data-back     '{"data":5,"data":{"company":{"name":"Acme"}}}'
seed escaped-key       '{"d\u0061ta":{"comp\u0061ny":{"name":"Acme"}}}'
seed slintel-null      '{"data":null}'
seed slintel-empty     '{"data":{}}'
seed slintel-empty-arr '{"data":[]}'
seed slintel-string    '{"data":""}'
seed slintel-false     '{"data":false,"other":1}'
seed surrogate-pair    '{"data":{"name":"\ud83d\ude00"}}'
seed surrogate-lone    '{"data":{"name":"\ud83d"}}'
seed surrogate-low     '{"data":{"name":"\ude00x"}}'
seed nul-escape        '{"data":{"company":{"name":"a\u0000b"}}}'
seed high-escape       '{"data":{"company":{"name":"caf\u00e9 \u4e2d"}}}'
seed scalar-root       '"just a string"'
seed empty-object      '{}'
printf '{"data":{"company":{"name":"a\000b"}}}' >"$OUT/response/nul-byte"
printf '{"data":{"company":{"name":"\xc3\x28\xff\xfe"}}}' >"$OUT/response/bad-utf8"
printf '{"data":{"company":{"name":"M\xc3\xbcnchen \xe4\xb8\xad \xf0\x9f\x98\x80"}}}' >"$OUT/response/utf8"

# --- headers: Retry-After in each form, odd values
hseed() { printf '%b' "$2" >"$OUT/headers/$1"; }
hseed retry-seconds  'HTTP/1.1 429 Too Many Requests\r\nRetry-After: 120\r\n\r\n'
hseed retry-imf      'Retry-After: Sun, 06 Nov 1994 08:49:37 GMT\r\n'
hseed retry-rfc850   'Retry-After: Sunday, 06-Nov-94 08:49:37 GMT\r\n'
hseed retry-asctime  'Retry-After: Sun Nov  6 08:49:37 1994\r\n'
hseed retry-future   'retry-after:   Wed, 31 Dec 2025 23:59:60 GMT  \r\n'
hseed date-only      'Thu, 29 Feb 2024 12:00:00 GMT'
hseed rate-headers   'X-RateLimit-Limit: 1000\r\nX-RateLimit-Remaining: 0\r\nX-RateLimit-Reset: 1750000060\r\nx-ratelimit-reset: 17.5\r\n'
hseed huge-numbers   'X-RateLimit-Reset: 99999999999999999999999\r\nRetry-After: 10000000001\r\n'
hseed request-id     'X-Request-ID: req_\xc3\xa9\x01\tabc\r\nContent-Type: application/json; charset=utf-8\r\n'

# --- the emulator's own bodies and headers
if ! command -v node >/dev/null 2>&1 || ! command -v curl >/dev/null 2>&1; then
  echo "make-seeds: no node or curl, emulator seeds left out" >&2
  exit 0
fi
EMU=$(mktemp -d "${TMPDIR:-/tmp}/enrich-seeds.XXXXXX")
trap 'bash "$ROOT/test/provider/stop.sh" "$EMU" >/dev/null 2>&1 || true; rm -rf "$EMU"' EXIT
bash "$ROOT/test/provider/start.sh" "$EMU" >/dev/null
port=$(perl -MJSON::PP -e 'local $/; print decode_json(<>)->{http}' "$EMU/ports.json")
H="http://127.0.0.1:$port"
control() { curl -sf -o /dev/null -X POST -H 'Content-Type: application/json' -d "$1" "$H/_control"; }
# leadlex NAME DOMAIN [KEY]: one LeadLex request, body and headers kept
leadlex() {
  curl -s -o "$OUT/response/emu-leadlex-$1" -D "$OUT/headers/emu-leadlex-$1" -X POST \
    -H "Authorization: Bearer ${3:-wbk_test_key}" -H 'Content-Type: application/json' \
    -d "{\"domain\":\"$2\"}" "$H/functions/v1/api-gateway/v1/enrich/company" || true
}
# slintel NAME SLUG [KEY]: one Slintel request, body and headers kept
slintel() {
  curl -s -o "$OUT/response/emu-slintel-$1" -D "$OUT/headers/emu-slintel-$1" -G \
    --data-urlencode "linkedin_url=https://www.linkedin.com/in/$2" \
    -H "x-api-key: ${3:-sl_test_key}" "$H/v2.0/lead/enrich" || true
}
control '{"reset":true}'
leadlex ok acme.com
leadlex synthetic initech.com
leadlex nomatch nomatch-1.com
leadlex badkey acme.com wbk_wrong
slintel ok deepak-anchala-0043707
slintel synthetic jane-doe-8a7b6c
slintel nomatch nomatch-jane
slintel badkey jane-doe sl_wrong
for fault in '{"kind":"malformed_json"}' '{"kind":"truncated_json"}' \
             '{"kind":"invalid_utf8"}' '{"kind":"nul_escape"}' \
             '{"kind":"deep_nesting","depth":600}' '{"kind":"deep_nesting","depth":10000}' \
             '{"kind":"wrong_shape","shape":"no_data"}' \
             '{"kind":"wrong_shape","shape":"company_not_object"}' \
             '{"kind":"wrong_shape","shape":"data_not_object"}' \
             '{"kind":"html","status":502}' \
             '{"kind":"status","status":429,"retry_after":30,"rate_reset_in":60}' \
             '{"kind":"status","status":402}' '{"kind":"status","status":503}'; do
  name=$(printf '%s' "$fault" | tr -c 'a-z0-9' '-' | tr -s '-')
  control "{\"reset\":true,\"faults\":[$fault]}"
  leadlex "fault$name" acme.com
  slintel "fault$name" jane-doe
done
echo "make-seeds: $(ls "$OUT/normalize" | wc -l) normalize, $(ls "$OUT/response" | wc -l) response, $(ls "$OUT/headers" | wc -l) headers seeds in $OUT"
