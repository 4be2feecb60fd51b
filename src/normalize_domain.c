/*-------------------------------------------------------------------------
 *
 * normalize_domain.c
 *	  Normalisation of company domains: a domain name, URL or e-mail address
 *	  to its registrable domain, the key of a company enrichment.
 *
 * The work is done by libcurl's URL API (parsing, in normalize.c), libidn2
 * (IDNA 2008 / UTS #46 non-transitional mapping to punycode) and libpsl
 * (the Public Suffix List).  Like the rest of the normalisers this file
 * never throws for bad input, uses palloc only and builds as frontend code
 * for the fuzz harness in test/fuzz (see normalize.c).
 *
 * Decisions on the points the contract leaves open:
 *
 * - Any URL scheme with an authority is accepted and only its host is kept
 *	 ("ftp://acme.com" gives "acme.com"): the caller wants the company, not
 *	 the resource.  Schemes without an authority ("file:///x",
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
 *
 * IMMUTABLE holds for a given Public Suffix List: the list is loaded once
 * per process with psl_latest(), which takes the newer of the system list
 * (package publicsuffix, /usr/share/publicsuffix) and the copy built into
 * libpsl.  On Debian 12 both are complete (ICANN and private sections).
 * After an update of the list (or of libidn2's Unicode tables), REINDEX
 * indexes built on normalize_domain().
 *
 * IDENTIFICATION
 *	  src/normalize_domain.c
 *
 *-------------------------------------------------------------------------
 */
#ifndef FRONTEND
#include "postgres.h"
#else
#include "postgres_fe.h"
#endif

#include <arpa/inet.h>
#include <libpsl.h>
#include <idn2.h>

#include "normalize.h"

/* Why an input is not a company domain: completes "The input ...". */
static const char *const R_IP = "is an IP address, not a domain name";
static const char *const R_BAD_IDN = "is not a valid internationalised domain name";
static const char *const R_SINGLE = "is a single label, not a domain name";
static const char *const R_UNKNOWN_TLD = "has a top-level domain not in the Public Suffix List";
static const char *const R_SUFFIX = "is a public suffix, not a registrable domain";

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
		copy = enrich_norm_copy_nothrow((const char *) out);
	idn2_free(out);
	if (rc == IDN2_MALLOC || (rc == IDN2_OK && copy == NULL))
		*reason = enrich_norm_no_memory;
	else if (rc != IDN2_OK)
		*reason = R_BAD_IDN;
	return copy;
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
	enrich_norm_ascii_lower(host);
	enrich_norm_strip_root(host);
	if (norm_needs_idn(host))
	{
		char	   *ascii;

		/* catch empty labels first: libidn2 lets them through */
		if (strstr(host, "..") != NULL || host[0] == '.' ||
			host[strlen(host) - 1] == '.')
			return norm_invalid(reason, enrich_norm_empty_label);
		if ((ascii = norm_idn_to_ascii(host, reason)) == NULL)
			return NULL;
		host = ascii;
		enrich_norm_strip_root(host);
	}
	if ((why = enrich_norm_check_host(host)) != NULL)
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
		return norm_invalid(reason, enrich_norm_no_psl);
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
	if ((s = enrich_norm_trim_check(input, reason)) == NULL)
		return NULL;
	if (norm_is_ip(s))
		return norm_invalid(reason, R_IP);
	/* "jane@acme.com" parses as user "jane" at host "acme.com" */
	if (enrich_norm_has_prefix_ci(s, "mailto:"))
		s += strlen("mailto:");
	if ((*reason = enrich_norm_parse_url(s, &url)) != NULL)
		return NULL;
	if ((host = norm_canonical_host(url.host, reason)) == NULL)
		return NULL;
	return norm_registrable(host, reason);
}
