/*-------------------------------------------------------------------------
 *
 * http.c
 *	  HTTP transport over libcurl's multi interface.
 *
 * Each backend keeps one curl multi handle for its lifetime.  The multi
 * handle owns the connection cache, so connections to a provider stay
 * alive across calls (and HTTP/2 streams are multiplexed when the provider
 * offers it).  Sockets are counted with PostgreSQL's own file-descriptor
 * bookkeeping (AcquireExternalFD) so that many connections never starve
 * the backend of descriptors.
 *
 * Waiting is event-driven, with curl's socket interface: curl tells us
 * which sockets to watch (socket callback) and when it next needs to run
 * (timer callback); we wait on those sockets and the process latch in one
 * WaitEventSet, and hand curl exactly the sockets that are ready.  So a
 * cancel, a terminate or new work wakes the wait at once, and the cost of
 * a wake-up does not grow with the number of requests in flight.
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

#include "miscadmin.h"
#include "pgstat.h"
#include "storage/fd.h"
#include "storage/latch.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "enrich.h"

#if LIBCURL_VERSION_NUM < 0x074400
#error "enrich needs libcurl 7.68.0 or later"
#endif

/* First allocation for a response body without a Content-Length. */
#define BODY_INITIAL_SIZE 2048

/* Streams one HTTP/2 connection may carry, if the provider allows. */
#define MAX_STREAMS_PER_CONNECTION 256

static CURLM *enrich_multi = NULL;
static int	nactive = 0;			/* transfers on the multi handle */
static int	nactive_kind[ENRICH_NUM_KINDS];

/*
 * What each provider speaks, learnt from its answers: 0 not known yet, 1
 * HTTP/1.x, 2 HTTP/2.  Until it is known, one request at a time goes to
 * it, so that the others can share the connection the first one opens if
 * the provider multiplexes (libcurl 7.88 opens a connection per request
 * started meanwhile, despite CURLOPT_PIPEWAIT).
 */
static int	provider_proto[ENRICH_NUM_KINDS];

/* A socket curl asked us to watch, and for what (CURL_POLL_*). */
typedef struct HttpSocket
{
	curl_socket_t fd;
	int			what;
} HttpSocket;

static HttpSocket *watched = NULL;	/* malloc'd: filled inside curl */
static int	nwatched = 0;
static int	maxwatched = 0;
static bool watched_changed = true;
static WaitEventSet *wait_set = NULL;
static WaitEvent *wait_events = NULL;
static int	wait_set_size = 0;
static TimestampTz curl_due = -1;	/* when curl wants to run; -1: never */

/*
 * Transfers curl has finished and detached, not yet handed to the caller
 * (enrich_http_next_done), oldest first.  curl often finishes a transfer
 * inside the call that runs its timer or a socket action -- over a fast
 * link it sends the request and reads the whole answer there -- and after
 * that no socket event or timer will ever announce it: whoever waits must
 * first see this queue.  Room for every transfer on the multi handle is
 * made when it starts, so collecting one never allocates.
 */
static EnrichTransfer **done_queue = NULL;	/* in TopMemoryContext */
static int	ndone = 0;
static int	done_queue_size = 0;

static void collect_finished(void);
static void forget_finished(EnrichTransfer *t);

/* Initialises libcurl once per process. */
void
enrich_http_init(void)
{
	static bool done = false;

	if (done)
		return;
	if (curl_global_init(CURL_GLOBAL_ALL) != CURLE_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not initialise libcurl")));
	done = true;
}

/*
 * curl's socket callback: remembers which sockets to watch for what.  Runs
 * inside curl, so it only touches malloc'd memory and never throws.
 */
static int
socket_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
	int			i;

	for (i = 0; i < nwatched; i++)
		if (watched[i].fd == fd)
			break;
	if (what == CURL_POLL_REMOVE)
	{
		if (i < nwatched)
			watched[i] = watched[--nwatched];
	}
	else
	{
		if (i == nwatched)
		{
			if (nwatched == maxwatched)
			{
				int			n = Max(maxwatched * 2, 16);
				HttpSocket *w = realloc(watched, sizeof(HttpSocket) * n);

				if (w == NULL)
					return -1;
				watched = w;
				maxwatched = n;
			}
			watched[nwatched++].fd = fd;
		}
		watched[i].what = what;
	}
	watched_changed = true;
	return 0;
}

/* curl's timer callback: when curl next needs to run (-1: no need). */
static int
timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
	curl_due = timeout_ms < 0 ? -1 :
		TimestampTzPlusMilliseconds(GetCurrentTimestamp(), timeout_ms);
	return 0;
}

/* Returns this backend's multi handle, creating it on first use. */
CURLM *
enrich_http_multi(void)
{
	if (enrich_multi == NULL)
	{
		enrich_http_init();
		enrich_multi = curl_multi_init();
		if (enrich_multi == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_OUT_OF_MEMORY),
					 errmsg("out of memory"),
					 errdetail("Could not create a libcurl multi handle.")));
		curl_multi_setopt(enrich_multi, CURLMOPT_PIPELINING, (long) CURLPIPE_MULTIPLEX);
		curl_multi_setopt(enrich_multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
		curl_multi_setopt(enrich_multi, CURLMOPT_TIMERFUNCTION, timer_cb);
	}
	/* keep enough idle connections for a full batch */
	curl_multi_setopt(enrich_multi, CURLMOPT_MAXCONNECTS,
					  (long) Max(enrich_max_concurrency, 4));
	curl_multi_setopt(enrich_multi, CURLMOPT_MAX_CONCURRENT_STREAMS,
					  (long) MAX_STREAMS_PER_CONNECTION);

	return enrich_multi;
}

/*
 * Whether a request to this provider may start now as far as connections
 * go: while we do not know whether it multiplexes, only when none of its
 * requests is in flight.
 */
bool
enrich_http_may_start(EnrichKind kind)
{
	return provider_proto[kind] != 0 || nactive_kind[kind] == 0 || !enrich_keep_alive;
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
	if (nactive + ndone + 1 > done_queue_size)
	{
		int			n = Max(done_queue_size * 2, Max(nactive + ndone + 1, 16));

		done_queue = done_queue == NULL ?
			MemoryContextAlloc(TopMemoryContext, sizeof(EnrichTransfer *) * n) :
			repalloc(done_queue, sizeof(EnrichTransfer *) * n);
		done_queue_size = n;
	}
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
	nactive++;
	nactive_kind[t->kind]++;
}

/* How many transfers are on this backend's multi handle. */
int
enrich_http_active(void)
{
	return nactive;
}

/* Frees everything curl or our callbacks allocated for this transfer. */
void
enrich_http_release(EnrichTransfer *t)
{
	if (ndone > 0)
		forget_finished(t);
	if (t->easy)
	{
		if (t->in_multi && enrich_multi)
		{
			curl_multi_remove_handle(enrich_multi, t->easy);
			nactive--;
			nactive_kind[t->kind]--;
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

/*
 * Takes every transfer curl reports finished off the multi handle (its
 * connection goes back to the cache) and queues it, with its outcome, for
 * enrich_http_next_done.  Runs after everything that lets curl work.
 */
static void
collect_finished(void)
{
	int			left;
	CURLMsg    *msg;

	if (enrich_multi == NULL)
		return;
	while ((msg = curl_multi_info_read(enrich_multi, &left)) != NULL)
	{
		EnrichTransfer *t = NULL;
		curl_off_t	usec = 0;

		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **) &t);
		t->result = msg->data.result;
		curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &t->status);
		curl_easy_getinfo(t->easy, CURLINFO_TOTAL_TIME_T, &usec);
		t->elapsed = usec / 1000000.0;
		if (t->result == CURLE_FILESIZE_EXCEEDED)
			t->too_large = true;
		if (t->result == CURLE_OK && t->status > 0)
		{
			long		version = 0;

			curl_easy_getinfo(t->easy, CURLINFO_HTTP_VERSION, &version);
			provider_proto[t->kind] = version >= CURL_HTTP_VERSION_2_0 ? 2 : 1;
		}
		curl_multi_remove_handle(enrich_multi, t->easy);
		t->in_multi = false;
		nactive--;
		nactive_kind[t->kind]--;
		Assert(ndone < done_queue_size);
		done_queue[ndone++] = t;
	}
}

/* Takes a transfer out of the queue of finished ones, if it is there. */
static void
forget_finished(EnrichTransfer *t)
{
	for (int i = 0; i < ndone; i++)
		if (done_queue[i] == t)
		{
			memmove(&done_queue[i], &done_queue[i + 1],
					sizeof(EnrichTransfer *) * (ndone - i - 1));
			ndone--;
			return;
		}
}

/*
 * Returns one finished transfer, oldest first, or NULL when none has
 * finished.  The finished transfer is detached from the multi handle (its
 * connection goes back to the cache) but keeps its response.
 */
EnrichTransfer *
enrich_http_next_done(void)
{
	EnrichTransfer *t;

	collect_finished();
	if (ndone == 0)
		return NULL;
	t = done_queue[0];
	forget_finished(t);
	return t;
}

/*
 * (Re)builds the WaitEventSet: the latch, postmaster death and every socket
 * curl watches.  Sockets come and go with connections, which is rare next
 * to requests when connections are kept alive.
 */
static void
rebuild_wait_set(void)
{
	int			size = nwatched + 2;

	if (wait_set != NULL)
		FreeWaitEventSet(wait_set);
	wait_set = NULL;
	if (size > wait_set_size)
	{
		int			n = Max(size, 16);

		wait_events = wait_events == NULL ?
			MemoryContextAlloc(TopMemoryContext, sizeof(WaitEvent) * n) :
			repalloc(wait_events, sizeof(WaitEvent) * n);
		wait_set_size = n;
	}
	wait_set = CreateWaitEventSet(TopMemoryContext, size);
	AddWaitEventToSet(wait_set, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(wait_set, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	for (int i = 0; i < nwatched; i++)
	{
		uint32		ev = 0;

		if (watched[i].what == CURL_POLL_IN || watched[i].what == CURL_POLL_INOUT)
			ev |= WL_SOCKET_READABLE;
		if (watched[i].what == CURL_POLL_OUT || watched[i].what == CURL_POLL_INOUT)
			ev |= WL_SOCKET_WRITEABLE;
		AddWaitEventToSet(wait_set, ev, watched[i].fd, NULL, NULL);
	}
	watched_changed = false;
}

/*
 * Lets curl run whatever is due on its timer, then asks it when it next
 * needs to run: curl reports a new time through the timer callback only
 * when its earliest timer changes, which is not enough to know.  What the
 * run finished is queued (collect_finished).
 */
static void
run_curl_timer(void)
{
	int			running;
	long		ms = -1;

	if (curl_due < 0 || curl_due > GetCurrentTimestamp())
		return;
	curl_multi_socket_action(enrich_multi, CURL_SOCKET_TIMEOUT, 0, &running);
	if (curl_multi_timeout(enrich_multi, &ms) != CURLM_OK)
		ms = 1;
	curl_due = ms < 0 ? -1 : TimestampTzPlusMilliseconds(GetCurrentTimestamp(), ms);
	collect_finished();
}

/*
 * Waits up to timeout_ms for a socket curl watches, curl's own timer, or
 * the process latch, and lets curl handle what is ready (finished transfers
 * are then available from enrich_http_next_done).  Returns true if the
 * latch was set (it has been reset: the caller checks for interrupts and
 * whatever else sets it).  Exits if the postmaster dies.
 *
 * Never sleeps past a finished transfer: curl first runs what its timer
 * has due -- which over a fast link may send a request and read its whole
 * answer, after which no socket event comes -- and if anything is finished
 * and not yet collected by the caller, the wait only looks (timeout 0) at
 * the latch and the sockets.  Every path that waits on curl (synchronous
 * calls, batch functions, the worker) waits here.
 */
bool
enrich_http_wait(long timeout_ms)
{
	TimestampTz now;
	bool		latch = false;
	int			n;

	(void) enrich_http_multi();
	run_curl_timer();
	collect_finished();
	if (ndone > 0)
		timeout_ms = 0;
	if (wait_set == NULL || watched_changed)
		rebuild_wait_set();
	if (curl_due >= 0)
	{
		now = GetCurrentTimestamp();
		timeout_ms = Min(timeout_ms, Max((curl_due - now + 999) / 1000, 0));
	}
	n = WaitEventSetWait(wait_set, Max(timeout_ms, 0), wait_events, wait_set_size,
						 PG_WAIT_EXTENSION);
	for (int i = 0; i < n; i++)
	{
		WaitEvent  *ev = &wait_events[i];
		int			mask = 0;
		int			running;

		if (ev->events & WL_LATCH_SET)
		{
			ResetLatch(MyLatch);
			latch = true;
			continue;
		}
		if (ev->events & WL_SOCKET_READABLE)
			mask |= CURL_CSELECT_IN;
		if (ev->events & WL_SOCKET_WRITEABLE)
			mask |= CURL_CSELECT_OUT;
		if (mask != 0)
			curl_multi_socket_action(enrich_multi, ev->fd, mask, &running);
	}
	run_curl_timer();
	collect_finished();
	return latch;
}
