/*-------------------------------------------------------------------------
 *
 * transport.h
 *	  The transport layer: one libcurl transfer (http.c), and the multi
 *	  handle and the waiting on it (http_wait.c).
 *
 * What the providers' files start, wait for and read back: an
 * EnrichTransfer.  The two files' own shared state is in http_int.h.
 * Includes state.h.
 *
 * IDENTIFICATION
 *	  src/transport.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef ENRICH_TRANSPORT_H
#define ENRICH_TRANSPORT_H

#include "state.h"

#include <curl/curl.h>

#define ENRICH_USER_AGENT "enrich/" ENRICH_VERSION " (PostgreSQL extension)"

/* ---- http.c ---- */

/*
 * One HTTP exchange with a provider.  The curl handle, header list and
 * response buffer are malloc'd by libcurl or by our callbacks; they are
 * released by enrich_http_release(), also when an ERROR unwinds (see the
 * batch's memory context callback).
 */
typedef struct EnrichTransfer
{
	EnrichKind	kind;
	CURL	   *easy;
	struct curl_slist *headers;
	char	   *url;			/* malloc'd */
	char	   *post_body;		/* malloc'd, NULL for GET */

	/* response */
	char	   *body;			/* malloc'd, NUL-terminated */
	size_t		body_len;
	size_t		body_cap;
	size_t		body_limit;
	bool		too_large;
	long		status;
	CURLcode	result;
	char		errbuf[CURL_ERROR_SIZE];
	char		request_id[80];
	char		content_type[80];
	int64		rl_limit;		/* -1 when not sent */
	int64		rl_remaining;	/* -1 when not sent */
	int64		rl_reset;		/* Unix seconds, -1 when not sent */
	int64		retry_after;	/* seconds, -1 when not sent */
	double		elapsed;		/* seconds */
	bool		in_multi;
} EnrichTransfer;

extern void enrich_http_start(EnrichTransfer *t, const char *url,
							  struct curl_slist *headers, const char *post_body);
extern void enrich_http_release(EnrichTransfer *t);
extern int	enrich_http_active(void);
extern bool enrich_http_may_start(EnrichKind kind);
extern int	enrich_http_concurrency(void);
extern struct curl_slist *enrich_http_header(struct curl_slist *list,
											 const char *name, const char *value);

/* ---- http_wait.c ---- */
extern void enrich_http_init(void);
extern CURLM *enrich_http_multi(void);
extern EnrichTransfer *enrich_http_next_done(void);
extern bool enrich_http_wait(long timeout_ms);

/*
 * Work a layer above leaves for the time curl waits on the network: run
 * once, by the next wait that would sleep, after curl has sent what it
 * had to send.  Setting it again before that replaces it.
 */
typedef void (*EnrichIdleWork) (void);
extern void enrich_http_defer(EnrichIdleWork work);

#endif							/* ENRICH_TRANSPORT_H */
