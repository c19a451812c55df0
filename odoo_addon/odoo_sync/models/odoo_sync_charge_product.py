# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
from odoo import api, fields, models


class OdooSyncChargeProduct(models.Model):
    _name = "odoo_sync.charge.product"
    _description = "odoo_sync: product invoiced for a charge code"
    _order = "code"

    code = fields.Char(required=True, help="The charge code sent by dispatch (shipment.charge data.code).")
    product_id = fields.Many2one("product.product", required=True,
                                 domain=[("sale_ok", "=", True)])
    company_id = fields.Many2one("res.company")

    _sql_constraints = [("code_company_uniq", "unique(code, company_id)",
                         "One product per charge code and company.")]

    @api.model
    def product_for(self, code, company):
        """The product to invoice a charge code with: the mapping of the
        company, the company-independent one, else the default product."""
        rec = self.search([("code", "=", code), ("company_id", "in", [company.id, False])],
                          order="company_id", limit=1)
        if rec:
            return rec.product_id
        param = self.env["ir.config_parameter"].sudo().get_param(
            "odoo_sync.default_charge_product_id")
        product = self.env["product.product"].browse(int(param)) if param else None
        if product and product.exists():
            return product
        return self.env.ref("odoo_sync.product_odoo_sync_charge")
