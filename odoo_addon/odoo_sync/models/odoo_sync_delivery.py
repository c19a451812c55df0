# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""Deliveries (pending, in flight, delivered, dead) read from the
extension's deliveries view; Retry and Replay call odoo_sync.redeliver."""
from odoo import _, fields, models
from odoo.exceptions import UserError

from .odoo_sync_sql import call

# company of the aggregate an event is about (for multi-company rules)
COMPANY_OF_AGGREGATE = """
    CASE {t}
        WHEN 'stock.picking' THEN (SELECT p.company_id FROM public.stock_picking p
                                    WHERE p.id = CASE WHEN {i} ~ '^[0-9]{{1,9}}$' THEN {i}::int END)
        WHEN 'sale.order' THEN (SELECT o.company_id FROM public.sale_order o
                                 WHERE o.id = CASE WHEN {i} ~ '^[0-9]{{1,9}}$' THEN {i}::int END)
        WHEN 'account.move' THEN (SELECT m.company_id FROM public.account_move m
                                   WHERE m.id = CASE WHEN {i} ~ '^[0-9]{{1,9}}$' THEN {i}::int END)
    END
"""

STATES = [("pending", "Pending"), ("in_flight", "In flight"),
          ("delivered", "Delivered"), ("dead", "Dead")]


class OdooSyncDelivery(models.Model):
    _name = "odoo_sync.delivery"
    _description = "odoo_sync delivery"
    _auto = False
    _log_access = False
    _order = "id desc"
    _rec_name = "type"

    endpoint_id = fields.Many2one("odoo_sync.endpoint", readonly=True)
    endpoint = fields.Char(string="Endpoint name", readonly=True)
    event_uuid = fields.Char(string="Event id", readonly=True)
    event_id = fields.Many2one("odoo_sync.event", string="Event", readonly=True)
    type = fields.Char(readonly=True)
    aggregate_type = fields.Char(readonly=True)
    aggregate_id = fields.Char(readonly=True)
    aggregate_seq = fields.Integer(readonly=True, group_operator=False)
    lane = fields.Char(readonly=True)
    state = fields.Selection(STATES, readonly=True)
    attempts = fields.Integer(readonly=True)
    status = fields.Integer(string="HTTP status", readonly=True, group_operator=False)
    error = fields.Char(readonly=True)
    response_excerpt = fields.Text(readonly=True)
    created_at = fields.Datetime(readonly=True)
    next_at = fields.Datetime(readonly=True)
    finished_at = fields.Datetime(readonly=True)
    retried = fields.Boolean(readonly=True, help="Dead and already sent again by a retry.")
    correlation_id = fields.Char(readonly=True)
    company_id = fields.Many2one("res.company", readonly=True)
    request_body = fields.Text(string="Request (CloudEvent)", compute="_compute_request_body")
    attempt_ids = fields.One2many("odoo_sync.delivery.attempt", "delivery_id", readonly=True)

    @property
    def _table_query(self):
        return """
            SELECT d.id, ep.id AS endpoint_id, d.endpoint, d.event_id::text AS event_uuid,
                   e.seq AS event_id, d.type, d.aggregate_type, d.aggregate_id,
                   d.aggregate_seq, d.lane, d.state, d.attempts, d.status, d.error,
                   d.response_excerpt,
                   d.created_at AT TIME ZONE 'UTC' AS created_at,
                   d.next_at AT TIME ZONE 'UTC' AS next_at,
                   d.finished_at AT TIME ZONE 'UTC' AS finished_at,
                   dd.retried_by IS NOT NULL AS retried,
                   e.correlation_id,
                   %s AS company_id
              FROM odoo_sync.deliveries d
              LEFT JOIN odoo_sync.endpoint ep ON ep.name = d.endpoint
              LEFT JOIN odoo_sync.delivery_done dd ON dd.id = d.id
              LEFT JOIN odoo_sync.event e ON e.id = d.event_id
        """ % COMPANY_OF_AGGREGATE.format(t="d.aggregate_type", i="d.aggregate_id")

    def _compute_request_body(self):
        for rec in self:
            rows = call(self.env.cr,
                        "SELECT jsonb_pretty(odoo_sync.cloudevent(e)) FROM odoo_sync.event e WHERE e.id = %s::uuid",
                        (rec.event_uuid,)) if rec.event_uuid else []
            rec.request_body = rows[0][0] if rows else False

    def _check_manager(self):
        if not self.env.user.has_group("odoo_sync.group_odoo_sync_manager"):
            raise UserError(_("Only odoo_sync managers may retry or replay deliveries."))

    def action_retry(self):
        """Send each selected event again to its endpoint (same webhook-id)."""
        self._check_manager()
        n = 0
        for rec in self:
            n += call(self.env.cr, "SELECT odoo_sync.redeliver(%s::uuid, %s)",
                      (rec.event_uuid, rec.endpoint))[0][0]
        return self.env["odoo_sync.endpoint"]._notify(_("%s deliveries queued.") % n)

    def action_replay(self):
        """Send each selected event again to every endpoint subscribed to it."""
        self._check_manager()
        n = 0
        for uuid_ in set(self.mapped("event_uuid")):
            n += call(self.env.cr, "SELECT odoo_sync.redeliver(%s::uuid, NULL)", (uuid_,))[0][0]
        return self.env["odoo_sync.endpoint"]._notify(_("%s deliveries queued.") % n)

    def action_open_related(self):
        self.ensure_one()
        model = self.aggregate_type
        if model in self.env and (self.aggregate_id or "").isdigit():
            return {"type": "ir.actions.act_window", "res_model": model,
                    "res_id": int(self.aggregate_id), "view_mode": "form"}
        raise UserError(_("No Odoo record for %s %s.") % (model, self.aggregate_id))


class OdooSyncDeliveryAttempt(models.Model):
    _name = "odoo_sync.delivery.attempt"
    _description = "odoo_sync failed delivery attempt"
    _auto = False
    _log_access = False
    _order = "at desc"

    delivery_id = fields.Many2one("odoo_sync.delivery", readonly=True)
    attempt = fields.Integer(readonly=True)
    status = fields.Integer(readonly=True)
    error = fields.Char(readonly=True)
    at = fields.Datetime(readonly=True)
    retry_at = fields.Datetime(readonly=True)

    @property
    def _table_query(self):
        return """
            SELECT a.delivery_id * 100000 + a.attempt AS id, a.delivery_id, a.attempt,
                   a.status, a.error, a.at AT TIME ZONE 'UTC' AS at,
                   a.retry_at AT TIME ZONE 'UTC' AS retry_at
              FROM odoo_sync.delivery_attempt a
        """
