# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
from . import (
    odoo_sync_sql,
    odoo_sync_endpoint,
    odoo_sync_delivery,
    odoo_sync_event,
    odoo_sync_inbound_event,
    odoo_sync_inbound_source,
    odoo_sync_shipment,
    odoo_sync_charge_product,
    odoo_sync_erp_action,
    odoo_sync_dashboard,
    odoo_sync_trace,
    account_move,
    stock_picking,
    sale_order,
    res_config_settings,
)
