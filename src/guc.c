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
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/guc.h"

#include "enrich.h"

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

/* Defines every enrich.* setting; called once from _PG_init. */
void
enrich_define_gucs(void)
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
	DefineCustomStringVariable("enrich.database_name",
							   "Database the background worker serves.",
							   NULL,
							   &enrich_database_name,
							   "postgres",
							   PGC_POSTMASTER, 0,
							   NULL, NULL, NULL);
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

	MarkGUCPrefixReserved("enrich");
}
