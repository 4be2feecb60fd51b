/*-------------------------------------------------------------------------
 *
 * fuzz_headers.c
 *	  libFuzzer target for the response header parsing of
 *	  src/response_headers.c.
 *
 * Each line of the input (up to and with its '\n') is handed over as
 * libcurl hands a header line to header_cb: in a buffer of exactly its
 * length, so AddressSanitizer sees any read past it.  Beyond not crashing,
 * the parsed header must keep its promises: text that is NUL-terminated
 * printable ASCII, numbers from -1 to ENRICH_HEADER_MAX_NUMBER, nothing set
 * that the kind does not carry.  The whole input is also read as an
 * HTTP-date (by libcurl's curl_getdate(), as Retry-After is); a date that
 * parses must come back the same when written again as an IMF-fixdate.
 *
 * IDENTIFICATION
 *	  test/fuzz/fuzz_headers.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres_fe.h"

#include <time.h>

#include "response.h"

#include "fuzz.h"

/* The fixed "now" of every run (2025-06-15), so that runs repeat. */
#define FUZZ_NOW INT64CONST(1750000000)

/* Checks what enrich_header_parse() promises about *h. */
static void
check_header(EnrichHeaderKind kind, const EnrichHeader *h,
			 const uint8_t *data, size_t size)
{
	bool		is_text = (kind == ENRICH_HEADER_REQUEST_ID ||
						   kind == ENRICH_HEADER_CONTENT_TYPE);
	bool		is_number = (kind >= ENRICH_HEADER_RL_LIMIT);
	size_t		len = strnlen(h->text, sizeof(h->text));

	FUZZ_ASSERT(h->kind == kind, "the kind returned is the kind set", data, size);
	FUZZ_ASSERT(len < sizeof(h->text), "the text is NUL-terminated", data, size);
	for (size_t i = 0; i < len; i++)
		FUZZ_ASSERT(h->text[i] >= 0x20 && h->text[i] < 0x7F,
					"the text is printable ASCII", data, size);
	FUZZ_ASSERT(is_text || len == 0, "only text headers have text", data, size);
	FUZZ_ASSERT(h->number >= -1 && h->number <= ENRICH_HEADER_MAX_NUMBER,
				"the number is in range", data, size);
	FUZZ_ASSERT(is_number || h->number == -1,
				"only number headers have a number", data, size);
}

/* Writes a parsed date again as an IMF-fixdate and checks it reads back. */
static void
check_date_round_trip(int64 when, const uint8_t *data, size_t size)
{
	time_t		t = (time_t) when;
	struct tm	tm;
	char		buf[64];
	size_t		n;

	FUZZ_ASSERT(gmtime_r(&t, &tm) != NULL, "the date is a real time", data, size);
	n = strftime(buf, sizeof(buf), "%a, %d %b %Y %H:%M:%S GMT", &tm);
	FUZZ_ASSERT(n > 0 && enrich_http_date(buf, n) == when,
				"a date reads back the same as an IMF-fixdate", data, size);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *p = data;
	const uint8_t *end = data + size;
	int64		when;

	while (p < end)
	{
		const uint8_t *nl = memchr(p, '\n', end - p);
		size_t		len = nl ? (size_t) (nl - p) + 1 : (size_t) (end - p);
		char	   *line = malloc(len);
		EnrichHeader h;

		if (line == NULL)
			abort();
		memcpy(line, p, len);
		check_header(enrich_header_parse(line, len, FUZZ_NOW, &h), &h, data, size);
		free(line);
		p += len;
	}
	when = enrich_http_date((const char *) data, size);
	/* an IMF-fixdate has a four-digit year */
	if (when > 0 && when < INT64CONST(253402300800))
		check_date_round_trip(when, data, size);
	return 0;
}
