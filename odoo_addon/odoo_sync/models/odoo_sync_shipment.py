# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""Shipment state and history as kept by the extension's inbound handlers."""
from odoo import fields, models


class OdooSyncShipment(models.Model):
    _name = "odoo_sync.shipment"
    _description = "odoo_sync shipment"
    _auto = False
    _log_access = False
    _rec_name = "picking_name"

    picking_id = fields.Many2one("stock.picking", readonly=True)
    picking_name = fields.Char(readonly=True)
    sale_order_id = fields.Many2one("sale.order", readonly=True)
    company_id = fields.Many2one("res.company", readonly=True)
    status = fields.Char(readonly=True)
    status_time = fields.Datetime(readonly=True)
    delayed = fields.Boolean(readonly=True)
    eta = fields.Datetime(string="ETA", readonly=True)
    last_location = fields.Char(readonly=True)
    open_exception = fields.Char(readonly=True)
    route = fields.Char(readonly=True)
    vehicle = fields.Char(readonly=True)
    driver = fields.Char(readonly=True)
    tracking_ref = fields.Char(readonly=True)
    pod_signed_by = fields.Char(string="POD signed by", readonly=True)
    delivered_at = fields.Datetime(readonly=True)
    fully_delivered = fields.Boolean(readonly=True)
    weight = fields.Float(readonly=True)
    charges = fields.Text(readonly=True)
    charges_total = fields.Float(readonly=True)
    correlation_id = fields.Char(readonly=True)

    @property
    def _table_query(self):
        return """
            SELECT s.picking_id AS id, s.picking_id, s.picking_name, s.sale_order_id,
                   p.company_id, s.status,
                   s.status_time AT TIME ZONE 'UTC' AS status_time, s.delayed,
                   s.eta AT TIME ZONE 'UTC' AS eta,
                   concat_ws(' ', s.last_location->>'name', s.last_location->>'lat',
                             s.last_location->>'lon') AS last_location,
                   CASE WHEN s.open_exception IS NOT NULL THEN
                        concat_ws(': ', s.open_exception->>'code', s.open_exception->>'text') END
                        AS open_exception,
                   s.route, s.vehicle, s.driver, s.tracking_ref,
                   s.pod->>'signed_by' AS pod_signed_by,
                   s.delivered_at AT TIME ZONE 'UTC' AS delivered_at,
                   s.fully_delivered, s.weight::float8 AS weight,
                   (SELECT string_agg(concat_ws(' ', c->>'code', c->>'amount', c->>'currency'), ', ')
                      FROM jsonb_array_elements(s.charges) c) AS charges,
                   (SELECT coalesce(sum((c->>'amount')::numeric), 0)::float8
                      FROM jsonb_array_elements(s.charges) c) AS charges_total,
                   s.correlation_id
              FROM odoo_sync.shipment s
              LEFT JOIN public.stock_picking p ON p.id = s.picking_id
        """


class OdooSyncShipmentHistory(models.Model):
    _name = "odoo_sync.shipment.history"
    _description = "odoo_sync shipment timeline entry"
    _auto = False
    _log_access = False
    _order = "event_time desc, id desc"
    _rec_name = "type"

    picking_id = fields.Many2one("stock.picking", readonly=True)
    company_id = fields.Many2one("res.company", readonly=True)
    inbound_id = fields.Many2one("odoo_sync.inbound.event", readonly=True)
    type = fields.Char(readonly=True)
    event_time = fields.Datetime(readonly=True)
    status_before = fields.Char(readonly=True)
    status_after = fields.Char(readonly=True)
    effect = fields.Char(readonly=True)
    summary = fields.Char(readonly=True)
    applied_at = fields.Datetime(readonly=True)

    @property
    def _table_query(self):
        return """
            SELECT h.id, h.picking_id, p.company_id, h.inbound_id, h.type,
                   h.event_time AT TIME ZONE 'UTC' AS event_time,
                   h.status_before, h.status_after, h.effect,
                   left(concat_ws(' ', h.data->>'status', h.data->>'eta',
                        h.data->>'exception_code', h.data->>'signed_by',
                        h.data->>'code', h.data->>'amount', h.data->>'route'), 200) AS summary,
                   h.applied_at AT TIME ZONE 'UTC' AS applied_at
              FROM odoo_sync.shipment_history h
              LEFT JOIN public.stock_picking p ON p.id = h.picking_id
        """
