# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""Proof of delivery -> ERP actions -> picking validated and one invoice,
all in the test's transaction (ingest, apply step, cron method)."""
import psycopg2

from odoo.tests import tagged
from odoo.tools import mute_logger

from .common import OdooSyncCase


@tagged("post_install", "-at_install", "odoo_sync")
class TestErpAction(OdooSyncCase):

    def deliver(self, picking, quantities=None, charges=()):
        events = [self.milestone(picking, "loaded"), self.milestone(picking, "in_transit")]
        events += [self.event(picking, "shipment.charge", c) for c in charges]
        events.append(self.pod(picking, quantities))
        res = self.ingest(events)
        self.assertEqual({r[0] for r in res}, {"accepted"}, res)
        return self.apply_pending(), events[-1]

    def test_full_pod_validates_and_invoices_once(self):
        so, picking = self.make_order(self.env, self.product, qty=3)
        self.assertEqual(picking.state, "assigned")
        queued, pod = self.deliver(picking)
        self.assertEqual(queued, 3)
        self.assertEqual(self.actions(picking).mapped("kind"),
                         ["validate_picking", "create_invoice", "post_invoice"])
        self.assertEqual(picking.odoo_sync_status, "delivered")
        self.assertEqual(picking.odoo_sync_pod_signed_by, "R. Receiver")
        self.assertTrue(picking.odoo_sync_history_ids)

        self.run_actions()
        self.assertEqual(set(self.actions(picking).mapped("state")), {"done"})
        self.assertEqual(picking.state, "done")
        self.assertEqual(picking.move_ids.quantity, 3)
        inv = self.invoices(picking)
        self.assertEqual(len(inv), 1)
        self.assertEqual(inv.state, "posted")
        self.assertEqual(inv.odoo_sync_idempotency_key, "create_invoice:%s" % picking.id)
        self.assertEqual(inv.invoice_line_ids.filtered(lambda l: l.product_id == self.product).quantity, 3)
        self.assertEqual(so.invoice_ids, inv)

        # the same POD again (a retry of the sender) and a new one (a replay)
        self.assertEqual(self.ingest([pod])[0][0], "duplicate")
        replay = self.pod(picking)
        self.assertEqual(self.ingest([replay])[0][0], "accepted")
        self.assertEqual(self.apply_pending(), 0)
        self.run_actions()
        self.run_actions()  # a second cron run
        self.assertEqual(len(self.invoices(picking)), 1)
        self.assertEqual(len(so.invoice_ids), 1)
        self.assertEqual(len(self.actions(picking)), 3)

    def test_partial_pod_backorder_bills_delivered(self):
        self.set_partial_billing(True)
        so, picking = self.make_order(self.env, self.product, qty=3)
        move = picking.move_ids
        queued, _pod = self.deliver(picking, {move.id: 2})
        self.assertEqual(queued, 3)
        self.run_actions()
        self.assertEqual(picking.state, "done")
        self.assertEqual(move.quantity, 2)
        backorder = self.env["stock.picking"].search([("backorder_id", "=", picking.id)])
        self.assertEqual(len(backorder), 1)
        self.assertEqual(backorder.move_ids.product_uom_qty, 1)
        inv = self.invoices(picking)
        self.assertEqual(len(inv), 1)
        self.assertEqual(inv.state, "posted")
        self.assertEqual(inv.invoice_line_ids.filtered(lambda l: l.product_id == self.product).quantity, 2)

    def test_partial_billing_setting(self):
        settings = self.env["res.config.settings"].create({})
        settings.odoo_sync_partial_billing = True
        settings.execute()
        self.env.cr.execute("SELECT DISTINCT vars->'partial_billing' FROM odoo_sync.billing_rule "
                            "WHERE vars ? 'partial_billing'")
        self.assertEqual(self.env.cr.fetchall(), [(True,)])
        self.assertTrue(self.env["res.config.settings"].create({}).odoo_sync_partial_billing)

    def test_partial_pod_without_partial_billing_waits(self):
        self.set_partial_billing(False)
        _so, picking = self.make_order(self.env, self.product, qty=3)
        self.deliver(picking, {picking.move_ids.id: 1})
        self.assertEqual(self.actions(picking).mapped("kind"), ["validate_picking"])
        self.run_actions()
        self.assertEqual(picking.state, "done")
        self.assertFalse(self.invoices(picking))

    def test_no_backorder_policy(self):
        self.set_partial_billing(True)
        self.env["ir.config_parameter"].set_param("odoo_sync.backorder_policy", "no_backorder")
        _so, picking = self.make_order(self.env, self.product, qty=3)
        self.deliver(picking, {picking.move_ids.id: 2})
        self.run_actions()
        self.assertEqual(picking.state, "done")
        self.assertFalse(self.env["stock.picking"].search([("backorder_id", "=", picking.id)]))

    def test_charges_become_invoice_lines(self):
        fuel = self.env["product.product"].create({"name": "Fuel surcharge", "detailed_type": "service",
                                                   "invoice_policy": "order"})
        self.env["odoo_sync.charge.product"].create({"code": "FUEL", "product_id": fuel.id})
        _so, picking = self.make_order(self.env, self.product, qty=1)
        self.deliver(picking, charges=[
            {"code": "FUEL", "kind": "fuel_surcharge", "amount": 4.5, "currency": "USD"},
            {"code": "WAIT", "kind": "waiting_time", "amount": 7.0, "currency": "USD", "quantity": 30}])
        self.run_actions()
        inv = self.invoices(picking)
        self.assertEqual(len(inv), 1)
        lines = inv.invoice_line_ids
        self.assertEqual(lines.filtered(lambda l: l.product_id == fuel).price_unit, 4.5)
        default = self.env.ref("odoo_sync.product_odoo_sync_charge")
        self.assertEqual(lines.filtered(lambda l: l.product_id == default).price_unit, 7.0)

    def test_charge_after_posting_credit_note(self):
        _so, picking = self.make_order(self.env, self.product, qty=1)
        self.deliver(picking)
        self.run_actions()
        inv = self.invoices(picking)
        self.assertEqual(inv.state, "posted")
        self.ingest([self.event(picking, "shipment.charge",
                                {"code": "WAIT", "kind": "waiting_time", "amount": -3.0, "currency": "USD"})])
        self.apply_pending()
        self.run_actions()
        refund = self.invoices(picking).filtered(lambda m: m.move_type == "out_refund")
        self.assertEqual(len(refund), 1)
        self.assertEqual(refund.reversed_entry_id, inv)
        self.assertEqual(refund.amount_untaxed, 3.0)
        self.assertEqual(refund.state, "posted")

    @mute_logger("odoo.addons.odoo_sync.models.odoo_sync_erp_action")
    def test_error_recorded_retried_and_reported(self):
        self.env["ir.config_parameter"].set_param("odoo_sync.max_attempts", "2")
        so, picking = self.make_order(self.env, self.product, qty=1)
        self.deliver(picking)
        picking.action_cancel()
        self.run_actions()
        validate = self.actions(picking)[0]
        self.assertEqual(validate.state, "pending")
        self.assertIn("cancelled", validate.last_error)
        self.assertEqual(validate.attempts, 1)
        self.run_actions()
        self.assertEqual(validate.state, "failed")
        activity = so.activity_ids.filtered(lambda a: "odoo_sync" in (a.summary or ""))
        self.assertEqual(len(activity), 1)
        self.assertIn(validate.idempotency_key, activity.summary)
        # the dependent actions wait, and nothing was invoiced
        self.assertEqual(self.actions(picking)[1:].mapped("state"), ["pending", "pending"])
        self.assertFalse(self.invoices(picking))
        # Retry puts it back (it fails again: the picking is still cancelled)
        validate.action_retry()
        self.assertEqual(validate.state, "pending")
        self.assertEqual(validate.attempts, 0)

    def test_idempotency_key_unique(self):
        _so, picking = self.make_order(self.env, self.product, qty=1)
        self.deliver(picking)
        self.run_actions()
        inv = self.invoices(picking)
        with mute_logger("odoo.sql_db"), self.assertRaises(psycopg2.IntegrityError):
            with self.env.cr.savepoint():
                self.env["account.move"].create({
                    "move_type": "out_invoice", "partner_id": inv.partner_id.id,
                    "odoo_sync_idempotency_key": inv.odoo_sync_idempotency_key})
                self.env.flush_all()

    def test_trace_and_dispatch_tab(self):
        so, picking = self.make_order(self.env, self.product, qty=1)
        self.deliver(picking)
        self.run_actions()
        action = so.action_odoo_sync_trace()
        trace = self.env["odoo_sync.trace"].browse(action["res_id"])
        self.assertEqual(trace.inbound_ids.mapped("type").count("shipment.pod"), 1)
        self.assertEqual(len(trace.action_ids), 3)
        self.assertIn(self.invoices(picking), trace.invoice_ids)
        self.assertEqual(picking.odoo_sync_invoice_ids, self.invoices(picking))
        self.assertEqual(len(picking.odoo_sync_action_ids), 3)

    def test_multi_company_rules(self):
        _so, picking = self.make_order(self.env, self.product, qty=1)
        self.deliver(picking)
        other = self.env["res.company"].create({"name": "odoo_sync other company"})
        user = self.env["res.users"].create({
            "name": "other company sync user", "login": "sync_other_t",
            "company_id": other.id, "company_ids": [(6, 0, other.ids)],
            "groups_id": [(6, 0, [self.env.ref("odoo_sync.group_odoo_sync_user").id,
                                  self.env.ref("stock.group_stock_user").id])]})
        for model in ("odoo_sync.inbound.event", "odoo_sync.erp.action", "odoo_sync.shipment.history"):
            mine = self.env[model].search([("picking_id", "=", picking.id)])
            self.assertTrue(mine, model)
            self.assertFalse(self.env[model].with_user(user).search([("picking_id", "=", picking.id)]), model)

    def test_reapply_dead_inbound(self):
        _so, picking = self.make_order(self.env, self.product, qty=1)
        self.ingest([self.milestone(picking, "loaded")])
        self.env.cr.execute("UPDATE odoo_sync.inbound SET state = 'dead', error_message = 'boom' "
                            "WHERE picking_id = %s", (picking.id,))
        dead = self.env["odoo_sync.inbound.event"].search([("picking_id", "=", picking.id)])
        self.assertEqual(dead.state, "dead")
        dead.action_reapply()
        self.env.invalidate_all()
        self.assertEqual(dead.state, "accepted")
