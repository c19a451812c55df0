-- odoo_sync.sign_webhook(): signing with an endpoint's write-only secret
-- for callers other than the delivery worker (the addon's test ping),
-- checked against pgcrypto's HMAC as an independent implementation.
CREATE DATABASE sign_regress;
\c sign_regress
CREATE EXTENSION odoo_sync;
CREATE EXTENSION pgcrypto;
SELECT odoo_sync.create_endpoint('partner', 'https://203.0.113.10/hook', enabled => false);
SELECT odoo_sync.create_endpoint('raw', 'https://203.0.113.11/hook', enabled => false);
SELECT odoo_sync.create_endpoint('open', 'https://203.0.113.12/hook', enabled => false);
-- a Standard Webhooks secret (whsec_ + base64 key) and a raw-bytes secret
SELECT odoo_sync.set_endpoint_secret('partner', 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw');
SELECT odoo_sync.set_endpoint_secret('raw', 'correct horse battery staple');
-- the same signature as HMAC-SHA256(key, id.ts.body), in base64, after "v1,"
SELECT odoo_sync.sign_webhook('partner', 'msg_p5jXN8AQM9LWM0D4loKWxJek', 1614265330, '{"test": 2432232314}')
     = 'v1,' || encode(hmac('msg_p5jXN8AQM9LWM0D4loKWxJek.1614265330.{"test": 2432232314}',
                            decode('MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', 'base64'), 'sha256'), 'base64')
       AS whsec_matches;
SELECT odoo_sync.sign_webhook('raw', 'ev-1', 1700000000, 'body')
     = 'v1,' || encode(hmac('ev-1.1700000000.body', 'correct horse battery staple'::bytea, 'sha256'), 'base64')
       AS raw_matches;
-- the example of the Standard Webhooks specification
SELECT odoo_sync.sign_webhook('partner', 'msg_p5jXN8AQM9LWM0D4loKWxJek', 1614265330, '{"test": 2432232314}');
-- no secret: unsigned, like the endpoint's deliveries
SELECT odoo_sync.sign_webhook('open', 'ev-1', 1700000000, 'body') IS NULL AS unsigned;
-- errors name the field and never show the secret
SELECT odoo_sync.sign_webhook('nobody', 'ev-1', 1700000000, 'body');
SELECT odoo_sync.sign_webhook('raw', 'ev.1', 1700000000, 'body');
SELECT odoo_sync.sign_webhook('raw', 'ev-1', NULL, 'body');
-- only odoo_sync_admin may sign (it could forge messages the endpoint trusts)
CREATE ROLE sign_operator IN ROLE odoo_sync_operator;
CREATE ROLE sign_admin IN ROLE odoo_sync_admin;
SET ROLE sign_operator;
SELECT odoo_sync.sign_webhook('raw', 'ev-1', 1700000000, 'body');
SELECT odoo_sync._sign('x', 'ev-1', 1700000000, 'body');
SET ROLE sign_admin;
SELECT odoo_sync.sign_webhook('raw', 'ev-1', 1700000000, 'body') LIKE 'v1,%' AS admin_signs;
SELECT odoo_sync._sign('x', 'ev-1', 1700000000, 'body');
SELECT secret FROM odoo_sync._endpoint_secret;
RESET ROLE;
\c contrib_regression
DROP DATABASE sign_regress;
DROP ROLE sign_operator, sign_admin;
