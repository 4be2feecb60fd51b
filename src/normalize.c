/*-------------------------------------------------------------------------
 *
 * normalize.c
 *	  Normalisation of the two enrichment keys: company domains and LinkedIn
 *	  profile URLs.
 *
 * Every cache key, queue key and provider request uses the normalised form,
 * so that the many ways of writing one company or one person cost a single
 * credit.  The work is done by libcurl's URL API (parsing), libidn2 (IDNA
 * 2008 / UTS #46 non-transitional mapping to punycode) and libpsl (the
 * Public Suffix List); only what no library does is written here.
 *
 * The C entry points never throw for bad input: they return NULL and a
 * short English phrase saying why (it completes "The input ..."), so that
 * the batch functions, the queue and the triggers can mark one input invalid
 * and go on.  In the rare case that an input cannot be checked at all (out
 * of memory, no Public Suffix List) the phrase starts with "cannot be
 * checked": that is not the input's fault.  They expect UTF-8 (the SQL
 * functions convert from the server encoding first) and use palloc only;
 * built with FRONTEND defined, this file leaves out the SQL functions and
 * is driven by the fuzz harness in test/fuzz.  Objects allocated by the
 * libraries with malloc are copied into palloc'd memory without throwing
 * and freed before returning; nothing here can ereport while holding one.
 *
 * Decisions on the points the contract leaves open:
 *
 * - Blanks around the input are trimmed: ASCII white space, and the
 *	 no-break space, zero-width space and byte order mark that copying from
 *	 spreadsheets and web pages brings along.  Inside the input they are
 *	 invalid, as are control characters.
 * - Domains: any URL scheme with an authority is accepted and only its host
 *	 is kept ("ftp://acme.com" gives "acme.com"): the caller wants the
 *	 company, not the resource.  Schemes without an authority ("file:///x",
 *	 "javascript:x") have no host and are invalid.
 * - An e-mail address gives its domain, also with "mailto:" in front.  A
 *	 display name ("Jane" <jane@acme.com>) is rejected: it has spaces and
 *	 angle brackets, and guessing which part is the address is not our job.
 * - Underscores and other characters outside letters, digits and hyphens
 *	 are rejected (STD3 host name rules), after IDN mapping.
 * - The registrable domain is taken with the ICANN and the private sections
 *	 of the list, so "jane.github.io" stays "jane.github.io" (a site of its
 *	 own, which is what an enrichment provider knows it by) and "github.io"
 *	 alone is a public suffix, hence invalid.
 * - A top-level domain that the list does not know ("acme.local",
 *	 "foo.localhost", "acme.cmo") is invalid: no provider can know such a
 *	 company, and it is usually a typo or an internal name.
 * - LinkedIn: only http and https URLs on linkedin.com or any of its
 *	 subdomains; the mobile paths /m/in/<slug> and /mwlite/in/<slug> count.
 *	 Path segments after the slug (/in/jane-doe/details/experience/) are
 *	 dropped: the slug names the profile.  A user name or password in the
 *	 URL makes it invalid (no genuine profile link has one).
 * - The slug is percent-decoded strictly (a '%' not followed by two hex
 *	 digits is invalid), lower-cased for ASCII letters only, and re-encoded.
 *	 Non-ASCII letters keep their case: LinkedIn generates lower-case slugs
 *	 itself, and full Unicode case mapping would tie the result to a Unicode
 *	 version, which an IMMUTABLE function must not depend on.
 *
 * IMMUTABLE holds for a given Public Suffix List: the list is loaded once
 * per process with psl_latest(), which takes the newer of the system list
 * (package publicsuffix, /usr/share/publicsuffix) and the copy built into
 * libpsl.  On Debian 12 both are complete (ICANN and private sections).
 * After an update of the list (or of libidn2's Unicode tables), REINDEX
 * indexes built on normalize_domain().
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

#include <arpa/inet.h>
#include <curl/curl.h>
#include <libpsl.h>
#include <idn2.h>

#include "lib/stringinfo.h"

#include "normalize.h"

#ifndef FRONTEND
#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"

#include "enrich.h"

PG_FUNCTION_INFO_V1(normalize_domain);
PG_FUNCTION_INFO_V1(normalize_linkedin_url);
#endif

/* Longest input accepted, in bytes, after trimming. */
#define NORM_MAX_INPUT			2048

/* Longest domain name (without the trailing dot) and label, RFC 1035. */
#define NORM_MAX_NAME			253
#define NORM_MAX_LABEL			63

/* Characters of the input shown in an error message. */
#define NORM_SHOWN_CHARS		100

#define LINKEDIN_HOST			"linkedin.com"
#define LINKEDIN_PROFILE_PREFIX "https://www.linkedin.com/in/"

/* Why an input is invalid: completes "The input ...". */
static const char *const R_EMPTY = "is empty";
static const char *const R_TOO_LONG = "is longer than 2048 bytes";
static const char *const R_CONTROL = "contains control characters";
static const char *const R_SPACES = "contains spaces";
static const char *const R_BAD_URL = "is not a valid URL or host name";
static const char *const R_NO_HOST = "has no host name";
static const char *const R_IP = "is an IP address, not a domain name";
static const char *const R_EMPTY_LABEL = "has an empty label";
static const char *const R_LONG_LABEL = "has a label longer than 63 characters";
static const char *const R_LONG_NAME = "is a domain name longer than 253 characters";
static const char *const R_BAD_CHAR = "contains characters not allowed in a domain name";
static const char *const R_HYPHEN = "has a label that starts or ends with a hyphen";
static const char *const R_BAD_IDN = "is not a valid internationalised domain name";
static const char *const R_SINGLE = "is a single label, not a domain name";
static const char *const R_UNKNOWN_TLD = "has a top-level domain not in the Public Suffix List";
static const char *const R_SUFFIX = "is a public suffix, not a registrable domain";
static const char *const R_NO_PSL = "cannot be checked: the Public Suffix List is not available";
static const char *const R_NO_MEMORY = "cannot be checked: out of memory";
static const char *const R_NOT_HTTP = "is not an http or https URL";
static const char *const R_NOT_LINKEDIN = "is not a linkedin.com URL";
static const char *const R_USERINFO = "contains a user name or password";
static const char *const R_COMPANY = "is a LinkedIn company page, not a profile";
static const char *const R_SALES = "is a Sales Navigator URL, not a public profile";
static const char *const R_NOT_PROFILE = "is not a LinkedIn profile URL (/in/<name>)";
static const char *const R_EMPTY_SLUG = "has an empty profile name";
static const char *const R_BAD_PERCENT = "has a malformed percent-encoding";
static const char *const R_SLUG_CHARS = "has a profile name with control characters, spaces or slashes";
static const char *const R_SLUG_UTF8 = "has a profile name that is not valid UTF-8";
static const char *const R_SLUG_DOTS = "has a profile name made of dots only";
static const char *const R_SLUG_LONG = "has a profile name whose canonical URL is longer than 2048 bytes";

/* The host, user and path of a URL, copied out of libcurl. */
typedef struct NormUrl
{
	char	   *scheme;
	char	   *host;
	char	   *path;
	bool		has_user;
} NormUrl;

/* Sets *reason and returns NULL, for the failure paths. */
static inline void *
norm_invalid(const char **reason, const char *why)
{
	*reason = why;
	return NULL;
}

/* The process-wide Public Suffix List, loaded on first use. */
static const psl_ctx_t *norm_psl = NULL;

/* Loads the newest Public Suffix List available, once per process. */
static const psl_ctx_t *
norm_get_psl(void)
{
	if (norm_psl == NULL)
	{
		psl_ctx_t  *latest = psl_latest(NULL);

		norm_psl = latest != NULL ? latest : psl_builtin();
	}
	return norm_psl;
}

/* ASCII-only test for a letter, independent of the locale. */
static inline bool
norm_is_alpha(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* ASCII-only test for a digit. */
static inline bool
norm_is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

/* ASCII-only lower-casing of one byte, independent of the locale. */
static inline unsigned char
norm_tolower(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') ? c + ('a' - 'A') : c;
}

/* Lower-cases ASCII letters in place, leaving other bytes alone. */
static void
norm_ascii_lower(char *s)
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
static char *
norm_trim_check(const char *input, const char **reason)
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

/*
 * Copies a string allocated by a library into palloc'd memory without
 * throwing, so that the caller can free the original on every path.
 * Returns NULL when out of memory.
 */
static char *
norm_copy_nothrow(const char *s)
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
		ok = (*copy = norm_copy_nothrow(value)) != NULL;
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
static const char *
norm_parse_url(const char *s, NormUrl *url)
{
	CURLU	   *h = curl_url();
	CURLUcode	rc;
	bool		copied = true;

	if (h == NULL)
		return R_NO_MEMORY;
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
		return R_NO_MEMORY;
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

/* True if s is an IPv4 or IPv6 address, with or without brackets. */
static bool
norm_is_ip(const char *s)
{
	unsigned char buf[sizeof(struct in6_addr)];
	char		tmp[64];
	size_t		len = strlen(s);

	if (inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1)
		return true;
	if (len >= 2 && len < sizeof(tmp) && s[0] == '[' && s[len - 1] == ']')
	{
		memcpy(tmp, s + 1, len - 2);
		tmp[len - 2] = '\0';
		return inet_pton(AF_INET6, tmp, buf) == 1;
	}
	return false;
}

/* True if the host needs IDNA processing: non-ASCII or an "xn--" label. */
static bool
norm_needs_idn(const char *host)
{
	const char *p;

	for (p = host; *p; p++)
	{
		if ((unsigned char) *p >= 0x80)
			return true;
		if ((p == host || p[-1] == '.') && strncmp(p, "xn--", 4) == 0)
			return true;
	}
	return false;
}

/*
 * Maps an internationalised host to its ASCII (punycode) form with UTS #46
 * non-transitional processing, which also lower-cases and NFC-normalises.
 * Returns a palloc'd copy, or NULL with *reason set.
 */
static char *
norm_idn_to_ascii(const char *host, const char **reason)
{
	uint8_t    *out = NULL;
	char	   *copy = NULL;
	int			rc;

	rc = idn2_lookup_u8((const uint8_t *) host, &out,
						IDN2_NONTRANSITIONAL | IDN2_NFC_INPUT);
	if (rc == IDN2_OK && out != NULL)
		copy = norm_copy_nothrow((const char *) out);
	idn2_free(out);
	if (rc == IDN2_MALLOC || (rc == IDN2_OK && copy == NULL))
		*reason = R_NO_MEMORY;
	else if (rc != IDN2_OK)
		*reason = R_BAD_IDN;
	return copy;
}

/* Checks one label of an ASCII host name: 1-63 letters, digits, hyphens. */
static const char *
norm_check_label(const char *label, size_t len)
{
	size_t		i;

	if (len == 0)
		return R_EMPTY_LABEL;
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
static const char *
norm_check_host(const char *host)
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
static void
norm_strip_root(char *host)
{
	size_t		len = strlen(host);

	if (len > 1 && host[len - 1] == '.')
		host[len - 1] = '\0';
}

/*
 * Turns a host as found in a URL into a checked, lower-case ASCII name.
 * Returns a palloc'd string, or NULL with *reason set.
 */
static char *
norm_canonical_host(const char *raw, const char **reason)
{
	char	   *host = pstrdup(raw);
	const char *why;

	if (norm_is_ip(host))
		return norm_invalid(reason, R_IP);
	norm_ascii_lower(host);
	norm_strip_root(host);
	if (norm_needs_idn(host))
	{
		char	   *ascii;

		/* catch empty labels first: libidn2 lets them through */
		if (strstr(host, "..") != NULL || host[0] == '.' ||
			host[strlen(host) - 1] == '.')
			return norm_invalid(reason, R_EMPTY_LABEL);
		if ((ascii = norm_idn_to_ascii(host, reason)) == NULL)
			return NULL;
		host = ascii;
		norm_strip_root(host);
	}
	if ((why = norm_check_host(host)) != NULL)
		return norm_invalid(reason, why);
	if (norm_is_ip(host))
		return norm_invalid(reason, R_IP);
	return host;
}

/*
 * Reduces a checked host name to its registrable domain with the Public
 * Suffix List.  Returns a palloc'd string, or NULL with *reason set.
 */
static char *
norm_registrable(const char *host, const char **reason)
{
	const psl_ctx_t *psl = norm_get_psl();
	const char *tld = strrchr(host, '.');
	const char *domain;
	int			known;

	if (psl == NULL)
		return norm_invalid(reason, R_NO_PSL);
	known = psl_is_public_suffix2(psl, tld ? tld + 1 : host,
								  PSL_TYPE_ANY | PSL_TYPE_NO_STAR_RULE);
	if (tld == NULL)
		return norm_invalid(reason, known ? R_SUFFIX : R_SINGLE);
	if (!known)
		return norm_invalid(reason, R_UNKNOWN_TLD);
	/* returns a pointer into host, nothing to free */
	domain = psl_registrable_domain(psl, host);
	if (domain == NULL)
		return norm_invalid(reason, R_SUFFIX);
	return pstrdup(domain);
}

/* True if s starts with the ASCII prefix, ignoring case. */
static bool
norm_has_prefix_ci(const char *s, const char *prefix)
{
	for (; *prefix; s++, prefix++)
	{
		if (norm_tolower((unsigned char) *s) != *prefix)
			return false;
	}
	return true;
}

/*
 * Returns the registrable domain of a domain name, URL or e-mail address as
 * a palloc'd string, or NULL with *reason set to why the input is invalid.
 * Never throws for bad input.
 */
char *
enrich_normalize_domain_str(const char *input, const char **reason)
{
	char	   *s;
	char	   *host;
	NormUrl		url = {0};

	*reason = NULL;
	if ((s = norm_trim_check(input, reason)) == NULL)
		return NULL;
	if (norm_is_ip(s))
		return norm_invalid(reason, R_IP);
	/* "jane@acme.com" parses as user "jane" at host "acme.com" */
	if (norm_has_prefix_ci(s, "mailto:"))
		s += strlen("mailto:");
	if ((*reason = norm_parse_url(s, &url)) != NULL)
		return NULL;
	if ((host = norm_canonical_host(url.host, reason)) == NULL)
		return NULL;
	return norm_registrable(host, reason);
}

/* True if the lower-case host is linkedin.com or one of its subdomains. */
static bool
norm_is_linkedin_host(const char *host)
{
	size_t		len = strlen(host);
	size_t		base = strlen(LINKEDIN_HOST);

	if (strcmp(host, LINKEDIN_HOST) == 0)
		return true;
	return len > base + 1 &&
		strcmp(host + len - base, LINKEDIN_HOST) == 0 &&
		host[len - base - 1] == '.';
}

/* Value of a hex digit, or -1. */
static int
norm_hex_value(unsigned char c)
{
	if (norm_is_digit(c))
		return c - '0';
	c = norm_tolower(c);
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/*
 * Percent-decodes one path segment strictly: every '%' must be followed by
 * two hex digits.  Returns a palloc'd string (*len bytes), or NULL.
 */
static char *
norm_percent_decode(const char *seg, size_t seglen, size_t *len)
{
	char	   *out = palloc(seglen + 1);
	size_t		i;
	size_t		n = 0;

	for (i = 0; i < seglen; i++)
	{
		if (seg[i] == '%')
		{
			int			hi = i + 2 < seglen ? norm_hex_value(seg[i + 1]) : -1;
			int			lo = hi >= 0 ? norm_hex_value(seg[i + 2]) : -1;

			if (hi < 0 || lo < 0)
				return NULL;
			out[n++] = (char) (hi * 16 + lo);
			i += 2;
		}
		else
			out[n++] = seg[i];
	}
	out[n] = '\0';
	*len = n;
	return out;
}

/*
 * Length of the well-formed UTF-8 sequence at s (shortest form, no
 * surrogates, at most U+10FFFF), or 0.  *cp receives the code point.
 */
static int
norm_utf8_char(const unsigned char *s, size_t avail, uint32 *cp)
{
	int			n;
	int			i;
	uint32		min;

	if (s[0] < 0x80)
		return (*cp = s[0], 1);
	if (s[0] >= 0xC2 && s[0] <= 0xDF)
		n = 2, *cp = s[0] & 0x1F, min = 0x80;
	else if (s[0] >= 0xE0 && s[0] <= 0xEF)
		n = 3, *cp = s[0] & 0x0F, min = 0x800;
	else if (s[0] >= 0xF0 && s[0] <= 0xF4)
		n = 4, *cp = s[0] & 0x07, min = 0x10000;
	else
		return 0;
	if ((size_t) n > avail)
		return 0;
	for (i = 1; i < n; i++)
	{
		if ((s[i] & 0xC0) != 0x80)
			return 0;
		*cp = (*cp << 6) | (s[i] & 0x3F);
	}
	if (*cp < min || *cp > 0x10FFFF || (*cp >= 0xD800 && *cp <= 0xDFFF))
		return 0;
	return n;
}

/*
 * Checks a decoded slug: valid UTF-8 with no control characters (C0, DEL,
 * C1), spaces or slashes, and not "." or "..".  Returns NULL if it is fine.
 */
static const char *
norm_check_slug(const char *slug, size_t len)
{
	const unsigned char *s = (const unsigned char *) slug;
	size_t		i = 0;

	if (len == 0)
		return R_EMPTY_SLUG;
	if (strspn(slug, ".") == len)
		return R_SLUG_DOTS;
	while (i < len)
	{
		uint32		cp;
		int			n = norm_utf8_char(s + i, len - i, &cp);

		if (n == 0)
			return R_SLUG_UTF8;
		if (cp <= 0x20 || (cp >= 0x7F && cp <= 0x9F) || cp == '/' ||
			cp == '\\' || cp == 0xA0)
			return R_SLUG_CHARS;
		i += n;
	}
	return NULL;
}

/*
 * Builds the canonical profile URL from a decoded slug: ASCII letters
 * lower-cased, every byte outside a-z 0-9 - _ . encoded as upper-case %XX.
 */
static char *
norm_profile_url(const char *slug, size_t len)
{
	static const char hex[] = "0123456789ABCDEF";
	StringInfoData buf;
	size_t		i;

	initStringInfo(&buf);
	appendStringInfoString(&buf, LINKEDIN_PROFILE_PREFIX);
	for (i = 0; i < len; i++)
	{
		unsigned char c = norm_tolower((unsigned char) slug[i]);

		if (norm_is_alpha(c) || norm_is_digit(c) ||
			c == '-' || c == '_' || c == '.')
			appendStringInfoChar(&buf, (char) c);
		else
		{
			appendStringInfoChar(&buf, '%');
			appendStringInfoChar(&buf, hex[c >> 4]);
			appendStringInfoChar(&buf, hex[c & 0x0F]);
		}
	}
	return buf.data;
}

/* Splits a URL path into its non-empty segments; returns their count. */
static int
norm_split_path(char *path, char **segs, int maxsegs)
{
	int			n = 0;
	char	   *p = path;

	while (*p && n < maxsegs)
	{
		char	   *slash;

		while (*p == '/')
			p++;
		if (*p == '\0')
			break;
		segs[n++] = p;
		if ((slash = strchr(p, '/')) == NULL)
			break;
		*slash = '\0';
		p = slash + 1;
	}
	return n;
}

/* True if the path segment equals word, ignoring ASCII case. */
static bool
norm_seg_is(const char *seg, const char *word)
{
	return strlen(seg) == strlen(word) && norm_has_prefix_ci(seg, word);
}

/*
 * Finds the raw slug in the path of a LinkedIn URL: /in/<slug>, or the
 * mobile /m/in/<slug> and /mwlite/in/<slug>.  Returns it (pointing into
 * path) or NULL with *reason set.
 */
static char *
norm_find_slug(char *path, const char **reason)
{
	char	   *segs[3];
	int			n = norm_split_path(path, segs, 3);
	int			i = 0;

	if (n > 0 && (norm_seg_is(segs[0], "m") || norm_seg_is(segs[0], "mwlite")))
		i = 1;
	if (i >= n)
		return norm_invalid(reason, R_NOT_PROFILE);
	if (norm_seg_is(segs[i], "company") || norm_seg_is(segs[i], "showcase"))
		return norm_invalid(reason, R_COMPANY);
	if (norm_seg_is(segs[i], "sales"))
		return norm_invalid(reason, R_SALES);
	if (!norm_seg_is(segs[i], "in"))
		return norm_invalid(reason, R_NOT_PROFILE);
	if (i + 1 >= n)
		return norm_invalid(reason, R_EMPTY_SLUG);
	return segs[i + 1];
}

/*
 * Returns the canonical form https://www.linkedin.com/in/<slug> of a
 * LinkedIn profile URL as a palloc'd string, or NULL with *reason set to
 * why the input is invalid.  Never throws for bad input.
 */
char *
enrich_normalize_linkedin_str(const char *input, const char **reason)
{
	char	   *s;
	char	   *raw;
	char	   *slug;
	char	   *key;
	size_t		len;
	NormUrl		url = {0};

	*reason = NULL;
	if ((s = norm_trim_check(input, reason)) == NULL)
		return NULL;
	if ((*reason = norm_parse_url(s, &url)) != NULL)
		return NULL;
	if (url.scheme == NULL ||
		(strcmp(url.scheme, "https") != 0 && strcmp(url.scheme, "http") != 0))
		return norm_invalid(reason, R_NOT_HTTP);
	norm_ascii_lower(url.host);
	norm_strip_root(url.host);
	if (norm_check_host(url.host) != NULL ||
		!norm_is_linkedin_host(url.host))
		return norm_invalid(reason, R_NOT_LINKEDIN);
	if (url.has_user)
		return norm_invalid(reason, R_USERINFO);
	if ((raw = norm_find_slug(url.path, reason)) == NULL)
		return NULL;
	if ((slug = norm_percent_decode(raw, strlen(raw), &len)) == NULL)
		return norm_invalid(reason, R_BAD_PERCENT);
	if ((*reason = norm_check_slug(slug, len)) != NULL)
		return NULL;
	/* the key must be valid input too, and %XX makes it longer */
	key = norm_profile_url(slug, len);
	if (strlen(key) > NORM_MAX_INPUT)
		return norm_invalid(reason, R_SLUG_LONG);
	return key;
}

#ifndef FRONTEND

/*
 * What follows needs the backend: the SQL functions and the errors they
 * raise.  Everything above also builds in the fuzz harness (test/fuzz).
 */

/* Normalises the key of either kind of enrichment; see the two above. */
char *
enrich_normalize_key(EnrichKind kind, const char *input, const char **reason)
{
	if (kind == ENRICH_COMPANY)
		return enrich_normalize_domain_str(input, reason);
	return enrich_normalize_linkedin_str(input, reason);
}

/*
 * Makes an input safe to quote in an error message: at most 100 characters
 * (then "..."), and control characters, C1 controls and Unicode line
 * separators written as escapes, so that hostile input cannot forge log
 * lines.  Takes and returns the server encoding.
 */
static char *
norm_shown_input(const char *input)
{
	int			len = strlen(input);
	int			clip = pg_mbcharcliplen(input, len, NORM_SHOWN_CHARS);
	bool		utf8 = GetDatabaseEncoding() == PG_UTF8;
	StringInfoData buf;
	int			i;

	initStringInfo(&buf);
	for (i = 0; i < clip; i++)
	{
		const unsigned char *p = (const unsigned char *) input + i;

		if (*p < 0x20 || *p == 0x7F)
			appendStringInfo(&buf, "\\x%02X", *p);
		else if (utf8 && i + 1 < clip && p[0] == 0xC2 && p[1] <= 0x9F)
		{
			appendStringInfo(&buf, "\\u%04X", p[1]);
			i += 1;
		}
		else if (utf8 && i + 2 < clip && p[0] == 0xE2 && p[1] == 0x80 &&
				 (p[2] == 0xA8 || p[2] == 0xA9))
		{
			appendStringInfo(&buf, "\\u%04X", 0x2000 + (p[2] & 0x3F));
			i += 2;
		}
		else
			appendStringInfoChar(&buf, (char) *p);
	}
	if (clip < len)
		appendStringInfoString(&buf, "...");
	return buf.data;
}

/* The argument of a SQL normaliser as a UTF-8 C string. */
static char *
norm_arg_utf8(text *arg, char **server)
{
	*server = text_to_cstring(arg);
	return pg_server_to_any(*server, strlen(*server), PG_UTF8);
}

/*
 * Normalises a text argument of either kind (converted to UTF-8 first).
 * On NULL return, *input is the argument in the server encoding, for
 * enrich_report_invalid().
 */
char *
enrich_normalize_text(EnrichKind kind, text *arg, char **input, const char **reason)
{
	char	   *utf8 = norm_arg_utf8(arg, input);

	return enrich_normalize_key(kind, utf8, reason);
}

/*
 * Raises the error for an input that could not be normalised: 22023 for
 * invalid input, or the error of the system when the input could not be
 * checked at all.
 */
void
enrich_report_invalid(EnrichKind kind, const char *input, const char *reason)
{
	bool		linkedin = (kind == ENRICH_LEAD);

	if (reason == R_NO_MEMORY)
		ereport(ERROR,
				errcode(ERRCODE_OUT_OF_MEMORY),
				errmsg("out of memory"));
	if (reason == R_NO_PSL)
		ereport(ERROR,
				errcode(ERRCODE_UNDEFINED_FILE),
				errmsg("could not load the Public Suffix List"),
				errhint("Install the publicsuffix package, or a libpsl built with its own copy of the list."));
	if (linkedin)
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("invalid LinkedIn profile URL: \"%s\"",
					   norm_shown_input(input)),
				errdetail("The input %s.", reason));
	ereport(ERROR,
			errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			errmsg("invalid domain: \"%s\"", norm_shown_input(input)),
			errdetail("The input %s.", reason));
}

/*
 * enrich.normalize_domain(text) RETURNS text
 *
 * The registrable domain of a domain name, URL or e-mail address; raises
 * 22023 for invalid input.
 */
Datum
normalize_domain(PG_FUNCTION_ARGS)
{
	char	   *input;
	char	   *utf8 = norm_arg_utf8(PG_GETARG_TEXT_PP(0), &input);
	const char *reason;
	char	   *result = enrich_normalize_domain_str(utf8, &reason);

	if (result == NULL)
		enrich_report_invalid(ENRICH_COMPANY, input, reason);
	PG_RETURN_TEXT_P(cstring_to_text(result));
}

/*
 * enrich.normalize_linkedin_url(text) RETURNS text
 *
 * The canonical https://www.linkedin.com/in/<slug> form of a LinkedIn
 * profile URL; raises 22023 for invalid input.
 */
Datum
normalize_linkedin_url(PG_FUNCTION_ARGS)
{
	char	   *input;
	char	   *utf8 = norm_arg_utf8(PG_GETARG_TEXT_PP(0), &input);
	const char *reason;
	char	   *result = enrich_normalize_linkedin_str(utf8, &reason);

	if (result == NULL)
		enrich_report_invalid(ENRICH_LEAD, input, reason);
	PG_RETURN_TEXT_P(cstring_to_text(result));
}

#endif							/* !FRONTEND */
