# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""The extension's event log (read only: it is immutable)."""
from odoo import fields, models

from .odoo_sync_delivery import COMPANY_OF_AGGREGATE


class OdooSyncEvent(models.Model):
    _name = "odoo_sync.event"
    _description = "odoo_sync event"
    _auto = False
    _log_access = False
    _order = "id desc"
    _rec_name = "type"

    uuid = fields.Char(readonly=True)
    type = fields.Char(readonly=True)
    source = fields.Char(readonly=True)
    aggregate_type = fields.Char(readonly=True)
    aggregate_id = fields.Char(readonly=True)
    aggregate_seq = fields.Integer(readonly=True)
    lane = fields.Char(readonly=True)
    correlation_id = fields.Char(readonly=True)
    commit_time = fields.Datetime(readonly=True)
    captured_at = fields.Datetime(readonly=True)
    payload = fields.Text(readonly=True)
    company_id = fields.Many2one("res.company", readonly=True)
    delivery_ids = fields.One2many("odoo_sync.delivery", "event_id", readonly=True)

    @property
    def _table_query(self):
        # seq is the integer key the ORM needs; the uuid is the CloudEvents id
        return """
            SELECT e.seq AS id, e.id::text AS uuid, e.type, e.source,
                   e.aggregate_type, e.aggregate_id, e.aggregate_seq, e.lane,
                   e.correlation_id,
                   e.commit_time AT TIME ZONE 'UTC' AS commit_time,
                   e.captured_at AT TIME ZONE 'UTC' AS captured_at,
                   jsonb_pretty(e.payload) AS payload,
                   %s AS company_id
              FROM odoo_sync.event e
        """ % COMPANY_OF_AGGREGATE.format(t="e.aggregate_type", i="e.aggregate_id")
