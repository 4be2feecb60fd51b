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
 *   curl_seq URL CA_FILE N PREFIX
 *
 * Output: one line, calls=N secs=S rate=R p50_ms=A p99_ms=B max_ms=C failed=F
 * (the first request, which opens the connection, is not counted).
 */
#include <curl/curl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Keeps nothing of the answer but its length. */
static size_t
discard(char *data, size_t size, size_t nmemb, void *arg)
{
	(void) data;
	*(size_t *) arg += size * nmemb;
	return size * nmemb;
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
	return 0;
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

	if (argc != 5 || atoi(argv[3]) < 1)
	{
		fprintf(stderr, "usage: %s URL CA_FILE N PREFIX\n", argv[0]);
		return 2;
	}
	n = atoi(argv[3]);
	lat = malloc(sizeof(double) * n);
	if (lat == NULL)
		return 2;
	srand((unsigned) time(NULL));
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
	return failed > 0 ? 1 : 0;
}
