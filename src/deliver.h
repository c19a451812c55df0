/*-------------------------------------------------------------------------
 *
 * deliver.h
 *	  Declarations shared by the delivery files (deliver.c, http.c, sign.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef ODOO_SYNC_DELIVER_H
#define ODOO_SYNC_DELIVER_H

#include "postgres.h"

#include <curl/curl.h>

#include "datatype/timestamp.h"

/* largest response excerpt kept for a dead delivery */
#define DELIVER_EXCERPT_MAX 1024

/* settings (deliver.c) */
extern bool odoo_sync_allow_private_endpoints;

/*
 * One HTTP request in flight.  The caller fills the request part and keeps
 * the body, URL and header list alive until the request completes; http.c
 * fills the result part.
 */
typedef struct HttpRequest
{
	/* request */
	const char *url;
	struct curl_slist *headers;
	const char *body;
	size_t		body_len;
	long		connect_timeout_ms;
	long		timeout_ms;
	bool		verify_tls;
	void	   *owner;			/* caller's data */

	/* result */
	bool		done;
	CURLcode	result;			/* CURLE_OK when an HTTP answer arrived */
	long		status;			/* HTTP status, 0 without an answer */
	char		error[CURL_ERROR_SIZE];
	char		excerpt[DELIVER_EXCERPT_MAX + 1];
	int			excerpt_len;
	long		retry_after_s;	/* -1 when absent or unparsable */
	TimestampTz started_at;
	TimestampTz finished_at;

	/* private to http.c */
	CURL	   *easy;
} HttpRequest;

/* http.c */
extern void http_init(int max_connections);
extern void http_start(HttpRequest *req);
extern void http_drop_connections(void);
extern int	http_wait(long timeout_ms);
extern void http_kick(void);
extern HttpRequest *http_next_done(void);
extern int	http_running(void);
extern bool http_address_allowed(const struct sockaddr *sa, bool allow_private);

/* sign.c */
/* the longest signing key (bytes) */
#define SIGN_KEY_MAX 512

extern int	sign_key_from_secret(const char *secret, unsigned char *key, int keymax);
extern void sign_forget_keys(void);
extern char *sign_webhook(const unsigned char *key, int keylen,
						  const char *msg_id, int64 timestamp,
						  const char *body, size_t body_len);

#endif							/* ODOO_SYNC_DELIVER_H */
