/*-------------------------------------------------------------------------
 *
 * leadlex.c
 *	  LeadLex "Enrich Company": request building and answer parsing.
 *
 * POST {enrich.leadlex_url}/v1/enrich/company with a bearer key, a JSON
 * body {"domain": "..."} (or {"company_id": "..."}) and an Idempotency-Key
 * that stays the same for every try of one job, so a retry after a lost
 * answer is not charged twice.  A 200 carries data.company (the result)
 * and metadata; 409 no_match means "no data" and costs nothing; 404
 * not_found answers an unknown company id.
 *
 * LeadLex enriches a company record it keeps in the workspace, fill-only
 * unless asked to overwrite: a re-fetch of a cached key (a refresh, a
 * stale answer) sends "overwrite": true, or the workspace would hand back
 * the record it already holds (enrich.leadlex_overwrite).  The "fields"
 * whitelist comes from enrich.leadlex_fields.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "utils/builtins.h"
#include "utils/json.h"

#include "providers.h"

/*
 * Fixes what a job asks besides its key, once: the same for every try, so
 * that a retry is the same request under the same Idempotency-Key.
 */
static void
leadlex_prepare(EnrichJob *job)
{
	if (job->prepared)
		return;
	job->overwrite = enrich_leadlex_overwrite == OVERWRITE_ALWAYS ||
		(enrich_leadlex_overwrite == OVERWRITE_REFRESH && job->refetch);
	job->fields = (enrich_leadlex_fields && enrich_leadlex_fields[0] != '\0') ?
		pstrdup(enrich_leadlex_fields) : NULL;
	job->prepared = true;
}

/* Appends the JSON body of a job's request. */
static void
leadlex_body(EnrichJob *job, StringInfo body)
{
	appendStringInfoString(body, job->by_id ? "{\"company_id\":" : "{\"domain\":");
	escape_json(body, job->key);
	if (job->fields != NULL)
	{
		char	   *list = pstrdup(job->fields);
		char	   *save = NULL;
		bool		first = true;

		appendStringInfoString(body, ",\"fields\":[");
		for (char *f = strtok_r(list, ",", &save); f != NULL; f = strtok_r(NULL, ",", &save))
		{
			if (!first)
				appendStringInfoChar(body, ',');
			escape_json(body, f);
			first = false;
		}
		appendStringInfoChar(body, ']');
		pfree(list);
	}
	if (job->overwrite)
		appendStringInfoString(body, ",\"overwrite\":true");
	appendStringInfoChar(body, '}');
}

/*
 * What a job's request says besides its domain, for its Idempotency-Key:
 * nothing for a plain first fetch.
 */
static void
leadlex_describe(EnrichJob *job, StringInfo buf)
{
	leadlex_prepare(job);
	if (job->by_id)
		appendStringInfoString(buf, "company_id;");
	if (job->fields != NULL)
		appendStringInfo(buf, "fields=%s;", job->fields);
	if (job->overwrite)
		appendStringInfoString(buf, "overwrite;");
}

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

	leadlex_prepare(job);
	initStringInfo(&body);
	leadlex_body(job, &body);

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
	out->fields = job->fields;
	out->fields_updated = enrich_jsonb_get(data, "fields_updated");
	if (out->fields_updated != NULL &&
		(!JB_ROOT_IS_ARRAY(out->fields_updated) || JB_ROOT_IS_SCALAR(out->fields_updated)))
		out->fields_updated = NULL;
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

/* A 404 to a request by company id: LeadLex has no such record. */
static void
leadlex_refine(EnrichJob *job, EnrichOutcome *out)
{
	if (!job->by_id || out->http_status != 404)
		return;
	out->kind = OUTCOME_REJECTED;
	out->sqlstate = ERRCODE_ENRICH_NOT_FOUND;
	out->message = psprintf("LeadLex has no company with id \"%s\"", job->key);
	out->hint = pstrdup("A company id is the \"id\" of an earlier LeadLex answer in the same workspace; nothing was charged.");
}

/* LeadLex behind the provider interface. */
const EnrichProviderOps enrich_leadlex_ops = {
	.start = leadlex_start,
	.parse = leadlex_parse,
	.no_match_status = 409,
	.describe = leadlex_describe,
	.refine = leadlex_refine,
	.charges_per_key = true,
};
