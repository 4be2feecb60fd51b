/*-------------------------------------------------------------------------
 *
 * http_int.h
 *	  What the two files of the HTTP transport share: http.c (one transfer)
 *	  and http_wait.c (the multi handle and the waiting).  Included only by
 *	  those two.
 *
 * IDENTIFICATION
 *	  src/http_int.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef HTTP_INT_H
#define HTTP_INT_H

#include "transport.h"

/* This backend's transfers, counted by both files. */
typedef struct EnrichHttpState
{
	CURLM	   *multi;			/* NULL until enrich_http_multi() */
	int			nactive;		/* transfers on the multi handle */
	int			nactive_kind[ENRICH_NUM_KINDS];

	/*
	 * What each provider speaks, learnt from its answers: 0 not known yet,
	 * 1 HTTP/1.x, 2 HTTP/2.  Until it is known, one request at a time goes
	 * to it, so that the others can share the connection the first one
	 * opens if the provider multiplexes (libcurl 7.88 opens a connection
	 * per request started meanwhile, despite CURLOPT_PIPEWAIT).
	 */
	int			provider_proto[ENRICH_NUM_KINDS];
} EnrichHttpState;

/* ---- http_wait.c ---- */
extern EnrichHttpState enrich_http_state;

extern void enrich_http_done_reserve(void);
extern void enrich_http_forget_done(EnrichTransfer *t);
extern void enrich_http_socket_closed(void);

#endif							/* HTTP_INT_H */
