/*-------------------------------------------------------------------------
 *
 * normalize.c
 *	  What the two key normalisers share: trimming and checking the raw
 *	  input, parsing it as a URL with libcurl's URL API, and checking host
 *	  names; and, in the backend, the SQL functions normalize_domain() and
 *	  normalize_linkedin_url() and the errors they raise.
 *
 * Every cache key, queue key and provider request uses the normalised form,
 * so that the many ways of writing one company or one person cost a single
 * credit.  The company domain is normalised in normalize_domain.c, the
 * LinkedIn profile URL in normalize_linkedin.c; only what no library does
 * is written here and there.
 *
 * The C entry points never throw for bad input: they return NULL and a
 * short English phrase saying why (it completes "The input ..."), so that
 * the batch functions, the queue and the triggers can mark one input invalid
 * and go on.  In the rare case that an input cannot be checked at all (out
 * of memory, no Public Suffix List) the phrase starts with "cannot be
 * checked": that is not the input's fault, and enrich_report_invalid()
 * tells these reasons by their address.  They expect UTF-8 (the SQL
 * functions convert from the server encoding first) and use palloc only;
 * this file, normalize_domain.c and normalize_linkedin.c also build as
 * frontend code (FRONTEND defined) for the fuzz harness in test/fuzz; the
 * SQL functions and the errors they raise are in normalize_sql.c.  Objects allocated by the libraries with malloc are
 * copied into palloc'd memory without throwing and freed before returning;
 * nothing here can ereport while holding one.
 *
 * Blanks around the input are trimmed: ASCII white space, and the no-break
 * space, zero-width space and byte order mark that copying from
 * spreadsheets and web pages brings along.  Inside the input they are
 * invalid, as are control characters.
 *
 * IDENTIFICATION
 *	  src/normalize.c
 *
 *-------------------------------------------------------------------------
 */
#ifndef FRONTEND
#include "postgres.h"
#else
#include "postgres_fe.h"
#endif

#include <curl/curl.h>

#include "lib/stringinfo.h"

#include "normalize.h"


/* Longest domain name (without the trailing dot) and label, RFC 1035. */
#define NORM_MAX_NAME			253
#define NORM_MAX_LABEL			63


/* Why an input is invalid: completes "The input ...". */
static const char *const R_EMPTY = "is empty";
static const char *const R_TOO_LONG = "is longer than 2048 bytes";
static const char *const R_CONTROL = "contains control characters";
static const char *const R_SPACES = "contains spaces";
static const char *const R_BAD_URL = "is not a valid URL or host name";
static const char *const R_NO_HOST = "has no host name";
static const char *const R_LONG_LABEL = "has a label longer than 63 characters";
static const char *const R_LONG_NAME = "is a domain name longer than 253 characters";
static const char *const R_BAD_CHAR = "contains characters not allowed in a domain name";
static const char *const R_HYPHEN = "has a label that starts or ends with a hyphen";

/* The reasons that normalize_domain.c and normalize_linkedin.c use too. */
const char *const enrich_norm_empty_label = "has an empty label";
const char *const enrich_norm_no_psl = "cannot be checked: the Public Suffix List is not available";
const char *const enrich_norm_no_memory = "cannot be checked: out of memory";

/* Lower-cases ASCII letters in place, leaving other bytes alone. */
void
enrich_norm_ascii_lower(char *s)
{
	for (; *s; s++)
		*s = norm_tolower((unsigned char) *s);
}

/* Length of the invisible blank at s (ASCII space, NBSP, ZWSP, BOM), or 0. */
static int
norm_blank_len(const unsigned char *s, const unsigned char *end)
{
	if (s < end && (*s == ' ' || (*s >= '\t' && *s <= '\r')))
		return 1;
	if (end - s >= 2 && s[0] == 0xC2 && s[1] == 0xA0)
		return 2;
	if (end - s >= 3 && s[0] == 0xE2 && s[1] == 0x80 && s[2] == 0x8B)
		return 3;
	if (end - s >= 3 && s[0] == 0xEF && s[1] == 0xBB && s[2] == 0xBF)
		return 3;
	return 0;
}

/* Length of the blank that ends just before end, or 0. */
static int
norm_blank_len_before(const unsigned char *start, const unsigned char *end)
{
	int			n;

	for (n = 1; n <= 3 && end - n >= start; n++)
	{
		if (norm_blank_len(end - n, end) == n)
			return n;
	}
	return 0;
}

/*
 * Trims blanks around the input and rejects what no URL or name may hold:
 * emptiness, excess length, control characters and inner spaces.  Returns a
 * palloc'd copy, or NULL with *reason set.
 */
char *
enrich_norm_trim_check(const char *input, const char **reason)
{
	const unsigned char *start = (const unsigned char *) input;
	const unsigned char *end;
	const unsigned char *p;
	int			n;

	if (input == NULL)
		return norm_invalid(reason, R_EMPTY);
	end = start + strlen(input);
	while ((n = norm_blank_len(start, end)) > 0)
		start += n;
	while (end > start && (n = norm_blank_len_before(start, end)) > 0)
		end -= n;
	if (start == end)
		return norm_invalid(reason, R_EMPTY);
	if (end - start > NORM_MAX_INPUT)
		return norm_invalid(reason, R_TOO_LONG);
	for (p = start; p < end; p++)
	{
		if (*p < 0x20 || *p == 0x7F)
			return norm_invalid(reason, R_CONTROL);
		if (*p == ' ' || norm_blank_len(p, end) > 1)
			return norm_invalid(reason, R_SPACES);
	}
	return pnstrdup((const char *) start, end - start);
}

/* True if s starts with the ASCII prefix, ignoring case. */
bool
enrich_norm_has_prefix_ci(const char *s, const char *prefix)
{
	for (; *prefix; s++, prefix++)
	{
		if (norm_tolower((unsigned char) *s) != *prefix)
			return false;
	}
	return true;
}

/*
 * Copies a string allocated by a library into palloc'd memory without
 * throwing, so that the caller can free the original on every path.
 * Returns NULL when out of memory.
 */
char *
enrich_norm_copy_nothrow(const char *s)
{
	size_t		len = strlen(s);
	char	   *copy = palloc_extended(len + 1, MCXT_ALLOC_NO_OOM);

	if (copy != NULL)
		memcpy(copy, s, len + 1);
	return copy;
}

/*
 * Copies one part of a parsed URL into *copy (NULL when the URL has no such
 * part).  Returns false when out of memory.
 */
static bool
norm_url_part(CURLU *h, CURLUPart part, char **copy)
{
	char	   *value = NULL;
	bool		ok = true;

	*copy = NULL;
	if (curl_url_get(h, part, &value, 0) == CURLUE_OK && value != NULL)
		ok = (*copy = enrich_norm_copy_nothrow(value)) != NULL;
	curl_free(value);
	return ok;
}

/* True if the parsed URL has the given part (user name, password). */
static bool
norm_url_has(CURLU *h, CURLUPart part)
{
	char	   *value = NULL;
	bool		has = curl_url_get(h, part, &value, 0) == CURLUE_OK;

	curl_free(value);
	return has;
}

/*
 * Parses a URL, or a bare host with optional path, with libcurl; the scheme
 * defaults to https.  Fills *url with palloc'd copies and returns NULL, or
 * returns why the input is not a URL.
 */
const char *
enrich_norm_parse_url(const char *s, NormUrl *url)
{
	CURLU	   *h = curl_url();
	CURLUcode	rc;
	bool		copied = true;

	if (h == NULL)
		return enrich_norm_no_memory;
	rc = curl_url_set(h, CURLUPART_URL, s,
					  CURLU_DEFAULT_SCHEME | CURLU_NON_SUPPORT_SCHEME);
	if (rc == CURLUE_OK)
	{
		copied = norm_url_part(h, CURLUPART_SCHEME, &url->scheme) &&
			norm_url_part(h, CURLUPART_HOST, &url->host) &&
			norm_url_part(h, CURLUPART_PATH, &url->path);
		url->has_user = norm_url_has(h, CURLUPART_USER) ||
			norm_url_has(h, CURLUPART_PASSWORD);
	}
	curl_url_cleanup(h);
	if (!copied)
		return enrich_norm_no_memory;
	if (rc == CURLUE_NO_HOST)
		return R_NO_HOST;
	if (rc != CURLUE_OK)
		return R_BAD_URL;
	if (url->host == NULL || url->host[0] == '\0')
		return R_NO_HOST;
	if (url->path == NULL)
		url->path = pstrdup("/");
	return NULL;
}

/* Checks one label of an ASCII host name: 1-63 letters, digits, hyphens. */
static const char *
norm_check_label(const char *label, size_t len)
{
	size_t		i;

	if (len == 0)
		return enrich_norm_empty_label;
	if (len > NORM_MAX_LABEL)
		return R_LONG_LABEL;
	for (i = 0; i < len; i++)
	{
		unsigned char c = (unsigned char) label[i];

		if (!norm_is_alpha(c) && !norm_is_digit(c) && c != '-')
			return R_BAD_CHAR;
	}
	if (label[0] == '-' || label[len - 1] == '-')
		return R_HYPHEN;
	return NULL;
}

/*
 * Checks an ASCII host name label by label; returns NULL if it is well
 * formed, else the reason.
 */
const char *
enrich_norm_check_host(const char *host)
{
	const char *label = host;
	const char *why;

	for (;;)
	{
		const char *dot = strchr(label, '.');
		size_t		len = dot ? (size_t) (dot - label) : strlen(label);

		if ((why = norm_check_label(label, len)) != NULL)
			return why;
		if (dot == NULL)
			break;
		label = dot + 1;
	}
	if (strlen(host) > NORM_MAX_NAME)
		return R_LONG_NAME;
	return NULL;
}

/* Drops one trailing dot (the DNS root) from a host, in place. */
void
enrich_norm_strip_root(char *host)
{
	size_t		len = strlen(host);

	if (len > 1 && host[len - 1] == '.')
		host[len - 1] = '\0';
}
