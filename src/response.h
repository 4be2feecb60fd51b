/*-------------------------------------------------------------------------
 *
 * response.h
 *	  Checks of provider response bodies (response.c) and parsing of
 *	  response headers (response_headers.c), usable in the backend and in a
 *	  frontend program (the fuzz harness).
 *
 * Include postgres.h (backend) or postgres_fe.h (frontend) first.
 *
 * IDENTIFICATION
 *	  src/response.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef ENRICH_RESPONSE_H
#define ENRICH_RESPONSE_H

/* Responses nested deeper than this are refused before parsing. */
#define ENRICH_MAX_JSON_DEPTH 512

/* What a response body must hold, besides JSON that jsonb_in accepts. */
typedef enum EnrichResponseShape
{
	RESPONSE_ANY_JSON = 0,		/* error bodies, spool files */
	RESPONSE_LEADLEX,			/* LeadLex 200: {"data": {"company": {...}}} */
	RESPONSE_SLINTEL,			/* Slintel 200: {"data": {...}}; null, {} or
								 * [] is no match */
} EnrichResponseShape;

extern const char *enrich_response_check(const char *body, size_t len,
										 int encoding,
										 EnrichResponseShape shape,
										 bool *no_match);

/* The response headers enrich reads, as told by enrich_header_parse(). */
typedef enum EnrichHeaderKind
{
	ENRICH_HEADER_OTHER = 0,	/* a header enrich does not read */
	ENRICH_HEADER_STATUS,		/* a status line: a new response starts */
	ENRICH_HEADER_REQUEST_ID,	/* X-Request-ID (text) */
	ENRICH_HEADER_CONTENT_TYPE, /* Content-Type (text) */
	ENRICH_HEADER_RL_LIMIT,		/* X-RateLimit-Limit (number) */
	ENRICH_HEADER_RL_REMAINING, /* X-RateLimit-Remaining (number) */
	ENRICH_HEADER_RL_RESET,		/* X-RateLimit-Reset (number) */
	ENRICH_HEADER_RETRY_AFTER,	/* Retry-After (seconds from now) */
} EnrichHeaderKind;

/* Room for a text header value, with its terminating NUL. */
#define ENRICH_HEADER_TEXT_SIZE 80

/*
 * Header numbers above this are treated as not sent: callers multiply
 * them by 1000 (milliseconds) or 1000000 (timestamps) without overflow.
 */
#define ENRICH_HEADER_MAX_NUMBER INT64CONST(10000000000)

/* One parsed header line. */
typedef struct EnrichHeader
{
	EnrichHeaderKind kind;
	/* text headers: trimmed, clipped, printable ASCII only */
	char		text[ENRICH_HEADER_TEXT_SIZE];
	/* number headers: 0 .. ENRICH_HEADER_MAX_NUMBER, or -1 */
	int64		number;
} EnrichHeader;

extern EnrichHeaderKind enrich_header_parse(const char *line, size_t len,
											int64 now, EnrichHeader *h);
extern int64 enrich_http_date(const char *s, size_t len);

#endif							/* ENRICH_RESPONSE_H */
