/*-------------------------------------------------------------------------
 *
 * leadlex.c
 *	  LeadLex "Enrich Company": request building and answer parsing.
 *
 * POST {enrich.leadlex_url}/v1/enrich/company with a bearer key, a JSON
 * body {"domain": "..."} and an Idempotency-Key that stays the same for
 * every try of one job, so a retry after a lost answer is not charged
 * twice.  A 200 carries data.company (the result) and metadata; 409
 * no_match means "no data" and costs nothing.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "utils/builtins.h"
#include "utils/json.h"

#include "enrich.h"

/* Builds the request for a job and starts it. */
static void
leadlex_start(EnrichJob *job)
{
	StringInfoData url;
	StringInfoData body;
	struct curl_slist *h = NULL;
	char	   *auth;
	size_t		blen = strlen(enrich_leadlex_url);

	enrich_require_key(ENRICH_COMPANY);

	initStringInfo(&url);
	while (blen > 0 && enrich_leadlex_url[blen - 1] == '/')
		blen--;
	appendBinaryStringInfo(&url, enrich_leadlex_url, blen);
	appendStringInfoString(&url, "/v1/enrich/company");

	initStringInfo(&body);
	appendStringInfoString(&body, "{\"domain\":");
	escape_json(&body, job->key);
	appendStringInfoChar(&body, '}');

	auth = psprintf("Bearer %s", enrich_leadlex_api_key);
	h = enrich_http_header(h, "Authorization", auth);
	explicit_bzero(auth, strlen(auth));
	pfree(auth);
	h = enrich_http_header(h, "Content-Type", "application/json");
	h = enrich_http_header(h, "Accept", "application/json");
	h = enrich_http_header(h, "Idempotency-Key", job->idempotency_key);
	h = enrich_http_header(h, "Expect", "");

	enrich_http_start(&job->xfer, url.data, h, body.data);
	pfree(url.data);
	pfree(body.data);
}

/* Marks an outcome as a response we cannot use. */
static void
bad_shape(EnrichOutcome *out, const char *why)
{
	out->kind = OUTCOME_BAD_RESPONSE;
	out->sqlstate = ERRCODE_ENRICH_BAD_RESPONSE;
	out->message = pstrdup("LeadLex sent a response that cannot be used");
	out->detail = psprintf("%s.", why);
}

/*
 * Parses a 200 answer: data.company is the result, the rest metadata.
 * enrich_parse_response() has checked that both are objects.
 */
static void
leadlex_parse(EnrichJob *job, EnrichOutcome *out)
{
	EnrichTransfer *t = &job->xfer;
	const char *why = NULL;
	Jsonb	   *jb;
	Jsonb	   *data;
	Jsonb	   *company;
	char	   *s;

	jb = enrich_parse_response(t->body, t->body_len, RESPONSE_LEADLEX, NULL, &why);
	if (jb == NULL)
	{
		bad_shape(out, why);
		return;
	}
	data = enrich_jsonb_get(jb, "data");
	company = enrich_jsonb_get(data, "company");
	if (company == NULL)
	{
		/* cannot happen; but never an ERROR for an answer paid for */
		bad_shape(out, "the member \"data.company\" could not be read");
		return;
	}
	out->kind = OUTCOME_MATCH;
	out->result = company;
	out->source = enrich_jsonb_get_text(data, "source");
	if ((s = enrich_jsonb_get_text(data, "confidence")) != NULL)
	{
		char	   *end;
		double		c = strtod(s, &end);

		if (*end == '\0' && c >= 0.0 && c <= 1.0)
			out->confidence = c;
	}
	if ((s = enrich_jsonb_get_text(data, "credits_remaining")) != NULL)
	{
		char	   *end;
		long long	c = strtoll(s, &end, 10);

		if (*end == '\0' && c >= 0)
			out->credits_remaining = (int64) c;
	}
}

/* LeadLex behind the provider interface. */
const EnrichProviderOps enrich_leadlex_ops = {
	.start = leadlex_start,
	.parse = leadlex_parse,
	.no_match_status = 409,
};
