# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
from odoo import fields, models


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
