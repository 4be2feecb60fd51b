/*
 * curl_seq.c: the baseline of the synchronous-miss benchmark.
 *
 * libcurl alone making enrich_company()'s requests one after another:
 * N LeadLex POSTs for distinct domains, each sent when the one before has
 * its answer, on one kept-alive connection (one easy handle, reused), with
 * the headers and body the extension sends (HTTP/2 over TLS when the
 * server offers it, HTTP/1.1 otherwise).  Times every request and prints
 * calls/s, median, 99th percentile and slowest, so that the extension's
 * figures can be read against what libcurl itself does on the same link.
 * Not part of the extension; built and run by test/bench/run.sh.
 *
 *   curl_seq URL CA_FILE N PREFIX [SPOOL_FILE]
 *
 * With SPOOL_FILE, each answer is also appended to that file (a record of
 * the answer's size, like the extension's spool record) and fdatasync'd
 * before the next request: libcurl plus the one durable write per answer
 * that the extension's promise needs, the floor of a synchronous miss on
 * this disk.
 *
 * Output: one line, calls=N secs=S rate=R p50_ms=A p99_ms=B max_ms=C failed=F
 * (the first request, which opens the connection, is not counted).
 */
#include <curl/curl.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Keeps nothing of the answer but its length. */
static size_t
discard(char *data, size_t size, size_t nmemb, void *arg)
{
	(void) data;
	*(size_t *) arg += size * nmemb;
	return size * nmemb;
}

static int	spool_fd = -1;

/* Appends a record of an answer of `got` bytes and makes it durable. */
static int
spool_answer(const char *prefix, int i, size_t got)
{
	char		rec[640];
	int			len;

	if (spool_fd < 0)
		return 0;
	len = snprintf(rec, sizeof(rec), "{\"v\": 1, \"key\": \"%s-%d.com\", \"bytes\": %zu, \"pad\": \"%0*d\"}\n",
				   prefix, i, got, 500, 0);
	if (write(spool_fd, rec, len) != len || fdatasync(spool_fd) != 0)
	{
		perror("spool file");
		return 1;
	}
	return 0;
}

static double
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000.0 + ts.tv_nsec / 1e6;
}

static int
cmp_double(const void *a, const void *b)
{
	double		x = *(const double *) a;
	double		y = *(const double *) b;

	return (x > y) - (x < y);
}

/* The value at fraction q of sorted v[0..n-1], interpolated. */
static double
percentile(const double *v, int n, double q)
{
	double		pos = q * (n - 1);
	int			lo = (int) pos;

	if (lo + 1 >= n)
		return v[n - 1];
	return v[lo] + (pos - lo) * (v[lo + 1] - v[lo]);
}

/* One try: 0 for a 200, -1 for a transport failure, 1 for another answer. */
static int
request_once(CURL *e, const char *prefix, int i, bool quiet)
{
	char		body[256];
	char		idem[80];
	struct curl_slist *h = NULL;
	size_t		got = 0;
	long		status = 0;
	CURLcode	rc;

	snprintf(body, sizeof(body), "{\"domain\":\"%s-%d.com\"}", prefix, i);
	snprintf(idem, sizeof(idem), "Idempotency-Key: %08x-0000-4000-8000-%012x",
			 (unsigned) rand(), (unsigned) i);
	h = curl_slist_append(h, "Authorization: Bearer wbk_test_key");
	h = curl_slist_append(h, "Content-Type: application/json");
	h = curl_slist_append(h, "Accept: application/json");
	h = curl_slist_append(h, idem);
	h = curl_slist_append(h, "Expect:");
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(e, CURLOPT_COPYPOSTFIELDS, body);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, &got);
	rc = curl_easy_perform(e);
	curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
	curl_slist_free_all(h);
	if (rc != CURLE_OK && quiet)
		return -1;
	if (rc != CURLE_OK || status != 200 || got == 0)
	{
		fprintf(stderr, "request %d: %s, HTTP %ld\n", i, curl_easy_strerror(rc), status);
		return rc != CURLE_OK ? -1 : 1;
	}
	return spool_answer(prefix, i, got);
}

/*
 * One request for <prefix>-<i>.com; returns 0 for a 200.  A transport
 * failure is tried once more at once, on a new connection if need be (the
 * emulator's HTTP/2 server ends a session after so many streams; enrich
 * retries such a request too, after its backoff).
 */
static int
request(CURL *e, const char *prefix, int i)
{
	int			rc = request_once(e, prefix, i, true);

	if (rc < 0)
		rc = request_once(e, prefix, i, false);
	return rc != 0;
}

int
main(int argc, char **argv)
{
	CURL	   *e;
	double	   *lat;
	double		t0;
	double		secs;
	int			n;
	int			failed = 0;
	char		url[1024];

	if ((argc != 5 && argc != 6) || atoi(argv[3]) < 1)
	{
		fprintf(stderr, "usage: %s URL CA_FILE N PREFIX [SPOOL_FILE]\n", argv[0]);
		return 2;
	}
	if (argc == 6 &&
		(spool_fd = open(argv[5], O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0600)) < 0)
	{
		perror(argv[5]);
		return 2;
	}
	n = atoi(argv[3]);
	lat = malloc(sizeof(double) * n);
	if (lat == NULL)
		return 2;
	srand((unsigned) time(NULL) ^ ((unsigned) getpid() << 16));
	curl_global_init(CURL_GLOBAL_ALL);
	e = curl_easy_init();
	if (e == NULL)
		return 2;
	snprintf(url, sizeof(url), "%s/v1/enrich/company", argv[1]);
	curl_easy_setopt(e, CURLOPT_URL, url);
	curl_easy_setopt(e, CURLOPT_CAINFO, argv[2]);
	curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long) CURL_HTTP_VERSION_2TLS);
	curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, discard);

	/* the first request opens the connection */
	failed += request(e, argv[4], 0);
	t0 = now_ms();
	for (int i = 1; i <= n; i++)
	{
		double		t = now_ms();

		failed += request(e, argv[4], i);
		lat[i - 1] = now_ms() - t;
	}
	secs = (now_ms() - t0) / 1000.0;
	qsort(lat, n, sizeof(double), cmp_double);
	printf("calls=%d secs=%.3f rate=%.1f p50_ms=%.3f p99_ms=%.3f max_ms=%.3f failed=%d\n",
		   n, secs, n / secs, percentile(lat, n, 0.5), percentile(lat, n, 0.99),
		   lat[n - 1], failed);
	curl_easy_cleanup(e);
	curl_global_cleanup();
	free(lat);
	if (spool_fd >= 0)
	{
		close(spool_fd);
		unlink(argv[5]);
	}
	return failed > 0 ? 1 : 0;
}
