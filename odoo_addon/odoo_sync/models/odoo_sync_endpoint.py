# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""Endpoints and subscriptions: read from the extension's views, written
only through odoo_sync.create_endpoint / alter_endpoint / set_endpoint_secret
/ drop_endpoint / subscribe / unsubscribe."""
import json
import time
import uuid

import requests

from odoo import _, api, fields, models
from odoo.exceptions import UserError

from .odoo_sync_sql import call

# settings of create_endpoint() / alter_endpoint() the form edits
_SETTINGS = ("url", "enabled", "concurrency", "batch_size", "max_attempts")
_INTERVALS = {"timeout_s": "timeout"}


class OdooSyncEndpoint(models.Model):
    _name = "odoo_sync.endpoint"
    _description = "odoo_sync endpoint"
    _auto = False
    _log_access = False
    _order = "name"

    name = fields.Char(required=True, readonly=False)
    url = fields.Char(string="URL", required=True)
    enabled = fields.Boolean(default=True)
    concurrency = fields.Integer(default=4)
    batch_size = fields.Integer(default=1)
    max_attempts = fields.Integer(default=12)
    timeout_s = fields.Float(string="Timeout (s)", default=30.0)
    secret_hint = fields.Char(string="Secret", readonly=True,
                              help="Only a hint of the secret is ever shown.")
    secret_set_at = fields.Datetime(readonly=True)
    new_secret = fields.Char(
        string="New secret", compute="_compute_new_secret",
        inverse="_inverse_new_secret", store=False,
        help="Write-only: sets the Standard Webhooks signing secret "
             "(whsec_<base64>). It is never shown back.")
    circuit = fields.Selection(
        [("closed", "Closed"), ("open", "Open"), ("half_open", "Half open")],
        readonly=True)
    backlog = fields.Integer(readonly=True)
    in_flight = fields.Integer(readonly=True)
    oldest_pending_age = fields.Float(string="Oldest pending (s)", readonly=True)
    delivered_5m = fields.Integer(string="Delivered (5 min)", readonly=True)
    failed_attempts_5m = fields.Integer(string="Failed attempts (5 min)", readonly=True)
    dead = fields.Integer(string="Dead letters", readonly=True)
    latency_p50_ms = fields.Float(string="Latency p50 (ms)", readonly=True)
    latency_p95_ms = fields.Float(string="Latency p95 (ms)", readonly=True)
    last_error = fields.Char(readonly=True)
    subscription_ids = fields.One2many("odoo_sync.subscription", "endpoint_id")
    last_ping = fields.Text(readonly=True, store=False, compute="_compute_new_secret")

    @property
    def _table_query(self):
        return """
            SELECT e.id, e.name, e.url, e.enabled, e.concurrency, e.batch_size,
                   e.max_attempts,
                   extract(epoch FROM e.timeout)::float8 AS timeout_s,
                   e.secret_hint,
                   e.secret_set_at AT TIME ZONE 'UTC' AS secret_set_at,
                   s.circuit, s.backlog, s.in_flight,
                   extract(epoch FROM s.oldest_pending_age)::float8 AS oldest_pending_age,
                   s.delivered_5m, s.failed_attempts_5m, s.dead,
                   s.latency_p50_ms::float8 AS latency_p50_ms,
                   s.latency_p95_ms::float8 AS latency_p95_ms,
                   s.last_error
              FROM odoo_sync.endpoints e
              LEFT JOIN odoo_sync.endpoint_status s ON s.id = e.id
        """

    def _compute_new_secret(self):
        for rec in self:
            rec.new_secret = False
            rec.last_ping = False

    def _inverse_new_secret(self):
        for rec in self:
            if rec.new_secret:
                call(self.env.cr, "SELECT odoo_sync.set_endpoint_secret(%s, %s)",
                     (rec.name, rec.new_secret))

    def _check_manager(self):
        if not self.env.user.has_group("odoo_sync.group_odoo_sync_manager"):
            raise UserError(_("Only odoo_sync managers may change endpoints."))

    @api.model_create_multi
    def create(self, vals_list):
        self._check_manager()
        ids = []
        for vals in vals_list:
            rows = call(
                self.env.cr,
                """SELECT odoo_sync.create_endpoint(
                       name => %s, url => %s, secret => %s,
                       concurrency => %s, batch_size => %s, max_attempts => %s,
                       timeout => make_interval(secs => %s), enabled => %s)""",
                (vals["name"], vals["url"], vals.get("new_secret") or None,
                 vals.get("concurrency") or 4, vals.get("batch_size") or 1,
                 vals.get("max_attempts") or 12, vals.get("timeout_s") or 30.0,
                 vals.get("enabled", True)))
            ids.append(rows[0][0])
        self.env.invalidate_all()
        recs = self.browse(ids)
        for rec, vals in zip(recs, vals_list):
            for cmd in vals.get("subscription_ids") or []:
                if cmd[0] == 0:
                    self.env["odoo_sync.subscription"].create(
                        dict(cmd[2], endpoint_id=rec.id))
        return recs

    def write(self, vals):
        self._check_manager()
        vals = dict(vals)
        secret = vals.pop("new_secret", None)
        subs = vals.pop("subscription_ids", None)
        settings = {k: vals[k] for k in _SETTINGS + ("name",) if k in vals}
        if "timeout_s" in vals:
            settings["timeout"] = "%s seconds" % float(vals["timeout_s"])
        for rec in self:
            if settings:
                call(self.env.cr, "SELECT odoo_sync.alter_endpoint(%s, %s::jsonb)",
                     (rec.name, json.dumps(settings)))
            if secret:
                call(self.env.cr, "SELECT odoo_sync.set_endpoint_secret(%s, %s)",
                     (settings.get("name", rec.name), secret))
        self.env.invalidate_all()
        for cmd in subs or []:
            Sub = self.env["odoo_sync.subscription"]
            if cmd[0] == 0:
                Sub.create(dict(cmd[2], endpoint_id=self.id))
            elif cmd[0] in (2, 3):
                Sub.browse(cmd[1]).unlink()
            elif cmd[0] == 1:
                Sub.browse(cmd[1]).write(cmd[2])
        return True

    def unlink(self):
        self._check_manager()
        for rec in self:
            call(self.env.cr, "SELECT odoo_sync.drop_endpoint(%s)", (rec.name,))
        self.env.invalidate_all()
        return True

    def action_enable(self):
        return self.write({"enabled": True})

    def action_disable(self):
        return self.write({"enabled": False})

    def action_retry_dead(self):
        self._check_manager()
        n = 0
        for rec in self:
            n += call(self.env.cr, "SELECT odoo_sync.retry_dead(%s)", (rec.name,))[0][0]
        return self._notify(_("%s dead deliveries queued again.") % n)

    def _notify(self, message, kind="info"):
        return {"type": "ir.actions.client", "tag": "display_notification",
                "params": {"message": message, "type": kind, "sticky": False,
                           "next": {"type": "ir.actions.client", "tag": "soft_reload"}}}

    # ------------------------------------------------------------ test ping
    def _signature(self, msg_id, ts, body):
        """The webhook-signature the extension computes with the endpoint's
        write-only secret (odoo_sync.sign_webhook), or None without one."""
        rows = call(self.env.cr, "SELECT odoo_sync.sign_webhook(%s, %s, %s, %s)",
                    (self.name, msg_id, int(ts), body))
        return rows[0][0] if rows else None

    def action_test_ping(self):
        """POST a signed odoo_sync.ping CloudEvent to the endpoint and show
        the answer (status, time, first 300 bytes)."""
        self.ensure_one()
        self._check_manager()
        msg_id = str(uuid.uuid4())
        ts = str(int(time.time()))
        body = json.dumps({
            "specversion": "1.0", "id": msg_id, "source": "odoo_sync/odoo",
            "type": "odoo_sync.ping", "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "data": {"endpoint": self.name, "database": self.env.cr.dbname},
        }, separators=(",", ":"))
        headers = {"content-type": "application/cloudevents+json",
                   "webhook-id": msg_id, "webhook-timestamp": ts}
        sig = self._signature(msg_id, ts, body)
        if sig:
            headers["webhook-signature"] = sig
        t0 = time.monotonic()
        try:
            r = requests.post(self.url, data=body.encode(), headers=headers,
                              timeout=(5, min(self.timeout_s or 10, 10)))
            answer = "HTTP %s in %.0f ms%s\n%s" % (
                r.status_code, (time.monotonic() - t0) * 1000,
                "" if sig else " (unsigned: the endpoint has no secret)", r.text[:300])
            kind = "success" if 200 <= r.status_code < 300 else "warning"
        except requests.RequestException as e:
            answer = "no answer: %s" % e
            kind = "danger"
        return {"type": "ir.actions.client", "tag": "display_notification",
                "params": {"title": _("Ping %s") % self.name, "message": answer,
                           "type": kind, "sticky": True}}


class OdooSyncSubscription(models.Model):
    _name = "odoo_sync.subscription"
    _description = "odoo_sync subscription"
    _auto = False
    _log_access = False

    endpoint_id = fields.Many2one("odoo_sync.endpoint", required=True, ondelete="cascade")
    types = fields.Char(required=True, help="Comma separated event type patterns, e.g. dispatch.*, invoice.posted")
    lanes = fields.Char(default="critical,bulk")
    ordered = fields.Boolean(default=True)
    enabled = fields.Boolean(default=True, readonly=True)

    @property
    def _table_query(self):
        return """
            SELECT s.id, s.endpoint_id, array_to_string(s.types, ', ') AS types,
                   array_to_string(s.lanes, ',') AS lanes, s.ordered, s.enabled
              FROM odoo_sync.subscription s
        """

    @api.model_create_multi
    def create(self, vals_list):
        self.env["odoo_sync.endpoint"]._check_manager()
        ids = []
        for vals in vals_list:
            ep = self.env["odoo_sync.endpoint"].browse(vals["endpoint_id"])
            types = [t.strip() for t in (vals.get("types") or "").split(",") if t.strip()]
            lanes = [t.strip() for t in (vals.get("lanes") or "critical,bulk").split(",") if t.strip()]
            rows = call(self.env.cr, "SELECT odoo_sync.subscribe(%s, %s, %s, %s)",
                        (ep.name, types, lanes, vals.get("ordered", True)))
            ids.append(rows[0][0])
        self.env.invalidate_all()
        return self.browse(ids)

    def write(self, vals):
        # a subscription is replaced, not edited: the extension has no alter
        self.env["odoo_sync.endpoint"]._check_manager()
        for rec in self:
            new = {"endpoint_id": rec.endpoint_id.id, "types": rec.types,
                   "lanes": rec.lanes, "ordered": rec.ordered}
            new.update(vals)
            rec.unlink()
            self.create([new])
        return True

    def unlink(self):
        self.env["odoo_sync.endpoint"]._check_manager()
        for rec in self:
            call(self.env.cr, "SELECT odoo_sync.unsubscribe(%s)", (rec.id,))
        self.env.invalidate_all()
        return True
