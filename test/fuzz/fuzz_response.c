/*-------------------------------------------------------------------------
 *
 * fuzz_response.c
 *	  libFuzzer target for the response body check of src/response.c.
 *
 * Each input is a response body, checked as any JSON for a UTF-8 and for a
 * LATIN1 database, and as a LeadLex and a Slintel 200 answer.  The body is
 * the fuzzer's own buffer, not NUL-terminated, so AddressSanitizer sees any
 * read past its end.  Beyond not crashing, the verdicts must agree: what
 * passes for a LATIN1 database passes for UTF-8, a body of the right shape
 * is valid JSON, a body that is not gets the same reason whatever the
 * shape, and only a Slintel answer can be "no match".
 *
 * Whether a body that passes is one jsonb_in takes needs a server; run.sh
 * --jsonb checks that on the corpus this target leaves behind.
 *
 * IDENTIFICATION
 *	  test/fuzz/fuzz_response.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres_fe.h"

#include "mb/pg_wchar.h"

#include "response.h"

#include "fuzz.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *body = (const char *) data;
	bool		nm_any,
				nm_latin1,
				nm_leadlex,
				nm_slintel;
	const char *any = enrich_response_check(body, size, PG_UTF8,
											RESPONSE_ANY_JSON, &nm_any);
	const char *latin1 = enrich_response_check(body, size, PG_LATIN1,
											   RESPONSE_ANY_JSON, &nm_latin1);
	const char *leadlex = enrich_response_check(body, size, PG_UTF8,
												RESPONSE_LEADLEX, &nm_leadlex);
	const char *slintel = enrich_response_check(body, size, PG_UTF8,
												RESPONSE_SLINTEL, &nm_slintel);

	FUZZ_ASSERT(!nm_any && !nm_latin1 && !nm_leadlex,
				"only a Slintel answer is no match", data, size);
	FUZZ_ASSERT(!nm_slintel || slintel == NULL,
				"no match comes without a reason", data, size);
	FUZZ_ASSERT(latin1 != NULL || any == NULL,
				"what passes for LATIN1 passes for UTF-8", data, size);
	FUZZ_ASSERT(any == NULL || (leadlex == any && slintel == any),
				"a body that is no good JSON gets the same reason as any shape",
				data, size);
	fuzz_arena_reset();
	return 0;
}
