/*-------------------------------------------------------------------------
 *
 * response_headers.c
 *	  Parses the response headers enrich reads: the request id, the content
 *	  type, the X-RateLimit-* numbers and Retry-After (delay-seconds, or an
 *	  HTTP-date read with libcurl's curl_getdate()).
 *
 * The parsing runs in libcurl's header callback, which must never throw, on
 * bytes from the network; like the body check of response.c it uses only
 * what PostgreSQL offers frontend programs too, so the fuzz harness in
 * test/fuzz (fuzz_headers) drives this very file without a server.
 *
 * IDENTIFICATION
 *	  src/response_headers.c
 *
 *-------------------------------------------------------------------------
 */
#ifndef FRONTEND
#include "postgres.h"
#else
#include "postgres_fe.h"
#endif

#include <time.h>

#include <curl/curl.h>

#include "response.h"

/* ASCII-only digit test, independent of the locale. */
static inline bool
is_digit(char c)
{
	return c >= '0' && c <= '9';
}

/* Strips optional white space, and the line end, around a header value. */
static void
header_trim(const char **v, size_t *len)
{
	while (*len > 0 && (**v == ' ' || **v == '\t'))
		(*v)++, (*len)--;
	while (*len > 0 && ((*v)[*len - 1] == '\r' || (*v)[*len - 1] == '\n' ||
						(*v)[*len - 1] == ' ' || (*v)[*len - 1] == '\t'))
		(*len)--;
}

/*
 * Copies a text header value, trimmed and clipped, with every byte outside
 * printable ASCII replaced by '?': it ends up in error messages and cache
 * rows, which must hold valid text in any encoding.
 */
static void
header_text(const char *v, size_t len, char *dst, size_t dstlen)
{
	header_trim(&v, &len);
	len = Min(len, dstlen - 1);
	for (size_t i = 0; i < len; i++)
	{
		unsigned char c = (unsigned char) v[i];

		dst[i] = (c >= 0x20 && c < 0x7F) ? (char) c : '?';
	}
	dst[len] = '\0';
}

/*
 * A non-negative decimal header value (a fraction is ignored), or -1 when
 * it is empty, not a number, or above ENRICH_HEADER_MAX_NUMBER.
 */
static int64
header_number(const char *v, size_t len)
{
	int64		val = 0;
	size_t		i = 0;

	header_trim(&v, &len);
	if (len == 0 || !is_digit(v[0]))
		return -1;
	for (; i < len && is_digit(v[i]); i++)
	{
		val = val * 10 + (v[i] - '0');
		if (val > ENRICH_HEADER_MAX_NUMBER)
			return -1;
	}
	if (i < len && v[i] == '.')
		for (i++; i < len && is_digit(v[i]); i++)
			;
	return i == len ? val : -1;
}

/*
 * Reads an HTTP-date (RFC 9110 5.6.7: "Sun, 06 Nov 1994 08:49:37 GMT" and
 * the two obsolete formats) with libcurl's curl_getdate().  Returns Unix
 * seconds (0 for dates before 1970), or -1 when the value is no date.
 */
int64
enrich_http_date(const char *s, size_t len)
{
	char		buf[64];
	time_t		t;

	header_trim(&s, &len);
	if (len == 0 || len >= sizeof(buf) || memchr(s, '\0', len) != NULL)
		return -1;
	memcpy(buf, s, len);
	buf[len] = '\0';
	t = curl_getdate(buf, NULL);
	if (t == (time_t) -1)
		return -1;
	return Max((int64) t, 0);
}

/*
 * Retry-After: delay-seconds, or an HTTP-date turned into the seconds from
 * now until then (0 when it has passed).  -1 when it is neither.
 */
static int64
header_retry_after(const char *v, size_t len, int64 now)
{
	int64		when;

	header_trim(&v, &len);
	if (len > 0 && is_digit(v[0]))
		return header_number(v, len);
	if ((when = enrich_http_date(v, len)) < 0)
		return -1;
	return Min(Max(when - now, 0), ENRICH_HEADER_MAX_NUMBER);
}

/*
 * Whether the header line is the field `name` (matched without regard to
 * case, and with no space before the colon, as RFC 9110 requires); if so,
 * *value and *vlen are set to what follows the colon.
 */
static bool
header_is(const char *line, size_t len, const char *name, const char **value,
		  size_t *vlen)
{
	size_t		nlen = strlen(name);

	if (len <= nlen || line[nlen] != ':' || pg_strncasecmp(line, name, nlen) != 0)
		return false;
	*value = line + nlen + 1;
	*vlen = len - nlen - 1;
	return true;
}

/*
 * Parses one response header line as libcurl hands it over (not
 * NUL-terminated, with its line end) into *h, and returns its kind.  now
 * (Unix seconds) is the reference for a Retry-After date.  Never throws and
 * never reads beyond line + len.
 */
EnrichHeaderKind
enrich_header_parse(const char *line, size_t len, int64 now, EnrichHeader *h)
{
	const char *v;
	size_t		vlen;

	h->kind = ENRICH_HEADER_OTHER;
	h->text[0] = '\0';
	h->number = -1;
	if (len > 5 && strncmp(line, "HTTP/", 5) == 0)
		h->kind = ENRICH_HEADER_STATUS;
	else if (header_is(line, len, "x-request-id", &v, &vlen))
	{
		h->kind = ENRICH_HEADER_REQUEST_ID;
		header_text(v, vlen, h->text, sizeof(h->text));
	}
	else if (header_is(line, len, "content-type", &v, &vlen))
	{
		h->kind = ENRICH_HEADER_CONTENT_TYPE;
		header_text(v, vlen, h->text, sizeof(h->text));
	}
	else if (header_is(line, len, "x-ratelimit-limit", &v, &vlen))
	{
		h->kind = ENRICH_HEADER_RL_LIMIT;
		h->number = header_number(v, vlen);
	}
	else if (header_is(line, len, "x-ratelimit-remaining", &v, &vlen))
	{
		h->kind = ENRICH_HEADER_RL_REMAINING;
		h->number = header_number(v, vlen);
	}
	else if (header_is(line, len, "x-ratelimit-reset", &v, &vlen))
	{
		h->kind = ENRICH_HEADER_RL_RESET;
		h->number = header_number(v, vlen);
	}
	else if (header_is(line, len, "retry-after", &v, &vlen))
	{
		h->kind = ENRICH_HEADER_RETRY_AFTER;
		h->number = header_retry_after(v, vlen, now);
	}
	return h->kind;
}
