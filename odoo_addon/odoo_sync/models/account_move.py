# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
from odoo import fields, models


class AccountMove(models.Model):
    _inherit = "account.move"

    odoo_sync_idempotency_key = fields.Char(
        string="odoo_sync key", copy=False, readonly=True, index=True,
        help="Idempotency key of the odoo_sync ERP action that created this document: "
             "unique, so a replayed proof of delivery cannot create a second one.")
    odoo_sync_picking_id = fields.Many2one("stock.picking", string="Shipment", copy=False,
                                           readonly=True, index="btree_not_null")

    _sql_constraints = [
        ("odoo_sync_idempotency_key_uniq", "unique(odoo_sync_idempotency_key)",
         "An invoice with this odoo_sync idempotency key exists already."),
    ]
