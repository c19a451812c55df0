/*-------------------------------------------------------------------------
 *
 * sign_sql.c
 *	  Standard Webhooks signatures for callers other than the delivery
 *	  worker (the addon's test ping), without handing out the secret.
 *
 * The secret of an endpoint is write-only: only the extension's owner may
 * read odoo_sync._endpoint_secret.  odoo_sync.sign_webhook(endpoint, id,
 * timestamp, body) is a SECURITY DEFINER wrapper (sql/install/35_sign.sql)
 * that reads the secret and calls the private C function below, which
 * computes the signature exactly as the delivery worker does (sign.c), so
 * a receiver verifies a test ping with the same code as real deliveries.
 * The key bytes are wiped before returning, and errors never carry the
 * secret or the statement text.
 *
 * Portions Copyright (c) 2026, odoo_sync developers
 *
 * IDENTIFICATION
 *	  src/sign_sql.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "utils/builtins.h"

#include "deliver.h"


PG_FUNCTION_INFO_V1(odoo_sync_sign);

/*
 * odoo_sync._sign(secret, msg_id, timestamp, body) returns the
 * webhook-signature header value ("v1,<base64 HMAC-SHA256 of
 * msg_id.timestamp.body>").
 */
Datum
odoo_sync_sign(PG_FUNCTION_ARGS)
{
	text	   *secret_t = PG_GETARG_TEXT_PP(0);
	char	   *msg_id = text_to_cstring(PG_GETARG_TEXT_PP(1));
	int64		timestamp = PG_GETARG_INT64(2);
	text	   *body = PG_GETARG_TEXT_PP(3);
	char	   *secret = text_to_cstring(secret_t);
	unsigned char key[SIGN_KEY_MAX];
	int			keylen;
	char	   *sig;

	keylen = sign_key_from_secret(secret, key, SIGN_KEY_MAX);
	explicit_bzero(secret, strlen(secret));
	if (keylen < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("the endpoint's secret cannot be used as a signing key"),
				 errhint("Set it again with odoo_sync.set_endpoint_secret()."),
				 errhidestmt(true)));
	if (strpbrk(msg_id, ".") != NULL || msg_id[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid webhook message id: \"%s\"", msg_id),
				 errdetail("Field \"msg_id\" must be non-empty and contain no \".\" (it is the first part of the signed content)."),
				 errhidestmt(true)));
	sig = sign_webhook(key, keylen, msg_id, timestamp,
					   VARDATA_ANY(body), VARSIZE_ANY_EXHDR(body));
	sign_forget_keys();
	explicit_bzero(key, sizeof(key));
	PG_RETURN_TEXT_P(cstring_to_text(sig));
}
