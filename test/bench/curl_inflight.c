/*
 * curl_inflight.c: the baseline of the worker's memory benchmark.
 *
 * libcurl alone making the worker's requests: N LeadLex POSTs at once over
 * one HTTP/2 connection (after a first request that opens it, as the
 * extension does), to a provider that holds each answer for a while.
 * Prints the private memory the process gained per request in flight, so
 * that the worker's own figure can be read against what libcurl itself
 * needs.  Not part of the extension; built and run by test/bench/run.sh.
 *
 *   curl_inflight URL CA_FILE N
 */
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Private_Dirty of this process, in kB. */
static long
private_dirty_kb(void)
{
	FILE	   *f = fopen("/proc/self/smaps_rollup", "r");
	char		line[256];
	long		kb = -1;

	if (f == NULL)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (strncmp(line, "Private_Dirty:", 14) == 0)
			kb = atol(line + 14);
	fclose(f);
	return kb;
}

/* Throws the answer away. */
static size_t
discard(char *data, size_t size, size_t nmemb, void *arg)
{
	return size * nmemb;
}

/* Adds one LeadLex request for domain bench-<i>.com. */
static void
add_request(CURLM *multi, const char *url, const char *ca,
			struct curl_slist *headers, int i)
{
	CURL	   *e = curl_easy_init();
	char		body[64];

	snprintf(body, sizeof(body), "{\"domain\":\"inflight-%d.com\"}", i);
	curl_easy_setopt(e, CURLOPT_URL, url);
	curl_easy_setopt(e, CURLOPT_CAINFO, ca);
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, headers);
	curl_easy_setopt(e, CURLOPT_COPYPOSTFIELDS, body);
	curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long) CURL_HTTP_VERSION_2TLS);
	curl_easy_setopt(e, CURLOPT_PIPEWAIT, 1L);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, discard);
	curl_multi_add_handle(multi, e);
}

/* Drives the transfers for about ms milliseconds, or until none is left. */
static int
drive(CURLM *multi, int ms)
{
	int			running = 0;

	for (int waited = 0; waited < ms; waited += 10)
	{
		curl_multi_perform(multi, &running);
		if (running == 0)
			break;
		curl_multi_poll(multi, NULL, 0, 10, NULL);
	}
	return running;
}

/* Removes and frees the finished transfers; returns how many failed. */
static int
reap(CURLM *multi)
{
	CURLMsg    *msg;
	int			left;
	int			failed = 0;

	while ((msg = curl_multi_info_read(multi, &left)) != NULL)
	{
		if (msg->data.result != CURLE_OK)
			failed++;
		curl_multi_remove_handle(multi, msg->easy_handle);
		curl_easy_cleanup(msg->easy_handle);
	}
	return failed;
}

int
main(int argc, char **argv)
{
	CURLM	   *multi;
	struct curl_slist *headers = NULL;
	long		before;
	long		during;
	int			n;
	int			running;
	int			failed;

	if (argc != 4)
	{
		fprintf(stderr, "usage: %s URL CA_FILE N\n", argv[0]);
		return 2;
	}
	n = atoi(argv[3]);
	curl_global_init(CURL_GLOBAL_ALL);
	multi = curl_multi_init();
	curl_multi_setopt(multi, CURLMOPT_PIPELINING, (long) CURLPIPE_MULTIPLEX);
	curl_multi_setopt(multi, CURLMOPT_MAX_CONCURRENT_STREAMS, 256L);
	curl_multi_setopt(multi, CURLMOPT_MAX_HOST_CONNECTIONS, 3L);
	headers = curl_slist_append(headers, "Authorization: Bearer wbk_test_key");
	headers = curl_slist_append(headers, "Content-Type: application/json");

	/* the first request opens the connection the others share */
	add_request(multi, argv[1], argv[2], headers, 0);
	drive(multi, 30000);
	failed = reap(multi);

	before = private_dirty_kb();
	for (int i = 1; i <= n; i++)
		add_request(multi, argv[1], argv[2], headers, i);
	running = drive(multi, 1000);
	during = private_dirty_kb();
	printf("in_flight=%d before_kb=%ld during_kb=%ld bytes_per_request=%ld\n",
		   running, before, during, running > 0 ? (during - before) * 1024 / running : 0);
	drive(multi, 60000);
	failed += reap(multi);
	curl_multi_cleanup(multi);
	curl_slist_free_all(headers);
	return failed > 0 ? 1 : 0;
}
