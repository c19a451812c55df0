# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
from odoo import api, fields, models

from .odoo_sync_sql import call


class ResConfigSettings(models.TransientModel):
    _inherit = "res.config.settings"

    odoo_sync_post_invoice = fields.Boolean(
        string="Post invoices created from a proof of delivery",
        config_parameter="odoo_sync.post_invoice", default=True)
    odoo_sync_backorder_policy = fields.Selection(
        [("backorder", "Create a backorder"), ("no_backorder", "Cancel the rest")],
        string="Quantities not delivered", config_parameter="odoo_sync.backorder_policy",
        default="backorder")
    odoo_sync_max_attempts = fields.Integer(
        string="Attempts per ERP action", config_parameter="odoo_sync.max_attempts", default=3)
    odoo_sync_default_charge_product_id = fields.Many2one(
        "product.product", string="Default charge product",
        config_parameter="odoo_sync.default_charge_product_id")
    odoo_sync_partial_billing = fields.Boolean(
        string="Invoice partial deliveries",
        help="Invoice what a partial proof of delivery confirms at once (the partial_billing "
             "variable of the extension's billing rules), instead of waiting for the rest.")

    @api.model
    def get_values(self):
        res = super().get_values()
        rows = call(self.env.cr, """
            SELECT coalesce(bool_or((vars->>'partial_billing')::boolean), false)
              FROM odoo_sync.billing_rule WHERE enabled AND vars ? 'partial_billing'""")
        res["odoo_sync_partial_billing"] = bool(rows and rows[0][0])
        return res

    def set_values(self):
        super().set_values()
        if not self.env.user.has_group("odoo_sync.group_odoo_sync_manager"):
            return
        call(self.env.cr, "SELECT odoo_sync.set_billing_var('partial_billing', to_jsonb(%s::boolean))",
             (self.odoo_sync_partial_billing,))
