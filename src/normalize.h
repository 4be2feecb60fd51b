/*-------------------------------------------------------------------------
 *
 * normalize.h
 *	  The key normalisers of normalize_domain.c and normalize_linkedin.c
 *	  that need no server, for the backend and for the fuzz harness in
 *	  test/fuzz; and what those two share with normalize.c.
 *
 * Include postgres.h (backend) or postgres_fe.h (frontend) first.
 *
 * IDENTIFICATION
 *	  src/normalize.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef ENRICH_NORMALIZE_H
#define ENRICH_NORMALIZE_H

extern char *enrich_normalize_domain_str(const char *input, const char **reason);
extern char *enrich_normalize_linkedin_str(const char *input, const char **reason);

/*
 * What follows is shared by normalize.c, normalize_domain.c and
 * normalize_linkedin.c, and is not meant for other callers.
 */

/* Longest input accepted, in bytes, after trimming. */
#define NORM_MAX_INPUT			2048

/* The host, user and path of a URL, copied out of libcurl. */
typedef struct NormUrl
{
	char	   *scheme;
	char	   *host;
	char	   *path;
	bool		has_user;
} NormUrl;

/*
 * Reasons used by more than one of the files.  enrich_report_invalid() tells
 * the two "cannot be checked" ones by their address.
 */
extern const char *const enrich_norm_empty_label;
extern const char *const enrich_norm_no_psl;
extern const char *const enrich_norm_no_memory;

/* Sets *reason and returns NULL, for the failure paths. */
static inline void *
norm_invalid(const char **reason, const char *why)
{
	*reason = why;
	return NULL;
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

/* In normalize.c: the input, URL parsing and host names. */
extern char *enrich_norm_trim_check(const char *input, const char **reason);
extern void enrich_norm_ascii_lower(char *s);
extern bool enrich_norm_has_prefix_ci(const char *s, const char *prefix);
extern char *enrich_norm_copy_nothrow(const char *s);
extern const char *enrich_norm_parse_url(const char *s, NormUrl *url);
extern const char *enrich_norm_check_host(const char *host);
extern void enrich_norm_strip_root(char *host);

#endif							/* ENRICH_NORMALIZE_H */
