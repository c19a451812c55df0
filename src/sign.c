/*-------------------------------------------------------------------------
 *
 * sign.c
 *	  Standard Webhooks signatures (https://www.standardwebhooks.com/).
 *
 * signed content = "<webhook-id>.<webhook-timestamp>.<body>"
 * signature      = base64(HMAC-SHA256(key, signed content))
 * header value   = "v1,<signature>"
 *
 * The key is the base64-decoded part after "whsec_" when the secret starts
 * with that prefix, otherwise the secret's raw bytes.  Secrets are never
 * copied into error messages: a malformed one is reported without its text.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "common/base64.h"

#include "deliver.h"

/*
 * sign_key_from_secret
 *		Writes the HMAC key of a secret into key (at most keymax bytes).
 *
 * Returns the key length, or -1 when a "whsec_" secret is not valid base64
 * or the key does not fit.
 */
int
sign_key_from_secret(const char *secret, unsigned char *key, int keymax)
{
	size_t		len = strlen(secret);

	if (strncmp(secret, "whsec_", 6) == 0)
	{
		const char *b64 = secret + 6;
		int			b64len = (int) (len - 6);
		int			n;

		if (b64len == 0 || b64len % 4 != 0 || pg_b64_dec_len(b64len) > keymax)
			return -1;
		n = pg_b64_decode(b64, b64len, (char *) key, keymax);
		return n > 0 ? n : -1;
	}
	if ((int) len > keymax)
		return -1;
	memcpy(key, secret, len);
	return (int) len;
}

/*
 * sign_webhook
 *		Returns the webhook-signature header value ("v1,<base64>"), palloc'd
 *		in the current memory context.
 */
char *
sign_webhook(const unsigned char *key, int keylen, const char *msg_id,
			 int64 timestamp, const char *body, size_t body_len)
{
	unsigned char mac[EVP_MAX_MD_SIZE];
	unsigned int maclen = 0;
	char		prefix[128];
	int			plen;
	char	   *content;
	char	   *out;
	int			n;

	plen = snprintf(prefix, sizeof(prefix), "%s." INT64_FORMAT ".",
					msg_id, timestamp);
	content = palloc(plen + body_len);
	memcpy(content, prefix, plen);
	memcpy(content + plen, body, body_len);
	if (HMAC(EVP_sha256(), key, keylen, (const unsigned char *) content,
			 plen + body_len, mac, &maclen) == NULL)
		elog(ERROR, "could not compute the webhook signature");
	pfree(content);

	out = palloc(3 + pg_b64_enc_len(maclen) + 1);
	memcpy(out, "v1,", 3);
	n = pg_b64_encode((const char *) mac, maclen, out + 3,
					  pg_b64_enc_len(maclen));
	out[3 + n] = '\0';
	return out;
}
