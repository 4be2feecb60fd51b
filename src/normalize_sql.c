/*-------------------------------------------------------------------------
 *
 * normalize_sql.c
 *	  The normalisers as SQL and the backend sees them: the SQL functions
 *	  enrich.normalize_domain() and enrich.normalize_linkedin_url(), the
 *	  key of either kind, and the 22023 error an invalid input raises.
 *
 * The normalisers themselves (normalize.c, normalize_domain.c,
 * normalize_linkedin.c) never throw and also build as frontend code for
 * the fuzz harness; this file is backend only.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <curl/curl.h>

#include "fmgr.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"

#include "normalize.h"
#include "base.h"

PG_FUNCTION_INFO_V1(normalize_domain);
PG_FUNCTION_INFO_V1(normalize_linkedin_url);

/* Characters of the input shown in an error message. */
#define NORM_SHOWN_CHARS		100


/*
 * Normalises the key of either kind of enrichment: see
 * enrich_normalize_domain_str() and enrich_normalize_linkedin_str().
 */
char *
enrich_normalize_key(EnrichKind kind, const char *input, const char **reason)
{
	if (kind == ENRICH_COMPANY)
		return enrich_normalize_domain_str(input, reason);
	return enrich_normalize_linkedin_str(input, reason);
}

/*
 * Makes an input safe to quote in an error message: at most 100 characters
 * (then "..."), and control characters, C1 controls and Unicode line
 * separators written as escapes, so that hostile input cannot forge log
 * lines.  Takes and returns the server encoding.
 */
static char *
norm_shown_input(const char *input)
{
	int			len = strlen(input);
	int			clip = pg_mbcharcliplen(input, len, NORM_SHOWN_CHARS);
	bool		utf8 = GetDatabaseEncoding() == PG_UTF8;
	StringInfoData buf;
	int			i;

	initStringInfo(&buf);
	for (i = 0; i < clip; i++)
	{
		const unsigned char *p = (const unsigned char *) input + i;

		if (*p < 0x20 || *p == 0x7F)
			appendStringInfo(&buf, "\\x%02X", *p);
		else if (utf8 && i + 1 < clip && p[0] == 0xC2 && p[1] <= 0x9F)
		{
			appendStringInfo(&buf, "\\u%04X", p[1]);
			i += 1;
		}
		else if (utf8 && i + 2 < clip && p[0] == 0xE2 && p[1] == 0x80 &&
				 (p[2] == 0xA8 || p[2] == 0xA9))
		{
			appendStringInfo(&buf, "\\u%04X", 0x2000 + (p[2] & 0x3F));
			i += 2;
		}
		else
			appendStringInfoChar(&buf, (char) *p);
	}
	if (clip < len)
		appendStringInfoString(&buf, "...");
	return buf.data;
}

/* The argument of a SQL normaliser as a UTF-8 C string. */
static char *
norm_arg_utf8(text *arg, char **server)
{
	*server = text_to_cstring(arg);
	return pg_server_to_any(*server, strlen(*server), PG_UTF8);
}

/*
 * Normalises a text argument of either kind (converted to UTF-8 first).
 * On NULL return, *input is the argument in the server encoding, for
 * enrich_report_invalid().
 */
char *
enrich_normalize_text(EnrichKind kind, text *arg, char **input, const char **reason)
{
	char	   *utf8 = norm_arg_utf8(arg, input);

	return enrich_normalize_key(kind, utf8, reason);
}

/*
 * Raises the error for an input that could not be normalised: 22023 for
 * invalid input, or the error of the system when the input could not be
 * checked at all.
 */
void
enrich_report_invalid(EnrichKind kind, const char *input, const char *reason)
{
	bool		linkedin = (kind == ENRICH_LEAD);

	if (reason == enrich_norm_no_memory)
		ereport(ERROR,
				errcode(ERRCODE_OUT_OF_MEMORY),
				errmsg("out of memory"));
	if (reason == enrich_norm_no_psl)
		ereport(ERROR,
				errcode(ERRCODE_UNDEFINED_FILE),
				errmsg("could not load the Public Suffix List"),
				errhint("Install the publicsuffix package, or a libpsl built with its own copy of the list."));
	if (linkedin)
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("invalid LinkedIn profile URL: \"%s\"",
					   norm_shown_input(input)),
				errdetail("The input %s.", reason));
	ereport(ERROR,
			errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			errmsg("invalid domain: \"%s\"", norm_shown_input(input)),
			errdetail("The input %s.", reason));
}

/*
 * enrich.normalize_domain(text) RETURNS text
 *
 * The registrable domain of a domain name, URL or e-mail address; raises
 * 22023 for invalid input.
 */
Datum
normalize_domain(PG_FUNCTION_ARGS)
{
	char	   *input;
	char	   *utf8 = norm_arg_utf8(PG_GETARG_TEXT_PP(0), &input);
	const char *reason;
	char	   *result = enrich_normalize_domain_str(utf8, &reason);

	if (result == NULL)
		enrich_report_invalid(ENRICH_COMPANY, input, reason);
	PG_RETURN_TEXT_P(cstring_to_text(result));
}

/*
 * enrich.normalize_linkedin_url(text) RETURNS text
 *
 * The canonical https://www.linkedin.com/in/<slug> form of a LinkedIn
 * profile URL; raises 22023 for invalid input.
 */
Datum
normalize_linkedin_url(PG_FUNCTION_ARGS)
{
	char	   *input;
	char	   *utf8 = norm_arg_utf8(PG_GETARG_TEXT_PP(0), &input);
	const char *reason;
	char	   *result = enrich_normalize_linkedin_str(utf8, &reason);

	if (result == NULL)
		enrich_report_invalid(ENRICH_LEAD, input, reason);
	PG_RETURN_TEXT_P(cstring_to_text(result));
}
