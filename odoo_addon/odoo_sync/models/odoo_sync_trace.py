# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""Trace: the whole chain of one sale order or correlation id on one screen
(events, deliveries, inbound events, ERP actions, invoices)."""
from odoo import api, fields, models

from .odoo_sync_sql import call


class OdooSyncTrace(models.TransientModel):
    _name = "odoo_sync.trace"
    _description = "odoo_sync trace"

    sale_order_id = fields.Many2one("sale.order")
    correlation_id = fields.Char()
    event_ids = fields.Many2many("odoo_sync.event", compute="_compute_chain")
    delivery_ids = fields.Many2many("odoo_sync.delivery", compute="_compute_chain")
    inbound_ids = fields.Many2many("odoo_sync.inbound.event", compute="_compute_chain")
    action_ids = fields.Many2many("odoo_sync.erp.action", compute="_compute_chain")
    invoice_ids = fields.Many2many("account.move", compute="_compute_chain")
    picking_ids = fields.Many2many("stock.picking", compute="_compute_chain")

    @api.onchange("sale_order_id")
    def _onchange_sale_order_id(self):
        if self.sale_order_id:
            self.correlation_id = self._so_correlation(self.sale_order_id)

    def _so_correlation(self, so):
        rows = call(self.env.cr, "SELECT odoo_sync.correlation_id('sale.order', %s)", (str(so.id),))
        return rows[0][0] if rows else False

    @api.depends("sale_order_id", "correlation_id")
    def _compute_chain(self):
        for rec in self:
            corr = rec.correlation_id or (rec.sale_order_id and rec._so_correlation(rec.sale_order_id))
            so = rec.sale_order_id
            if not so and corr:
                so = self.env["sale.order"]
                rows = call(self.env.cr, """
                    SELECT sale_order_id FROM odoo_sync.shipment WHERE correlation_id = %s
                    UNION SELECT sale_order_id FROM odoo_sync.erp_action WHERE correlation_id = %s
                    LIMIT 1""", (corr, corr))
                if rows and rows[0][0]:
                    so = self.env["sale.order"].browse(rows[0][0])
            pickings = so.picking_ids if so else self.env["stock.picking"]
            rec.picking_ids = pickings
            rec.event_ids = self.env["odoo_sync.event"].search(
                [("correlation_id", "=", corr)], order="id") if corr else False
            rec.delivery_ids = self.env["odoo_sync.delivery"].search(
                [("event_id", "in", rec.event_ids.ids)], order="id") if rec.event_ids else False
            inbound_domain = ["|", ("correlation_id", "=", corr or "-"), ("picking_id", "in", pickings.ids)]
            rec.inbound_ids = self.env["odoo_sync.inbound.event"].search(inbound_domain, order="event_time, id")
            rec.action_ids = self.env["odoo_sync.erp.action"].search(
                ["|", ("picking_id", "in", pickings.ids), ("correlation_id", "=", corr or "-")], order="id")
            rec.invoice_ids = (so.invoice_ids if so else self.env["account.move"]) | self.env["account.move"].search(
                [("odoo_sync_picking_id", "in", pickings.ids)])
