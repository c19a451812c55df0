/*
 * rawcurl.c - the peer of the delivery benchmark: a plain libcurl multi
 * client that POSTs the same kind of body as odoo_sync (one CloudEvent of
 * about the same size) with N keep-alive connections, as fast as the sink
 * answers.  No database, no signing: the limit of this machine and sink.
 *
 *   rawcurl URL CONNECTIONS REQUESTS
 * prints: requests=N seconds=S requests_per_s=R failures=F
 */
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static size_t
discard(char *p, size_t s, size_t n, void *u)
{
	(void) p;
	(void) u;
	return s * n;
}

static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int
main(int argc, char **argv)
{
	const char *url;
	int			nconn;
	long		total;
	long		started = 0;
	long		done = 0;
	long		failures = 0;
	CURLM	   *m;
	CURL	  **easy;
	struct curl_slist *h = NULL;
	char		body[512];
	double		t0;
	double		t1;

	if (argc != 4)
	{
		fprintf(stderr, "usage: %s URL CONNECTIONS REQUESTS\n", argv[0]);
		return 2;
	}
	url = argv[1];
	nconn = atoi(argv[2]);
	total = atol(argv[3]);
	snprintf(body, sizeof(body),
			 "{\"specversion\":\"1.0\",\"id\":\"0b5c3c1e-8f7a-4d7e-9d55-2f1e8b7c6a01\","
			 "\"source\":\"odoo://bench\",\"type\":\"inventory.changed\","
			 "\"subject\":\"product/A1\",\"time\":\"2026-11-29T14:20:01.123456Z\","
			 "\"datacontenttype\":\"application/json\",\"sequence\":\"1\","
			 "\"lane\":\"bulk\",\"traceparent\":\"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\","
			 "\"data\":{\"n\":1}}");
	h = curl_slist_append(h, "Content-Type: application/cloudevents+json");
	h = curl_slist_append(h, "webhook-id: 0b5c3c1e-8f7a-4d7e-9d55-2f1e8b7c6a01");
	h = curl_slist_append(h, "webhook-timestamp: 1796000000");
	h = curl_slist_append(h, "webhook-signature: v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4=");
	h = curl_slist_append(h, "Expect:");

	curl_global_init(CURL_GLOBAL_ALL);
	m = curl_multi_init();
	curl_multi_setopt(m, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long) nconn);
	curl_multi_setopt(m, CURLMOPT_MAXCONNECTS, (long) nconn);
	easy = calloc(nconn, sizeof(CURL *));
	t0 = now();
	for (int i = 0; i < nconn && started < total; i++)
	{
		easy[i] = curl_easy_init();
		curl_easy_setopt(easy[i], CURLOPT_URL, url);
		curl_easy_setopt(easy[i], CURLOPT_POSTFIELDS, body);
		curl_easy_setopt(easy[i], CURLOPT_HTTPHEADER, h);
		curl_easy_setopt(easy[i], CURLOPT_WRITEFUNCTION, discard);
		curl_easy_setopt(easy[i], CURLOPT_TCP_NODELAY, 1L);
		curl_multi_add_handle(m, easy[i]);
		started++;
	}
	while (done < total)
	{
		int			running;
		int			left;
		CURLMsg    *msg;

		curl_multi_perform(m, &running);
		while ((msg = curl_multi_info_read(m, &left)) != NULL)
		{
			long		status = 0;

			if (msg->msg != CURLMSG_DONE)
				continue;
			curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &status);
			if (msg->data.result != CURLE_OK || status != 200)
				failures++;
			done++;
			curl_multi_remove_handle(m, msg->easy_handle);
			if (started < total)
			{
				curl_multi_add_handle(m, msg->easy_handle);
				started++;
			}
		}
		if (done < total)
			curl_multi_poll(m, NULL, 0, 100, NULL);
	}
	t1 = now();
	printf("requests=%ld seconds=%.3f requests_per_s=%.0f failures=%ld\n",
		   done, t1 - t0, done / (t1 - t0), failures);
	return failures > 0;
}
