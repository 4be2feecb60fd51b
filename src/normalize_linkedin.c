/*-------------------------------------------------------------------------
 *
 * normalize_linkedin.c
 *	  Normalisation of LinkedIn profile URLs to the canonical form
 *	  https://www.linkedin.com/in/<slug>, the key of a lead enrichment:
 *	  finding the profile name (slug) in the path, percent-decoding and
 *	  checking it, and encoding it again.
 *
 * The URL is parsed with libcurl's URL API (normalize.c).  Like the rest of
 * the normalisers this file never throws for bad input, uses palloc only
 * and builds as frontend code for the fuzz harness in test/fuzz (see
 * normalize.c).
 *
 * Decisions on the points the contract leaves open:
 *
 * - Only http and https URLs on linkedin.com or any of its subdomains; the
 *	 mobile paths /m/in/<slug> and /mwlite/in/<slug> count.  Path segments
 *	 after the slug (/in/jane-doe/details/experience/) are dropped: the slug
 *	 names the profile.  A user name or password in the URL makes it
 *	 invalid (no genuine profile link has one).
 * - The slug is percent-decoded strictly (a '%' not followed by two hex
 *	 digits is invalid), lower-cased for ASCII letters only, and re-encoded.
 *	 Non-ASCII letters keep their case: LinkedIn generates lower-case slugs
 *	 itself, and full Unicode case mapping would tie the result to a Unicode
 *	 version, which an IMMUTABLE function must not depend on.
 *
 * IDENTIFICATION
 *	  src/normalize_linkedin.c
 *
 *-------------------------------------------------------------------------
 */
#ifndef FRONTEND
#include "postgres.h"
#else
#include "postgres_fe.h"
#endif

#include "lib/stringinfo.h"

#include "normalize.h"

#define LINKEDIN_HOST			"linkedin.com"
#define LINKEDIN_PROFILE_PREFIX "https://www.linkedin.com/in/"

/* Why an input is not a LinkedIn profile URL: completes "The input ...". */
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
	return strlen(seg) == strlen(word) && enrich_norm_has_prefix_ci(seg, word);
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
	if ((s = enrich_norm_trim_check(input, reason)) == NULL)
		return NULL;
	if ((*reason = enrich_norm_parse_url(s, &url)) != NULL)
		return NULL;
	if (url.scheme == NULL ||
		(strcmp(url.scheme, "https") != 0 && strcmp(url.scheme, "http") != 0))
		return norm_invalid(reason, R_NOT_HTTP);
	enrich_norm_ascii_lower(url.host);
	enrich_norm_strip_root(url.host);
	if (enrich_norm_check_host(url.host) != NULL ||
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
