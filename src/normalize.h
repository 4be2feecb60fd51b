/*-------------------------------------------------------------------------
 *
 * normalize.h
 *	  The key normalisers of normalize.c that need no server, for the
 *	  backend and for the fuzz harness in test/fuzz.
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

#endif							/* ENRICH_NORMALIZE_H */
