# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
from odoo import fields, models

# picking field -> odoo_sync.shipment field (read on every form load: the
# shipment state changes outside the ORM, so nothing is cached or stored)
_SHIPMENT_FIELDS = {
    "odoo_sync_status": "status",
    "odoo_sync_eta": "eta",
    "odoo_sync_delayed": "delayed",
    "odoo_sync_exception": "open_exception",
    "odoo_sync_route": "route",
    "odoo_sync_pod_signed_by": "pod_signed_by",
    "odoo_sync_delivered_at": "delivered_at",
    "odoo_sync_charges": "charges",
}


class StockPicking(models.Model):
    _inherit = "stock.picking"

    odoo_sync_shipment_id = fields.Many2one("odoo_sync.shipment", compute="_compute_odoo_sync",
                                            string="Shipment (odoo_sync)")
    odoo_sync_status = fields.Char(compute="_compute_odoo_sync", string="Dispatch status")
    odoo_sync_eta = fields.Datetime(compute="_compute_odoo_sync", string="ETA")
    odoo_sync_delayed = fields.Boolean(compute="_compute_odoo_sync", string="Delayed")
    odoo_sync_exception = fields.Char(compute="_compute_odoo_sync", string="Open exception")
    odoo_sync_route = fields.Char(compute="_compute_odoo_sync", string="Route")
    odoo_sync_pod_signed_by = fields.Char(compute="_compute_odoo_sync", string="POD signed by")
    odoo_sync_delivered_at = fields.Datetime(compute="_compute_odoo_sync", string="Delivered at")
    odoo_sync_charges = fields.Char(compute="_compute_odoo_sync", string="Charges")
    odoo_sync_history_ids = fields.One2many("odoo_sync.shipment.history", "picking_id", string="Timeline")
    odoo_sync_action_ids = fields.One2many("odoo_sync.erp.action", "picking_id", string="ERP actions")
    odoo_sync_invoice_ids = fields.One2many("account.move", "odoo_sync_picking_id", string="Invoices (odoo_sync)")

    def _compute_odoo_sync(self):
        Shipment = self.env["odoo_sync.shipment"]
        ids = [i for i in self.ids if isinstance(i, int)]
        found = {s.id: s for s in Shipment.search([("id", "in", ids)])} if ids else {}
        for rec in self:
            s = found.get(rec.id, Shipment)
            rec.odoo_sync_shipment_id = s
            for pf, sf in _SHIPMENT_FIELDS.items():
                rec[pf] = s[sf] if s else False

    def action_odoo_sync_trace(self):
        self.ensure_one()
        return self.sale_id.action_odoo_sync_trace() if self.sale_id else False
