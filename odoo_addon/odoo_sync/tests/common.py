# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""Fixtures of the odoo_sync tests: a stocked product invoiced on delivery, a
confirmed sale order with its outgoing picking, inbound events signed like
a dispatch system signs them, and the extension's apply step run in the
test's own transaction (the apply worker only sees committed rows)."""
import json
import time
import uuid
from datetime import datetime, timezone

from odoo import Command
from odoo.tests.common import TransactionCase

SECRET = "whsec_" + "c2VjcmV0LWZvci1vZG9vX3N5bmMtdGVzdHMtMDEyMzQ1"  # base64 of a test key


def iso(dt=None):
    dt = dt or datetime.now(timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class OdooSyncFixtures:
    """Mixin: builds Odoo documents and inbound events."""

    @classmethod
    def make_product(cls, env, name="odoo_sync test product", qty=100.0):
        product = env["product.product"].create({
            "name": name, "detailed_type": "product", "invoice_policy": "delivery",
            "list_price": 10.0, "taxes_id": [Command.clear()],
        })
        stock = env.ref("stock.stock_location_stock")
        env["stock.quant"]._update_available_quantity(product, stock, qty)
        return product

    @classmethod
    def make_order(cls, env, product, qty=3.0, partner=None):
        partner = partner or env["res.partner"].create({"name": "odoo_sync customer %s" % uuid.uuid4().hex[:6]})
        so = env["sale.order"].create({
            "partner_id": partner.id,
            "order_line": [Command.create({"product_id": product.id, "product_uom_qty": qty})],
        })
        so.action_confirm()
        picking = so.picking_ids.filtered(lambda p: p.picking_type_code == "outgoing")[:1]
        return so, picking

    @staticmethod
    def event(picking, type_, data, event_id=None, source="urn:odoo_sync:test", when=None):
        return {
            "specversion": "1.0", "id": event_id or "ev-%s" % uuid.uuid4().hex,
            "source": source, "type": type_, "time": iso(when),
            "subject": picking.name, "data": data,
        }

    @classmethod
    def pod(cls, picking, quantities=None, event_id=None, when=None):
        """A proof of delivery; quantities maps move id -> delivered (default: all)."""
        moves = picking.move_ids
        quantities = quantities or {m.id: m.product_uom_qty for m in moves}
        return cls.event(picking, "shipment.pod", {
            "signed_by": "R. Receiver", "signature_ref": "sig://%s" % picking.id,
            "delivered_at": iso(when),
            "lines": [{"move_id": mid, "quantity": q} for mid, q in quantities.items()],
        }, event_id=event_id, when=when)

    @classmethod
    def milestone(cls, picking, status, when=None, **extra):
        data = dict({"status": status}, **extra)
        return cls.event(picking, "shipment.milestone", data, when=when)

    @staticmethod
    def signed_headers(secret, body, ts=None, msg_id=None):
        from ..models.odoo_sync_inbound_source import OdooSyncInboundSource
        ts = str(int(ts if ts is not None else time.time()))
        msg_id = msg_id or "msg_%s" % uuid.uuid4().hex
        sig = OdooSyncInboundSource.sign(None, secret, msg_id, ts, body)
        return {"webhook-id": msg_id, "webhook-timestamp": ts,
                "webhook-signature": sig, "Content-Type": "application/json"}


class OdooSyncCase(TransactionCase, OdooSyncFixtures):
    """Everything in the test's transaction: ingest, apply (what the apply
    worker does, called here synchronously) and the cron job's method."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.env = cls.env(context=dict(cls.env.context, tracking_disable=True))
        cls.product = cls.make_product(cls.env)
        cls.Action = cls.env["odoo_sync.erp.action"]

    def ingest(self, events):
        self.env.flush_all()
        self.env.cr.execute("SELECT status, reason FROM odoo_sync.ingest(%s::jsonb)",
                            (json.dumps(events),))
        return self.env.cr.fetchall()

    def apply_pending(self):
        """Apply the accepted events of this transaction as the apply worker
        does: each event in (picking, event_time, id) order through
        odoo_sync._apply_event, then the billing rules once per picking
        (odoo_sync._evaluate_billing). Returns how many ERP actions were
        queued."""
        self.env.flush_all()
        cr = self.env.cr
        cr.execute("""SELECT id, picking_id FROM odoo_sync.inbound WHERE state = 'accepted'
                       ORDER BY picking_id, event_time, id""")
        last = {}
        queued = 0
        for inbound_id, picking_id in cr.fetchall():
            cr.execute("SELECT odoo_sync._apply_event(%s)", (inbound_id,))
            queued += cr.fetchone()[0] or 0
            last[picking_id] = inbound_id
        for picking_id, inbound_id in last.items():
            cr.execute("""SELECT odoo_sync._evaluate_billing(%s, %s,
                              (SELECT correlation_id FROM odoo_sync.shipment WHERE picking_id = %s))""",
                       (picking_id, inbound_id, picking_id))
            queued += cr.fetchone()[0] or 0
        self.env.invalidate_all()
        return queued

    def run_actions(self):
        ids = self.Action._run_pending(commit=False)
        self.env.invalidate_all()
        return ids

    def actions(self, picking):
        return self.Action.search([("picking_id", "=", picking.id)], order="id")

    def invoices(self, picking):
        return self.env["account.move"].search([("odoo_sync_picking_id", "=", picking.id)])

    def set_partial_billing(self, on):
        self.env.cr.execute("SELECT odoo_sync.set_billing_var('partial_billing', %s::jsonb)",
                            (json.dumps(bool(on)),))
