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

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>

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
 * HMAC-SHA256 contexts with their keys set, for the last few keys used: an
 * endpoint's secret is set up once, not at every request.  OpenSSL 3's
 * one-shot HMAC() looks the algorithm up (a fetch, under locks) and sets the
 * key up at every call, which was most of the signing cost of an unbatched
 * request.
 */
#define MAC_CACHE 8
typedef struct MacKey
{
	unsigned char key[SIGN_KEY_MAX];
	int			keylen;			/* -1 = free */
	EVP_MAC_CTX *ctx;
	uint64		used;
} MacKey;

static EVP_MAC *hmac_alg = NULL;
static MacKey mac_keys[MAC_CACHE] = {{.keylen = -1}, {.keylen = -1}, {.keylen = -1},
{.keylen = -1}, {.keylen = -1}, {.keylen = -1}, {.keylen = -1}, {.keylen = -1}};
static uint64 mac_clock = 0;

/*
 * sign_forget_keys
 *		Wipes the cached keys and their contexts (the SQL-callable signer
 *		calls it: an ordinary session keeps no secret once it has signed).
 */
void
sign_forget_keys(void)
{
	for (int i = 0; i < MAC_CACHE; i++)
	{
		explicit_bzero(mac_keys[i].key, sizeof(mac_keys[i].key));
		mac_keys[i].keylen = -1;
		EVP_MAC_CTX_free(mac_keys[i].ctx);
		mac_keys[i].ctx = NULL;
		mac_keys[i].used = 0;
	}
}

static EVP_MAC_CTX *
mac_for_key(const unsigned char *key, int keylen)
{
	MacKey	   *victim = &mac_keys[0];
	char		digest[] = "SHA256";
	OSSL_PARAM	params[2];

	if (keylen < 0 || keylen > SIGN_KEY_MAX)
		return NULL;
	for (int i = 0; i < MAC_CACHE; i++)
	{
		MacKey	   *m = &mac_keys[i];

		if (m->keylen == keylen && memcmp(m->key, key, keylen) == 0)
		{
			m->used = ++mac_clock;
			return m->ctx;
		}
		if (m->used < victim->used)
			victim = m;
	}
	if (hmac_alg == NULL && (hmac_alg = EVP_MAC_fetch(NULL, "HMAC", NULL)) == NULL)
		return NULL;
	if (victim->ctx == NULL && (victim->ctx = EVP_MAC_CTX_new(hmac_alg)) == NULL)
		return NULL;
	params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0);
	params[1] = OSSL_PARAM_construct_end();
	explicit_bzero(victim->key, sizeof(victim->key));
	victim->keylen = -1;
	/* (an empty key signs too, as HMAC() did: a non-NULL pointer) */
	if (!EVP_MAC_init(victim->ctx, keylen > 0 ? key : (const unsigned char *) "", keylen, params))
		return NULL;
	memcpy(victim->key, key, keylen);
	victim->keylen = keylen;
	victim->used = ++mac_clock;
	return victim->ctx;
}

/*
 * sign_webhook
 *		The Standard Webhooks signature of a message: "v1," followed by the
 *		base64 HMAC-SHA256, under key, of "<msg_id>.<timestamp>.<body>".
 *		Returns a palloc'd string.
 */
char *
sign_webhook(const unsigned char *key, int keylen, const char *msg_id,
			 int64 timestamp, const char *body, size_t body_len)
{
	unsigned char mac[EVP_MAX_MD_SIZE];
	size_t		maclen = 0;
	char		prefix[128];
	int			plen;
	char	   *out;
	int			n;
	EVP_MAC_CTX *base = mac_for_key(key, keylen);
	EVP_MAC_CTX *ctx = base ? EVP_MAC_CTX_dup(base) : NULL;

	plen = snprintf(prefix, sizeof(prefix), "%s." INT64_FORMAT ".",
					msg_id, timestamp);
	if (ctx == NULL ||
		!EVP_MAC_update(ctx, (const unsigned char *) prefix, plen) ||
		!EVP_MAC_update(ctx, (const unsigned char *) body, body_len) ||
		!EVP_MAC_final(ctx, mac, &maclen, sizeof(mac)))
	{
		EVP_MAC_CTX_free(ctx);
		elog(ERROR, "could not compute the webhook signature");
	}
	EVP_MAC_CTX_free(ctx);

	out = palloc(3 + pg_b64_enc_len(maclen) + 1);
	memcpy(out, "v1,", 3);
	n = pg_b64_encode((const char *) mac, maclen, out + 3,
					  pg_b64_enc_len(maclen));
	out[3 + n] = '\0';
	return out;
}
