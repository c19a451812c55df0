# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
from odoo import models


class SaleOrder(models.Model):
    _inherit = "sale.order"

    def action_odoo_sync_trace(self):
        self.ensure_one()
        trace = self.env["odoo_sync.trace"].create({"sale_order_id": self.id})
        trace._onchange_sale_order_id()
        return {"type": "ir.actions.act_window", "res_model": "odoo_sync.trace",
                "res_id": trace.id, "view_mode": "form", "target": "current",
                "name": "Trace %s" % self.name}
