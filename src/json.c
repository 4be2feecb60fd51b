/*-------------------------------------------------------------------------
 *
 * json.c
 *	  Provider bodies into jsonb, without ever throwing for bad input, and
 *	  the members read from them.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"

#include "base.h"

/*
 * Turns a response body into jsonb without ever throwing for bad input.
 * enrich_response_check() (response.c) first refuses, with a reason, what
 * jsonb_in would raise an ERROR for and what lacks the shape asked for;
 * its parse runs in a memory context of its own, since the JSON parser
 * leaves garbage behind when it stops at an error.  Returns NULL with *why
 * set for a refused body, and NULL with *no_match set (when no_match is
 * not NULL) for a Slintel answer without data.  body[len] must be '\0'.
 */
Jsonb *
enrich_parse_response(const char *body, size_t len, EnrichResponseShape shape,
					  bool *no_match, const char **why)
{
	MemoryContext cxt = AllocSetContextCreate(CurrentMemoryContext,
											  "enrich response check",
											  ALLOCSET_DEFAULT_SIZES);
	MemoryContext old = MemoryContextSwitchTo(cxt);
	bool		empty;

	*why = enrich_response_check(body, len, GetDatabaseEncoding(), shape, &empty);
	MemoryContextSwitchTo(old);
	MemoryContextDelete(cxt);
	if (no_match != NULL)
		*no_match = empty;
	if (*why != NULL || empty)
		return NULL;
	/* UTF-8 for a UTF-8 database, else ASCII only: no conversion needed */
	return DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(body)));
}

/* enrich_parse_response() for any JSON: error bodies, spool files. */
Jsonb *
enrich_parse_json(const char *body, size_t len, const char **why)
{
	return enrich_parse_response(body, len, RESPONSE_ANY_JSON, NULL, why);
}

/* The member `field` of a jsonb object, or NULL. */
static JsonbValue *
member(Jsonb *jb, const char *field)
{
	JsonbValue	k;

	if (jb == NULL || !JB_ROOT_IS_OBJECT(jb))
		return NULL;
	k.type = jbvString;
	k.val.string.val = (char *) field;
	k.val.string.len = strlen(field);
	return findJsonbValueFromContainer(&jb->root, JB_FOBJECT, &k);
}

/* Returns the member `field` of a jsonb object, or NULL. */
Jsonb *
enrich_jsonb_get(Jsonb *jb, const char *field)
{
	JsonbValue *v = member(jb, field);

	return v ? JsonbValueToJsonb(v) : NULL;
}

/* Returns the member `field` as text (strings unquoted), or NULL. */
char *
enrich_jsonb_get_text(Jsonb *jb, const char *field)
{
	JsonbValue *v = member(jb, field);

	if (v == NULL || v->type == jbvNull)
		return NULL;
	if (v->type == jbvString)
		return pnstrdup(v->val.string.val, v->val.string.len);
	if (v->type == jbvNumeric)
		return DatumGetCString(DirectFunctionCall1(numeric_out,
												   NumericGetDatum(v->val.numeric)));
	if (v->type == jbvBool)
		return pstrdup(v->val.boolean ? "true" : "false");
	return NULL;
}
