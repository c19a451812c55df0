# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""Inbound events (the extension's inbox); Reapply calls odoo_sync.reapply."""
from odoo import _, fields, models
from odoo.exceptions import UserError

from .odoo_sync_sql import call


class OdooSyncInboundEvent(models.Model):
    _name = "odoo_sync.inbound.event"
    _description = "odoo_sync inbound event"
    _auto = False
    _log_access = False
    _order = "id desc"
    _rec_name = "event_id"

    source = fields.Char(readonly=True)
    event_id = fields.Char(string="Event id", readonly=True)
    type = fields.Char(readonly=True)
    subject = fields.Char(readonly=True)
    picking_id = fields.Many2one("stock.picking", readonly=True)
    sale_order_id = fields.Many2one("sale.order", readonly=True)
    company_id = fields.Many2one("res.company", readonly=True)
    event_time = fields.Datetime(readonly=True)
    correlation_id = fields.Char(readonly=True)
    data = fields.Text(readonly=True)
    envelope = fields.Text(readonly=True)
    state = fields.Selection([("accepted", "Accepted"), ("applied", "Applied"),
                              ("dead", "Dead")], readonly=True)
    received_at = fields.Datetime(readonly=True)
    applied_at = fields.Datetime(readonly=True)
    attempts = fields.Integer(readonly=True)
    error_sqlstate = fields.Char(string="SQLSTATE", readonly=True)
    error_message = fields.Char(readonly=True)
    error_detail = fields.Text(readonly=True)
    dead_at = fields.Datetime(readonly=True)

    @property
    def _table_query(self):
        return """
            SELECT i.id, i.source, i.event_id, i.type, i.subject, i.picking_id,
                   p.sale_id AS sale_order_id, p.company_id,
                   i.event_time AT TIME ZONE 'UTC' AS event_time, i.correlation_id,
                   jsonb_pretty(i.data) AS data, jsonb_pretty(i.envelope) AS envelope,
                   i.state, i.received_at AT TIME ZONE 'UTC' AS received_at,
                   i.applied_at AT TIME ZONE 'UTC' AS applied_at, i.attempts,
                   i.error_sqlstate, i.error_message, i.error_detail,
                   i.dead_at AT TIME ZONE 'UTC' AS dead_at
              FROM odoo_sync.inbound i
              LEFT JOIN public.stock_picking p ON p.id = i.picking_id
        """

    def action_reapply(self):
        """Put the selected dead events back in the apply worker's queue."""
        if not self.env.user.has_group("odoo_sync.group_odoo_sync_manager"):
            raise UserError(_("Only odoo_sync managers may reapply inbound events."))
        n = 0
        for rec in self:
            n += 1 if call(self.env.cr, "SELECT odoo_sync.reapply(%s)", (rec.id,))[0][0] else 0
        return self.env["odoo_sync.endpoint"]._notify(
            _("%s of %s events queued again.") % (n, len(self)))
