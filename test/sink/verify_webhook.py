#!/usr/bin/python3
"""Independent verifier for Standard Webhooks signatures
(https://www.standardwebhooks.com/).

signed content = f"{webhook-id}.{webhook-timestamp}.{body}"
signature      = base64(HMAC-SHA256(key, signed content))
key            = base64decode(secret[6:]) if secret starts with "whsec_"
                 else secret.encode("utf-8")
header         = "webhook-signature: v1,<sig> [v1,<sig> ...]" (space separated)

Module use:
    from verify_webhook import verify, check
    verify(secret, headers, body_bytes) -> bool
    check(secret, headers, body_bytes, tolerance=None, now=None) -> (bool, reason)
  headers: dict (any case) or list of [name, value] pairs.

CLI:
    verify_webhook.py --secret S [--tolerance SECONDS] [--file F] < request.json
  request.json is one recorded sink request (headers as list of [name, value]
  or dict; body from "body_b64" if present, else "body"). Exit 0 if valid,
  1 if not (reason printed), 2 on usage / input errors.
  With --tolerance, the timestamp must be within SECONDS of the request's
  "received_at" (or of now if absent).
"""

import argparse
import base64
import binascii
import hashlib
import hmac
import json
import sys
import time


def _header_map(headers):
    items = headers.items() if isinstance(headers, dict) else headers
    out = {}
    for k, v in items:
        out[str(k).lower()] = str(v)
    return out


def secret_key(secret):
    if isinstance(secret, bytes):
        secret = secret.decode("utf-8")
    if secret.startswith("whsec_"):
        return base64.b64decode(secret[len("whsec_"):], validate=True)
    return secret.encode("utf-8")


def sign(secret, msg_id, timestamp, body):
    if isinstance(body, str):
        body = body.encode("utf-8")
    content = ("%s.%s." % (msg_id, timestamp)).encode("utf-8") + body
    mac = hmac.new(secret_key(secret), content, hashlib.sha256).digest()
    return base64.b64encode(mac).decode("ascii")


def check(secret, headers, body, tolerance=None, now=None):
    h = _header_map(headers)
    msg_id = h.get("webhook-id")
    ts = h.get("webhook-timestamp")
    sig_header = h.get("webhook-signature")
    if not msg_id:
        return False, "missing webhook-id header"
    if not ts:
        return False, "missing webhook-timestamp header"
    if not sig_header:
        return False, "missing webhook-signature header"
    if not ts.isdigit():
        return False, "webhook-timestamp is not an integer number of seconds: %r" % ts
    if tolerance is not None:
        ref = time.time() if now is None else float(now)
        if abs(ref - int(ts)) > tolerance:
            return False, "timestamp %s outside tolerance %ss of %.0f" % (ts, tolerance, ref)
    try:
        expected = sign(secret, msg_id, ts, body)
    except (binascii.Error, ValueError) as e:
        return False, "bad whsec_ secret: %s" % e
    seen = []
    for entry in sig_header.split(" "):
        if not entry:
            continue
        version, _, sig = entry.partition(",")
        seen.append(version)
        if version != "v1":
            continue
        if hmac.compare_digest(sig.encode("ascii", "replace"), expected.encode("ascii")):
            return True, "valid"
    if "v1" not in seen:
        return False, "no v1 signature in header %r" % sig_header
    return False, "no v1 signature matches (expected v1,%s; header %r)" % (expected, sig_header)


def verify(secret, headers, body, tolerance=None, now=None):
    return check(secret, headers, body, tolerance, now)[0]


def _body_of(req):
    if req.get("body_b64") is not None:
        return base64.b64decode(req["body_b64"])
    b = req.get("body")
    if b is None:
        return b""
    return b.encode("utf-8") if isinstance(b, str) else json.dumps(b).encode("utf-8")


def main(argv=None):
    ap = argparse.ArgumentParser(description="Verify a Standard Webhooks signature "
                                 "of a recorded sink request (JSON on stdin).")
    ap.add_argument("--secret", required=True)
    ap.add_argument("--tolerance", type=float)
    ap.add_argument("--file", help="read the request JSON from this file instead of stdin")
    args = ap.parse_args(argv)
    try:
        if args.file:
            with open(args.file, "rb") as f:
                req = json.loads(f.read().decode("utf-8"))
        else:
            req = json.loads(sys.stdin.buffer.read().decode("utf-8"))
        if not isinstance(req, dict) or "headers" not in req:
            raise ValueError("input must be a recorded request object with 'headers'")
        body = _body_of(req)
    except (ValueError, OSError, binascii.Error) as e:
        print("error: %s" % e)
        return 2
    ok, why = check(args.secret, req["headers"], body, args.tolerance, req.get("received_at"))
    print(("OK: " if ok else "INVALID: ") + why)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
