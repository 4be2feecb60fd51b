/*-------------------------------------------------------------------------
 *
 * http.c
 *	  One HTTP transfer: its easy handle, options and headers, the callbacks
 *	  that fill its response, and its start and release.
 *
 * A transfer is started on this backend's multi handle (http_wait.c), which
 * owns the connection cache, so connections to a provider stay alive
 * across calls (and HTTP/2 streams are multiplexed when the provider
 * offers it).  Sockets are counted with PostgreSQL's own file-descriptor
 * bookkeeping (AcquireExternalFD) so that many connections never starve
 * the backend of descriptors.
 *
 * Callbacks never palloc and never ereport: libcurl is C code that must
 * not be longjmp'd out of.  They only fill malloc'd buffers and plain
 * fields, which the caller turns into Datums after the transfer.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "storage/fd.h"

#include "transport.h"
#include "http_int.h"

#if LIBCURL_VERSION_NUM < 0x074400
#error "enrich needs libcurl 7.68.0 or later"
#endif

/* First allocation for a response body without a Content-Length. */
#define BODY_INITIAL_SIZE 2048

/*
 * Whether a request to this provider may start now as far as connections
 * go: while we do not know whether it multiplexes, only when none of its
 * requests is in flight.
 */
bool
enrich_http_may_start(EnrichKind kind)
{
	return enrich_http_state.provider_proto[kind] != 0 ||
		enrich_http_state.nactive_kind[kind] == 0 || !enrich_keep_alive;
}

/*
 * Requests in flight allowed at once: enrich.max_concurrency, capped by
 * the sockets PostgreSQL's descriptor budget lets this process open
 * (external descriptors may use a third of max_safe_fds).  The cap is
 * logged once per value, not per request.
 */
int
enrich_http_concurrency(void)
{
	static int	warned_for = 0;
	int			cap = Max(max_safe_fds / 3 - 4, 1);
	int			n = enrich_max_concurrency;

	if (n > cap)
	{
		if (warned_for != n)
			ereport(LOG,
					(errmsg("enrich.max_concurrency = %d exceeds the %d connections the open-file limit allows; using %d",
							n, cap, cap),
					 errhint("Raise max_files_per_process or the server's open-file limit (ulimit -n).")));
		warned_for = n;
		n = cap;
	}
	return n;
}

/* Opens a socket only if PostgreSQL's descriptor budget allows one more. */
static curl_socket_t
open_socket_cb(void *arg, curlsocktype purpose, struct curl_sockaddr *addr)
{
	curl_socket_t s;

	if (!AcquireExternalFD())
	{
		errno = EMFILE;
		return CURL_SOCKET_BAD;
	}
	s = socket(addr->family, addr->socktype, addr->protocol);
	if (s == CURL_SOCKET_BAD)
		ReleaseExternalFD();
	return s;
}

/* Closes a socket opened by open_socket_cb and returns its descriptor. */
static int
close_socket_cb(void *arg, curl_socket_t s)
{
	int			rc = close(s);

	ReleaseExternalFD();
	enrich_http_socket_closed();
	return rc;
}

/* Appends response bytes; refuses (stopping the transfer) past the limit. */
static size_t
write_cb(char *data, size_t size, size_t nmemb, void *arg)
{
	EnrichTransfer *t = (EnrichTransfer *) arg;
	size_t		n = size * nmemb;

	if (t->body_len + n > t->body_limit)
	{
		t->too_large = true;
		return 0;
	}
	if (t->body_len + n + 1 > t->body_cap)
	{
		curl_off_t	clen = -1;
		size_t		cap = t->body_cap * 2;
		char	   *nb;

		/* the first allocation fits the announced length, if sensible */
		if (t->body_cap == 0)
		{
			curl_easy_getinfo(t->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &clen);
			cap = (clen > 0 && (size_t) clen < t->body_limit) ? (size_t) clen + 1 : BODY_INITIAL_SIZE;
		}
		while (cap < t->body_len + n + 1)
			cap *= 2;
		nb = realloc(t->body, cap);
		if (nb == NULL)
			return 0;
		t->body = nb;
		t->body_cap = cap;
	}
	memcpy(t->body + t->body_len, data, n);
	t->body_len += n;
	t->body[t->body_len] = '\0';
	return n;
}

/*
 * Picks out request id, content type, rate-limit and Retry-After headers;
 * enrich_header_parse() (response.c) reads them without ever throwing.
 */
static size_t
header_cb(char *line, size_t size, size_t nmemb, void *arg)
{
	EnrichTransfer *t = (EnrichTransfer *) arg;
	size_t		len = size * nmemb;
	EnrichHeader h;

	switch (enrich_header_parse(line, len, (int64) time(NULL), &h))
	{
		case ENRICH_HEADER_STATUS:
			/* a new status line (after 100-continue or a retry) starts afresh */
			t->request_id[0] = '\0';
			t->content_type[0] = '\0';
			t->rl_limit = t->rl_remaining = t->rl_reset = t->retry_after = -1;
			break;
		case ENRICH_HEADER_REQUEST_ID:
			strlcpy(t->request_id, h.text, sizeof(t->request_id));
			break;
		case ENRICH_HEADER_CONTENT_TYPE:
			strlcpy(t->content_type, h.text, sizeof(t->content_type));
			break;
		case ENRICH_HEADER_RL_LIMIT:
			t->rl_limit = h.number;
			break;
		case ENRICH_HEADER_RL_REMAINING:
			t->rl_remaining = h.number;
			break;
		case ENRICH_HEADER_RL_RESET:
			t->rl_reset = h.number;
			break;
		case ENRICH_HEADER_RETRY_AFTER:
			t->retry_after = h.number;
			break;
		case ENRICH_HEADER_OTHER:
			break;
	}
	return len;
}

/* Adds "Name: value" to a header list; values are checked for CR/LF. */
struct curl_slist *
enrich_http_header(struct curl_slist *list, const char *name, const char *value)
{
	char	   *line;
	struct curl_slist *nl;

	if (strpbrk(value, "\r\n") != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid value for HTTP header \"%s\"", name),
				 errdetail("Header values must not contain line breaks.")));
	line = psprintf("%s: %s", name, value);
	nl = curl_slist_append(list, line);
	/* curl copied the string; wipe ours, it may hold a key */
	explicit_bzero(line, strlen(line));
	pfree(line);
	if (nl == NULL)
	{
		curl_slist_free_all(list);
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory")));
	}
	return nl;
}

/* Sets the options every provider request shares. */
static void
set_common_options(EnrichTransfer *t)
{
	CURL	   *e = t->easy;

	curl_easy_setopt(e, CURLOPT_PRIVATE, t);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_USERAGENT, ENRICH_USER_AGENT);
#if LIBCURL_VERSION_NUM >= 0x075500
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
#else
	curl_easy_setopt(e, CURLOPT_PROTOCOLS, (long) (CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
	curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
	/*
	 * HTTP/2 where it pays: LeadLex, whose retries are free (Idempotency-
	 * Key).  Slintel charges every answer, retries included, and allows
	 * only a few requests at once anyway: HTTP/1.1 keep-alive, one request
	 * per connection, so that a multiplexed session torn down by the
	 * server (a GOAWAY under load, which libcurl 7.88 reports as failures
	 * of streams the server had answered) never costs a second charge.
	 */
	if (t->kind == ENRICH_COMPANY)
	{
		curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long) CURL_HTTP_VERSION_2TLS);
		curl_easy_setopt(e, CURLOPT_PIPEWAIT, 1L);
	}
	else
	{
		/* no ALPN either: Slintel's connections stay apart from LeadLex's */
		curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long) CURL_HTTP_VERSION_1_1);
		curl_easy_setopt(e, CURLOPT_SSL_ENABLE_ALPN, 0L);
	}
	curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
	curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
	if (enrich_ca_file && enrich_ca_file[0] != '\0')
		curl_easy_setopt(e, CURLOPT_CAINFO, enrich_ca_file);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long) enrich_connect_timeout);
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long) enrich_request_timeout);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, t->errbuf);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, t);
	curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, header_cb);
	curl_easy_setopt(e, CURLOPT_HEADERDATA, t);
	curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, open_socket_cb);
	curl_easy_setopt(e, CURLOPT_CLOSESOCKETFUNCTION, close_socket_cb);
	curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t) t->body_limit);
	curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
	if (!enrich_keep_alive)
	{
		curl_easy_setopt(e, CURLOPT_FRESH_CONNECT, 1L);
		curl_easy_setopt(e, CURLOPT_FORBID_REUSE, 1L);
	}
}

/*
 * Starts one request on the session's multi handle.  url, headers and
 * post_body are taken over: they are freed by enrich_http_release().
 */
void
enrich_http_start(EnrichTransfer *t, const char *url,
				  struct curl_slist *headers, const char *post_body)
{
	CURLM	   *multi = enrich_http_multi();
	CURLMcode	mc;

	/* room to queue it once finished: collecting it must never fail */
	enrich_http_done_reserve();
	enrich_http_release(t);
	t->headers = headers;
	t->url = strdup(url);
	t->post_body = post_body ? strdup(post_body) : NULL;
	t->body_limit = (size_t) enrich_max_response_size * 1024;
	t->body_len = 0;
	t->too_large = false;
	t->status = 0;
	t->result = CURLE_OK;
	t->errbuf[0] = '\0';
	t->request_id[0] = '\0';
	t->content_type[0] = '\0';
	t->rl_limit = t->rl_remaining = t->rl_reset = t->retry_after = -1;
	t->elapsed = 0;
	t->easy = curl_easy_init();
	if (t->easy == NULL || t->url == NULL || (post_body && t->post_body == NULL))
	{
		enrich_http_release(t);
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory"),
				 errdetail("Could not set up an HTTP request.")));
	}
	set_common_options(t);
	curl_easy_setopt(t->easy, CURLOPT_URL, t->url);
	curl_easy_setopt(t->easy, CURLOPT_HTTPHEADER, t->headers);
	if (t->post_body)
	{
		curl_easy_setopt(t->easy, CURLOPT_POSTFIELDS, t->post_body);
		curl_easy_setopt(t->easy, CURLOPT_POSTFIELDSIZE, (long) strlen(t->post_body));
	}
	else
		curl_easy_setopt(t->easy, CURLOPT_HTTPGET, 1L);

	mc = curl_multi_add_handle(multi, t->easy);
	if (mc != CURLM_OK)
	{
		enrich_http_release(t);
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not start an HTTP request: %s", curl_multi_strerror(mc))));
	}
	t->in_multi = true;
	enrich_http_state.nactive++;
	enrich_http_state.nactive_kind[t->kind]++;
}

/* How many transfers are on this backend's multi handle. */
int
enrich_http_active(void)
{
	return enrich_http_state.nactive;
}

/* Frees everything curl or our callbacks allocated for this transfer. */
void
enrich_http_release(EnrichTransfer *t)
{
	enrich_http_forget_done(t);
	if (t->easy)
	{
		if (t->in_multi && enrich_http_state.multi)
		{
			curl_multi_remove_handle(enrich_http_state.multi, t->easy);
			enrich_http_state.nactive--;
			enrich_http_state.nactive_kind[t->kind]--;
		}
		curl_easy_cleanup(t->easy);
		t->easy = NULL;
	}
	t->in_multi = false;
	if (t->headers)
	{
		/* the list may hold an API key: wipe before freeing */
		for (struct curl_slist *h = t->headers; h; h = h->next)
			explicit_bzero(h->data, strlen(h->data));
		curl_slist_free_all(t->headers);
		t->headers = NULL;
	}
	free(t->url);
	t->url = NULL;
	free(t->post_body);
	t->post_body = NULL;
	free(t->body);
	t->body = NULL;
	t->body_len = t->body_cap = 0;
}
