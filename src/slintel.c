/*-------------------------------------------------------------------------
 *
 * slintel.c
 *	  Slintel "Enrich Lead on LinkedIn Url": request building and parsing.
 *
 * GET {enrich.slintel_url}/v2.0/lead/enrich?linkedin_url=<encoded URL>
 * with the key in the x-api-key header (never in the URL).  A 200 carries
 * the lead in "data"; 404 or empty data means no match.  Slintel charges
 * every successful response, repeats included, and has no idempotency,
 * which is why the cache is the only protection against paying twice.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "providers.h"

/* Builds the request for a job and starts it. */
static void
slintel_start(EnrichJob *job)
{
	StringInfoData url;
	struct curl_slist *h = NULL;
	char	   *enc;
	size_t		blen = strlen(enrich_slintel_url);

	enrich_require_key(ENRICH_LEAD);

	enc = curl_easy_escape(NULL, job->key, 0);
	if (enc == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory")));
	initStringInfo(&url);
	while (blen > 0 && enrich_slintel_url[blen - 1] == '/')
		blen--;
	appendBinaryStringInfo(&url, enrich_slintel_url, blen);
	appendStringInfo(&url, "/v2.0/lead/enrich?linkedin_url=%s", enc);
	curl_free(enc);

	h = enrich_http_header(h, "x-api-key", enrich_slintel_api_key);
	h = enrich_http_header(h, "Accept", "application/json");

	enrich_http_start(&job->xfer, url.data, h, NULL);
	pfree(url.data);
}

/* Marks an outcome as a response we cannot use. */
static void
bad_shape(EnrichOutcome *out, const char *why)
{
	out->kind = OUTCOME_BAD_RESPONSE;
	out->sqlstate = ERRCODE_ENRICH_BAD_RESPONSE;
	out->message = pstrdup("Slintel sent a response that cannot be used");
	out->detail = psprintf("%s.", why);
}

/*
 * Parses a 200 answer: "data" is the lead; null or empty data is no match.
 * enrich_parse_response() has checked that data is one or the other.
 */
static void
slintel_parse(EnrichJob *job, EnrichOutcome *out)
{
	EnrichTransfer *t = &job->xfer;
	const char *why = NULL;
	bool		no_match;
	Jsonb	   *jb;

	jb = enrich_parse_response(t->body, t->body_len, RESPONSE_SLINTEL,
							   &no_match, &why);
	if (no_match)
		out->kind = OUTCOME_NO_MATCH;
	else if (jb == NULL)
		bad_shape(out, why);
	else if ((out->result = enrich_jsonb_get(jb, "data")) == NULL)
	{
		/* cannot happen; but never an ERROR for an answer paid for */
		bad_shape(out, "the member \"data\" could not be read");
	}
	else
		out->kind = OUTCOME_MATCH;
}

/* Slintel behind the provider interface. */
const EnrichProviderOps enrich_slintel_ops = {
	.start = slintel_start,
	.parse = slintel_parse,
	.no_match_status = 404,
};
