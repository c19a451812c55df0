# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""POST /odoo_sync/events/<source>: inbound events from dispatch, proof of
delivery apps and carriers.

No session and no CSRF token: the request is authenticated by its Standard
Webhooks signature (webhook-id, webhook-timestamp, webhook-signature:
"v1,<base64 HMAC-SHA256 of id.timestamp.body>") made with the secret of the
odoo_sync.inbound.source named in the URL, and a timestamp no older (or
newer) than that source's tolerance.  The body (one CloudEvent or an array)
goes unchanged to odoo_sync.ingest(text), which validates and stores each
event once per (source, id).  Answers:

    202  every event accepted (or accepted and duplicate)
    200  every event a duplicate (a retry of the sender)
    422  at least one event rejected: the body lists each event's verdict;
         the accepted ones of the batch are stored
    401  unknown source, missing or bad signature, stale timestamp
    413  body larger than the source's limit (or the extension's)
    400  not JSON, or not an event or an array of events
    500  the call to ingest failed for a reason of ours (logged)

auth='none' needs the database to be known without a session: run Odoo with
one database (-d / db_name) or a dbfilter that selects it from the host name.
"""
import json
import logging
import time

import psycopg2

from odoo import http
from odoo.http import request

_logger = logging.getLogger(__name__)


def _json(status, payload):
    return request.make_response(
        json.dumps(payload, default=str), status=status,
        headers=[("Content-Type", "application/json"), ("Cache-Control", "no-store")])


class OdooSyncEvents(http.Controller):

    @http.route("/odoo_sync/events/<string:source>", type="http", auth="none",
                methods=["POST"], csrf=False, save_session=False)
    def events(self, source, **_kw):
        t_received = time.time()
        env = request.env(su=True)
        src = env["odoo_sync.inbound.source"].search(
            [("name", "=", source), ("active", "=", True)], limit=1)
        if not src:
            return _json(401, {"error": "unknown source"})
        limit = (src.max_body_kb or 1024) * 1024
        hreq = request.httprequest
        if hreq.content_length is not None and hreq.content_length > limit:
            return _json(413, {"error": "body larger than %d bytes" % limit})
        body = hreq.get_data(cache=False)
        if len(body) > limit:
            return _json(413, {"error": "body larger than %d bytes" % limit})

        msg_id = hreq.headers.get("webhook-id") or ""
        ts = hreq.headers.get("webhook-timestamp") or ""
        sigs = hreq.headers.get("webhook-signature") or ""
        if not (msg_id and ts.isdigit() and sigs):
            return _json(401, {"error": "missing webhook-id, webhook-timestamp or webhook-signature"})
        if abs(time.time() - int(ts)) > (src.tolerance or 300):
            return _json(401, {"error": "webhook-timestamp outside the tolerance"})
        if not src.verify(msg_id, ts, body, sigs):
            _logger.warning("odoo_sync: bad signature from source %s (webhook-id %s)", source, msg_id)
            return _json(401, {"error": "bad signature"})

        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            return _json(400, {"error": "body is not UTF-8"})
        cr = env.cr
        try:
            with cr.savepoint(flush=False):
                cr.execute("""SELECT index, source, id, status, sqlstate, reason, field
                                FROM odoo_sync.ingest(%s::text)""", (text,))
                rows = cr.dictfetchall()
        except psycopg2.Error as e:
            code = e.pgcode or ""
            if code == "54000":     # program_limit_exceeded: size, depth, batch length
                status = 413
            elif code[:2] == "22" or code == "42804":   # the document itself is wrong
                status = 400
            else:                   # ours (privileges, extension missing...): not the sender's
                _logger.error("odoo_sync: ingest failed for source %s: %s", source, e)
                return _json(500, {"error": "internal error", "sqlstate": code})
            return _json(status, {"error": e.diag.message_primary or str(e),
                                  "detail": e.diag.message_detail, "sqlstate": code})
        statuses = {r["status"] for r in rows}
        if "rejected" in statuses:
            status = 422
        elif statuses == {"duplicate"}:
            status = 200
        else:
            status = 202
        _logger.info("odoo_sync: %s event(s) from %s in %.1f ms: %s", len(rows), source,
                     (time.time() - t_received) * 1000, ",".join(sorted(statuses)))
        return _json(status, {"results": rows})
