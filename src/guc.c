/*-------------------------------------------------------------------------
 *
 * guc.c
 *	  The enrich.* settings.
 *
 * API keys are superuser-only and hidden from everyone else
 * (GUC_SUPERUSER_ONLY keeps them out of SHOW and pg_settings); base URLs
 * and the CA file are superuser-only so that nobody else can point the
 * extension, and its keys, at another host.
 *
 * PostgreSQL itself writes a setting's new value into the server log when
 * a reload changes it ("parameter ... changed to ..."), and quotes values
 * in some errors; a log hook (enrich_log_redaction) takes the keys out of
 * every log line and error this process emits.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <curl/curl.h>

#include "miscadmin.h"
#include "tcop/tcopprot.h"
#include "utils/elog.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/varlena.h"

#include "base.h"

char	   *enrich_leadlex_url = NULL;
char	   *enrich_leadlex_api_key = NULL;
char	   *enrich_slintel_url = NULL;
char	   *enrich_slintel_api_key = NULL;
char	   *enrich_ca_file = NULL;
char	   *enrich_database_name = NULL;
int			enrich_max_concurrency = 16;
int			enrich_cache_ttl = 30 * 86400;
int			enrich_no_match_ttl = 7 * 86400;
int			enrich_connect_timeout = 5000;
int			enrich_request_timeout = 30000;
int			enrich_max_attempts = 5;
int			enrich_max_response_size = 8 * 1024;
bool		enrich_keep_alive = true;
int			enrich_queue_retention = 7 * 86400;
int			enrich_ledger_retention = 400 * 86400;
int			enrich_leadlex_overwrite = OVERWRITE_REFRESH;
char	   *enrich_leadlex_fields = NULL;

static const struct config_enum_entry overwrite_options[] = {
	{"refresh", OVERWRITE_REFRESH, false},
	{"always", OVERWRITE_ALWAYS, false},
	{"never", OVERWRITE_NEVER, false},
	{NULL, 0, false}
};

/* LeadLex's firmographic fields, in the order its document lists them. */
static const char *const leadlex_fields[] = {
	"name", "industry", "size", "founded_year", "description",
	"hq_location", "logo_url", "linkedin_url", "tech_stack"
};

/* Whether a comma-separated list of field names names field f. */
static bool
list_has_field(const char *list, const char *f)
{
	size_t		n = strlen(f);

	for (const char *p = list; p != NULL && *p != '\0';)
	{
		const char *end = strchr(p, ',');
		size_t		len = end ? (size_t) (end - p) : strlen(p);

		if (len == n && strncmp(p, f, n) == 0)
			return true;
		p = end ? end + 1 : NULL;
	}
	return false;
}

/*
 * enrich.leadlex_fields: a comma-separated subset of LeadLex's documented
 * fields (blanks around names allowed, any case), stored in a canonical
 * form: lower case, in the document's order, each once, no blanks.
 */
static bool
check_leadlex_fields(char **newval, void **extra, GucSource source)
{
	char	   *raw;
	List	   *names;
	ListCell   *lc;
	bool		want[lengthof(leadlex_fields)] = {false};
	StringInfoData canon;
	char	   *copy;

	if (*newval == NULL || (*newval)[0] == '\0')
		return true;
	raw = pstrdup(*newval);
	if (!SplitIdentifierString(raw, ',', &names))
	{
		GUC_check_errdetail("The value must be a comma-separated list of field names.");
		return false;
	}
	foreach(lc, names)
	{
		const char *name = (const char *) lfirst(lc);
		int			i;

		for (i = 0; i < lengthof(leadlex_fields); i++)
			if (pg_strcasecmp(name, leadlex_fields[i]) == 0)
				break;
		if (i == lengthof(leadlex_fields))
		{
			GUC_check_errdetail("\"%s\" is not a LeadLex field.", name);
			GUC_check_errhint("The fields are name, industry, size, founded_year, description, hq_location, logo_url, linkedin_url and tech_stack.");
			return false;
		}
		want[i] = true;
	}
	initStringInfo(&canon);
	for (int i = 0; i < lengthof(leadlex_fields); i++)
		if (want[i])
			appendStringInfo(&canon, "%s%s", canon.len > 0 ? "," : "", leadlex_fields[i]);
	copy = strdup(canon.data);
	if (copy == NULL)
	{
		GUC_check_errcode(ERRCODE_OUT_OF_MEMORY);
		return false;
	}
	free(*newval);
	*newval = copy;
	return true;
}

/*
 * Whether an answer asked for the fields `had` (canonical, NULL: all)
 * holds every field enrich.leadlex_fields asks for now.
 */
bool
enrich_leadlex_fields_cover(const char *had)
{
	const char *want = enrich_leadlex_fields;

	if (had == NULL)
		return true;
	if (want == NULL || want[0] == '\0')
		return false;
	for (int i = 0; i < lengthof(leadlex_fields); i++)
		if (list_has_field(want, leadlex_fields[i]) &&
			!list_has_field(had, leadlex_fields[i]))
			return false;
	return true;
}

/* Base URLs must be absolute http or https URLs without credentials. */
static bool
check_base_url(char **newval, void **extra, GucSource source)
{
	CURLU	   *u;
	CURLUcode	rc;
	char	   *scheme = NULL;
	char	   *user = NULL;
	char	   *query = NULL;
	bool		ok;

	if (*newval == NULL || (*newval)[0] == '\0')
	{
		GUC_check_errdetail("The URL must not be empty.");
		return false;
	}
	u = curl_url();
	if (u == NULL)
		return false;
	rc = curl_url_set(u, CURLUPART_URL, *newval, 0);
	ok = (rc == CURLUE_OK);
	if (ok)
	{
		curl_url_get(u, CURLUPART_SCHEME, &scheme, 0);
		curl_url_get(u, CURLUPART_USER, &user, 0);
		curl_url_get(u, CURLUPART_QUERY, &query, 0);
		ok = scheme != NULL &&
			(strcmp(scheme, "http") == 0 || strcmp(scheme, "https") == 0) &&
			user == NULL && query == NULL;
	}
	curl_free(scheme);
	curl_free(user);
	curl_free(query);
	curl_url_cleanup(u);
	if (!ok)
		GUC_check_errdetail("The URL must be an absolute http or https URL without user name, password or query.");
	return ok;
}

/* The providers: URLs, keys, TLS (superuser only; keys hidden). */
static void
define_provider_settings(void)
{
	DefineCustomStringVariable("enrich.leadlex_url",
							   "LeadLex API base URL.",
							   NULL,
							   &enrich_leadlex_url,
							   "https://data.leadlex.com/functions/v1/api-gateway",
							   PGC_SUSET, 0,
							   check_base_url, NULL, NULL);
	DefineCustomStringVariable("enrich.leadlex_api_key",
							   "LeadLex API key (sent as a bearer token).",
							   NULL,
							   &enrich_leadlex_api_key,
							   "",
							   PGC_SUSET,
							   GUC_SUPERUSER_ONLY | GUC_NO_SHOW_ALL | GUC_NOT_IN_SAMPLE,
							   NULL, NULL, NULL);
	DefineCustomStringVariable("enrich.slintel_url",
							   "Slintel API base URL.",
							   NULL,
							   &enrich_slintel_url,
							   "https://apiv2.slintel.com",
							   PGC_SUSET, 0,
							   check_base_url, NULL, NULL);
	DefineCustomStringVariable("enrich.slintel_api_key",
							   "Slintel API key (sent in the x-api-key header).",
							   NULL,
							   &enrich_slintel_api_key,
							   "",
							   PGC_SUSET,
							   GUC_SUPERUSER_ONLY | GUC_NO_SHOW_ALL | GUC_NOT_IN_SAMPLE,
							   NULL, NULL, NULL);
	DefineCustomStringVariable("enrich.ca_file",
							   "CA bundle used to verify the providers' TLS certificates.",
							   "Empty means the system's CA store.",
							   &enrich_ca_file,
							   "",
							   PGC_SUSET, 0,
							   NULL, NULL, NULL);
	DefineCustomEnumVariable("enrich.leadlex_overwrite",
							 "When LeadLex is asked to overwrite the fields it keeps.",
							 "refresh: when re-fetching a cached key; always; never (fill-only).",
							 &enrich_leadlex_overwrite,
							 OVERWRITE_REFRESH, overwrite_options,
							 PGC_SUSET, 0,
							 NULL, NULL, NULL);
	DefineCustomStringVariable("enrich.leadlex_fields",
							   "LeadLex fields to ask for, comma-separated.",
							   "Empty means all fields.",
							   &enrich_leadlex_fields,
							   "",
							   PGC_SUSET, GUC_LIST_INPUT,
							   check_leadlex_fields, NULL, NULL);
	/* a postmaster setting can only be defined while preloading */
	if (process_shared_preload_libraries_in_progress)
		DefineCustomStringVariable("enrich.database_name",
								   "Database the background worker serves.",
								   NULL,
								   &enrich_database_name,
								   "postgres",
								   PGC_POSTMASTER, 0,
								   NULL, NULL, NULL);
}

/* The worker, concurrency and the cache. */
static void
define_worker_settings(void)
{
	DefineCustomIntVariable("enrich.max_concurrency",
							"Requests in flight at once (worker, batch functions).",
							NULL,
							&enrich_max_concurrency,
							16, 1, 10000,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);
	DefineCustomIntVariable("enrich.cache_ttl",
							"Age after which a cached answer is stale.",
							NULL,
							&enrich_cache_ttl,
							30 * 86400, 0, INT_MAX,
							PGC_USERSET, GUC_UNIT_S,
							NULL, NULL, NULL);
	DefineCustomIntVariable("enrich.no_match_ttl",
							"How long a \"no match\" answer is remembered.",
							NULL,
							&enrich_no_match_ttl,
							7 * 86400, 0, INT_MAX,
							PGC_USERSET, GUC_UNIT_S,
							NULL, NULL, NULL);
}

/* Requests: timeouts, attempts, sizes, keep-alive; queue retention. */
static void
define_request_settings(void)
{
	DefineCustomIntVariable("enrich.connect_timeout",
							"Time limit for the TCP and TLS connect.",
							NULL,
							&enrich_connect_timeout,
							5000, 1, 3600 * 1000,
							PGC_USERSET, GUC_UNIT_MS,
							NULL, NULL, NULL);
	DefineCustomIntVariable("enrich.request_timeout",
							"Time limit for a whole request.",
							NULL,
							&enrich_request_timeout,
							30000, 1, 3600 * 1000,
							PGC_USERSET, GUC_UNIT_MS,
							NULL, NULL, NULL);
	DefineCustomIntVariable("enrich.max_attempts",
							"Tries for a transient failure (5xx, reset, timeout).",
							NULL,
							&enrich_max_attempts,
							5, 1, 100,
							PGC_USERSET, 0,
							NULL, NULL, NULL);
	DefineCustomIntVariable("enrich.max_response_size",
							"Responses larger than this are refused, not buffered.",
							NULL,
							&enrich_max_response_size,
							8 * 1024, 1, 1024 * 1024,
							PGC_SUSET, GUC_UNIT_KB,
							NULL, NULL, NULL);

	DefineCustomBoolVariable("enrich.keep_alive",
							 "Keeps provider connections open across requests.",
							 "Off opens a new connection for every request (for comparison only).",
							 &enrich_keep_alive,
							 true,
							 PGC_SUSET, 0,
							 NULL, NULL, NULL);

	DefineCustomIntVariable("enrich.queue_retention",
							"How long the worker keeps finished queue rows.",
							"0 keeps none, -1 keeps every one.",
							&enrich_queue_retention,
							7 * 86400, -1, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("enrich.ledger_retention",
							"How long the worker keeps the rows of enrich.ledger.",
							"-1 keeps every one; a row of a budget's current period is kept whatever this says.",
							&enrich_ledger_retention,
							400 * 86400, -1, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_S,
							NULL, NULL, NULL);

	MarkGUCPrefixReserved("enrich");
}

/* Defines every enrich.* setting; called once from _PG_init. */
void
enrich_define_gucs(void)
{
	define_provider_settings();
	define_worker_settings();
	define_request_settings();
}

/* ---- keeping the keys out of the log ---- */

static emit_log_hook_type prev_emit_log_hook = NULL;

static const char *const key_settings[] = {"enrich.leadlex_api_key", "enrich.slintel_api_key"};

/* Where a setting name occurs in s, case-insensitively, or NULL. */
static char *
find_setting_name(char *s, const char *name)
{
	size_t		n = strlen(name);

	for (; *s; s++)
		if (pg_strncasecmp(s, name, n) == 0)
			return s;
	return NULL;
}

/*
 * Whether the text after a setting's name goes on with a value: "changed
 * to ...", ": ...", "= ...", "TO ...", or ", ..." (set_config).
 */
static bool
value_follows(const char *rest)
{
	while (*rest == ' ')
		rest++;
	return *rest == '=' || *rest == ':' || *rest == ',' ||
		pg_strncasecmp(rest, "to ", 3) == 0 ||
		pg_strncasecmp(rest, "changed to", 10) == 0;
}

/*
 * Returns s with every occurrence of a current key replaced, and with
 * what follows the name of a key setting dropped when a value follows
 * (that is where PostgreSQL quotes one: 'parameter
 * "enrich.slintel_api_key" changed to "..."', or a statement setting it);
 * s itself when there is nothing to hide.  Allocates in the
 * current memory context.
 */
static char *
redact_text(char *s)
{
	const char *keys[2] = {enrich_leadlex_api_key, enrich_slintel_api_key};

	if (s == NULL)
		return NULL;
	for (int i = 0; i < 2; i++)
	{
		const char *k = keys[i];
		char	   *hit;

		if (k == NULL || strlen(k) < 4)
			continue;
		while ((hit = strstr(s, k)) != NULL)
			s = psprintf("%.*s********%s", (int) (hit - s), s, hit + strlen(k));
	}
	for (int i = 0; i < lengthof(key_settings); i++)
	{
		char	   *hit = find_setting_name(s, key_settings[i]);
		char	   *rest;

		if (hit == NULL)
			continue;
		rest = hit + strlen(key_settings[i]);
		if (*rest == '"' || *rest == '\'')
			rest++;
		if (value_follows(rest))
			s = psprintf("%.*s (value hidden)", (int) (rest - s), s);
	}
	return s;
}

/* Whether a statement's text shows a key or sets one. */
static bool
statement_shows_key(const char *q)
{
	const char *keys[2] = {enrich_leadlex_api_key, enrich_slintel_api_key};

	if (q == NULL)
		return false;
	for (int i = 0; i < 2; i++)
		if (keys[i] != NULL && strlen(keys[i]) >= 4 && strstr(q, keys[i]) != NULL)
			return true;
	for (int i = 0; i < lengthof(key_settings); i++)
		if (find_setting_name((char *) q, key_settings[i]) != NULL)
			return true;
	return false;
}

/* emit_log_hook: no key reaches the server log or an error message. */
static void
enrich_emit_log_hook(ErrorData *edata)
{
	MemoryContext old = MemoryContextSwitchTo(ErrorContext);

	edata->message = redact_text(edata->message);
	edata->detail = redact_text(edata->detail);
	edata->detail_log = redact_text(edata->detail_log);
	edata->hint = redact_text(edata->hint);
	edata->context = redact_text(edata->context);
	edata->internalquery = redact_text(edata->internalquery);
	if (statement_shows_key(debug_query_string))
		edata->hide_stmt = true;
	MemoryContextSwitchTo(old);
	if (prev_emit_log_hook)
		prev_emit_log_hook(edata);
}

/* Installs the log hook; called once per process from _PG_init. */
void
enrich_install_log_redaction(void)
{
	prev_emit_log_hook = emit_log_hook;
	emit_log_hook = enrich_emit_log_hook;
}
