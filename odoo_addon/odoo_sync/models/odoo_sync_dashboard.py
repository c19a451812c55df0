# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""Data of the dashboard client action (polled every few seconds)."""
import logging

from odoo import api, models

from .odoo_sync_sql import call_dict

_logger = logging.getLogger(__name__)

SECTIONS = {
    "endpoints": """
        SELECT id, name, enabled, circuit, backlog, in_flight,
               round(extract(epoch FROM oldest_pending_age)::numeric, 1) AS oldest_pending_s,
               round(delivered_5m / 5.0, 1) AS delivered_per_min,
               CASE WHEN coalesce(delivered_5m, 0) + coalesce(failed_attempts_5m, 0) = 0 THEN 0
                    ELSE round(100.0 * failed_attempts_5m / (delivered_5m + failed_attempts_5m), 1)
               END AS error_rate_pct,
               latency_p50_ms, latency_p95_ms, dead, last_error
          FROM odoo_sync.endpoint_status ORDER BY name""",
    "capture": """
        SELECT slot_name, active, lag_bytes, retained_wal_bytes, enabled_rules, open_errors
          FROM odoo_sync.capture_status""",
    "inbound": """
        SELECT count(*) FILTER (WHERE state = 'accepted') AS backlog,
               round(extract(epoch FROM now() - min(received_at) FILTER (WHERE state = 'accepted'))::numeric, 1)
                   AS oldest_s,
               count(*) FILTER (WHERE state = 'dead') AS dead,
               count(*) FILTER (WHERE received_at > now() - interval '5 minutes') AS received_5m
          FROM odoo_sync.inbound""",
    "dead_by_type": """
        SELECT 'delivery' AS kind, coalesce(type, '?') AS type, count(*) AS n
          FROM odoo_sync.dead_letters GROUP BY type
        UNION ALL
        SELECT 'inbound', type, count(*) FROM odoo_sync.inbound_dead GROUP BY type
        ORDER BY 3 DESC, 2""",
    "erp_actions": """
        SELECT state, count(*) AS n FROM odoo_sync.erp_action GROUP BY state ORDER BY state""",
}


class OdooSyncDashboard(models.AbstractModel):
    _name = "odoo_sync.dashboard"
    _description = "odoo_sync dashboard data"

    @api.model
    def get_data(self):
        """Every section of the dashboard; a section whose view is missing
        (an older extension) is None rather than an error."""
        self.env["odoo_sync.endpoint"].check_access_rights("read")
        out = {}
        for name, query in SECTIONS.items():
            try:
                rows = call_dict(self.env.cr, query)
            except Exception as e:  # noqa: BLE001 -- shown as "not available"
                _logger.debug("odoo_sync dashboard: %s: %s", name, e)
                rows = None
            if rows is not None:
                rows = [{k: (float(v) if hasattr(v, "as_integer_ratio") and not isinstance(v, (int, float)) else v)
                         for k, v in r.items()} for r in rows]
            out[name] = rows
        return out
