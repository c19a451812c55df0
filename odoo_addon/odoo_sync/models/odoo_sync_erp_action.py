# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""ERP actions queued by the extension's billing rules, executed here
through the ORM by the cron job ir_cron_odoo_sync_erp_actions.

The extension inserts an ir_cron_trigger row and NOTIFYs Odoo's cron
runner when it queues actions, so the job runs within a fraction of a
second.  Each action runs in its own transaction:

    claim (UPDATE ... state = 'running' WHERE id = (SELECT ... FOR UPDATE
    SKIP LOCKED)) -> execute in a savepoint -> record done/failed -> commit

so two cron runs at once never take the same action, a failing action
never undoes another one, and a crash leaves the action pending.  On top of
that every document created carries the action's idempotency key in
account_move.odoo_sync_idempotency_key under a unique constraint, so even a
replayed proof of delivery can never produce a second invoice.

The lifecycle goes through the extension's functions
(odoo_sync.erp_action_claim / erp_action_finish / erp_action_retry), never
through writes to its tables.
"""
import json
import logging
import threading
import traceback

from odoo import _, api, fields, models, Command
from odoo.exceptions import UserError
from odoo.tools import float_compare

from .odoo_sync_sql import call

_logger = logging.getLogger(__name__)

KINDS = [("validate_picking", "Validate picking"), ("create_invoice", "Create invoice"),
         ("post_invoice", "Post invoice"), ("credit_note", "Credit note"),
         ("supplementary_invoice", "Supplementary invoice")]
STATES = [("pending", "Pending"), ("running", "Running"), ("done", "Done"),
          ("failed", "Failed"), ("cancelled", "Cancelled")]


class OdooSyncErpAction(models.Model):
    _name = "odoo_sync.erp.action"
    _description = "odoo_sync ERP action"
    _auto = False
    _log_access = False
    _order = "id desc"
    _rec_name = "idempotency_key"

    idempotency_key = fields.Char(readonly=True)
    kind = fields.Selection(KINDS, readonly=True)
    picking_id = fields.Many2one("stock.picking", readonly=True)
    sale_order_id = fields.Many2one("sale.order", readonly=True)
    company_id = fields.Many2one("res.company", readonly=True)
    payload = fields.Text(readonly=True)
    depends_on = fields.Char(readonly=True)
    state = fields.Selection(STATES, readonly=True)
    inbound_id = fields.Many2one("odoo_sync.inbound.event", readonly=True)
    correlation_id = fields.Char(readonly=True)
    created_at = fields.Datetime(readonly=True)
    updated_at = fields.Datetime(readonly=True)
    attempts = fields.Integer(readonly=True)
    last_error = fields.Text(readonly=True)
    result = fields.Text(readonly=True)
    invoice_id = fields.Many2one("account.move", compute="_compute_invoice_id")

    @property
    def _table_query(self):
        return """
            SELECT a.id, a.idempotency_key, a.kind, a.picking_id, a.sale_order_id,
                   p.company_id, jsonb_pretty(a.payload) AS payload, a.depends_on,
                   a.state, a.inbound_id, a.correlation_id,
                   a.created_at AT TIME ZONE 'UTC' AS created_at,
                   a.updated_at AT TIME ZONE 'UTC' AS updated_at,
                   a.attempts, a.last_error, a.result::text AS result
              FROM odoo_sync.erp_action a
              LEFT JOIN public.stock_picking p ON p.id = a.picking_id
        """

    def _compute_invoice_id(self):
        for rec in self:
            rec.invoice_id = self.env["account.move"].search(
                [("odoo_sync_idempotency_key", "=", rec.idempotency_key)], limit=1)

    # ------------------------------------------------------------ settings
    @api.model
    def _param(self, key, default):
        return self.env["ir.config_parameter"].sudo().get_param("odoo_sync." + key, default)

    # ------------------------------------------------------------ buttons
    def action_retry(self):
        """Failed (or cancelled) actions back to pending, and run the job now."""
        if not self.env.user.has_group("odoo_sync.group_odoo_sync_manager"):
            raise UserError(_("Only odoo_sync managers may retry ERP actions."))
        ids = self.filtered(lambda a: a.state in ("failed", "cancelled", "pending")).ids
        if ids:
            call(self.env.cr, "SELECT odoo_sync.erp_action_retry(%s::bigint[])", (ids,))
            self.env.ref("odoo_sync.ir_cron_odoo_sync_erp_actions")._trigger()
        self.env.invalidate_all()
        return self.env["odoo_sync.endpoint"]._notify(_("%s actions queued again.") % len(ids))

    # ------------------------------------------------------------ cron
    @api.model
    def _cron_run(self, limit=200):
        """Entry point of the cron job: run pending actions, one transaction each."""
        return self._run_pending(limit=limit, commit=True)

    @api.model
    def _run_pending(self, limit=200, commit=True):
        """Claim and execute runnable pending actions (dependencies done),
        in id order; returns the ids of the actions run."""
        testing = getattr(threading.current_thread(), "testing", False)
        commit = commit and not testing
        done_ids = []
        while len(done_ids) < limit:
            action = self._claim(done_ids)
            if not action:
                break
            done_ids.append(action["id"])
            self._execute(action)
            if commit:
                self.env.cr.commit()  # one action per transaction (see file docstring)
        self.env.invalidate_all()
        return done_ids

    def _claim(self, exclude_ids):
        rows = call(self.env.cr, """
            SELECT id, idempotency_key, kind, picking_id, sale_order_id,
                   payload, attempts, correlation_id
              FROM odoo_sync.erp_action_claim(%s::bigint[])""", (list(exclude_ids),))
        if not rows:
            return None
        keys = ("id", "idempotency_key", "kind", "picking_id", "sale_order_id",
                "payload", "attempts", "correlation_id")
        return dict(zip(keys, rows[0]))

    def _finish(self, action_id, state, result=None, error=None):
        call(self.env.cr, "SELECT FROM odoo_sync.erp_action_finish(%s, %s, %s::jsonb, %s)",
             (action_id, state, json.dumps(result) if result is not None else None, error))

    def _execute(self, action):
        method = getattr(self, "_do_" + action["kind"], None)
        try:
            if method is None:
                raise UserError(_("Unknown ERP action kind %r.") % action["kind"])
            with self.env.cr.savepoint():
                result = method(action)
                self.env.flush_all()
            self._finish(action["id"], "done", result=result)
            _logger.info("odoo_sync: %s done: %s", action["idempotency_key"], result)
        except Exception as e:  # noqa: BLE001 -- recorded on the action, see below
            self.env.invalidate_all()
            error = str(e) if isinstance(e, UserError) else "%s: %s" % (type(e).__name__, e)
            max_attempts = int(self._param("max_attempts", 3))
            final = action["attempts"] >= max_attempts
            _logger.warning("odoo_sync: %s failed (attempt %s): %s\n%s",
                            action["idempotency_key"], action["attempts"], error,
                            traceback.format_exc(limit=5))
            self._finish(action["id"], "failed" if final else "pending", error=error)
            if final:
                self._report_failure(action, error)

    def _report_failure(self, action, error):
        """An activity on the sale order (not an e-mail to everybody)."""
        so = self.env["sale.order"].browse(action["sale_order_id"] or [])
        if not so.exists():
            return
        summary = _("odoo_sync: %s failed") % action["idempotency_key"]
        if so.activity_ids.filtered(lambda a: a.summary == summary):
            return
        so.activity_schedule(
            "mail.mail_activity_data_warning", summary=summary,
            note=_("The ERP action %s failed after %s attempts: %s. Fix the cause, then "
                   "press Retry on the action (odoo_sync > ERP actions).")
            % (action["idempotency_key"], action["attempts"], error),
            user_id=so.user_id.id or self.env.user.id)

    # ------------------------------------------------------------ the actions
    def _picking(self, action):
        picking = self.env["stock.picking"].browse(action["picking_id"]).exists()
        if not picking:
            raise UserError(_("Picking %s does not exist.") % action["picking_id"])
        return picking.with_company(picking.company_id)

    def _do_validate_picking(self, action):
        """Validate the picking with the quantities of the proof of delivery;
        what was not delivered goes to a backorder, or is cancelled when the
        policy is no_backorder."""
        picking = self._picking(action)
        payload = action["payload"] or {}
        if picking.state == "done":
            return {"picking_id": picking.id, "already_done": True}
        if picking.state == "cancel":
            raise UserError(_("Picking %s is cancelled.") % picking.name)
        if picking.state in ("draft", "confirmed", "waiting"):
            picking.action_confirm()
            picking.action_assign()
        qty = {int(m["move_id"]): float(m.get("quantity") or 0)
               for m in payload.get("moves") or [] if m.get("move_id")}
        for move in picking.move_ids.filtered(lambda m: m.state not in ("done", "cancel")):
            q = qty.get(move.id, 0.0)
            move.quantity = q
            move.picked = q > 0
        if not any(picking.move_ids.mapped("picked")):
            raise UserError(_("The proof of delivery of %s confirms no quantity.") % picking.name)
        policy = self._param("backorder_policy", "backorder")
        ctx = {"skip_backorder": True, "skip_sms": True, "cancel_backorder": policy == "no_backorder"}
        if policy == "no_backorder":
            ctx["picking_ids_not_to_backorder"] = picking.ids
        res = picking.with_context(**ctx).button_validate()
        if isinstance(res, dict):
            raise UserError(_("Validating %s asked for a wizard (%s).") % (
                picking.name, res.get("res_model")))
        backorder = self.env["stock.picking"].search([("backorder_id", "=", picking.id)], limit=1)
        return {"picking_id": picking.id, "state": picking.state,
                "backorder_id": backorder.id or None, "backorder": backorder.name or None}

    def _charge_lines(self, charges, company, sign=1):
        Charge = self.env["odoo_sync.charge.product"]
        lines = []
        for c in charges or []:
            amount = float(c.get("amount") or 0)
            if not amount:
                continue
            product = Charge.product_for(c.get("code") or "", company)
            # amount is the charge's total; its quantity (minutes, km...) is informative
            name = c.get("description") or product.name
            name = "%s [%s%s]" % (name, c.get("code") or "?",
                                  ", %s" % c["quantity"] if c.get("quantity") else "")
            lines.append(Command.create({
                "product_id": product.id,
                "name": name,
                "quantity": 1.0,
                "price_unit": sign * amount,
            }))
        return lines

    def _existing(self, key):
        return self.env["account.move"].search([("odoo_sync_idempotency_key", "=", key)], limit=1)

    def _do_create_invoice(self, action):
        """Invoice the sale order (delivered quantities for products invoiced
        on delivery) with the shipment's charges as extra lines."""
        key = action["idempotency_key"]
        existing = self._existing(key)
        if existing:
            return {"invoice_id": existing.id, "existing": True}
        so = self.env["sale.order"].browse(action["sale_order_id"]).exists()
        if not so:
            raise UserError(_("Sale order %s does not exist.") % action["sale_order_id"])
        so = so.with_company(so.company_id)
        picking = self._picking(action)
        charges = (action["payload"] or {}).get("charges") or []
        prec = self.env["decimal.precision"].precision_get("Product Unit of Measure")
        invoiceable = so.order_line.filtered(
            lambda l: not l.display_type and float_compare(l.qty_to_invoice, 0, precision_digits=prec) > 0)
        lines = self._charge_lines(charges, so.company_id)
        if invoiceable:
            invoice = so._create_invoices()[:1]
        elif lines:
            invoice = self.env["account.move"].with_company(so.company_id).create(so._prepare_invoice())
        else:
            return {"invoice_id": None, "nothing_to_invoice": True}
        vals = {"odoo_sync_idempotency_key": key, "odoo_sync_picking_id": picking.id}
        if lines:
            vals["invoice_line_ids"] = lines
        invoice.write(vals)
        return {"invoice_id": invoice.id, "amount_total": invoice.amount_total,
                "charges": len(lines)}

    def _do_post_invoice(self, action):
        key = "create_invoice:%s" % action["picking_id"]
        invoice = self._existing(key)
        if not invoice:
            return {"invoice_id": None, "skipped": "no invoice for %s" % key}
        if self._param("post_invoice", "False") in ("False", "0", ""):
            return {"invoice_id": invoice.id, "posted": False, "reason": "posting disabled"}
        if invoice.state == "draft":
            invoice.action_post()
        return {"invoice_id": invoice.id, "name": invoice.name, "state": invoice.state}

    def _do_credit_note(self, action):
        """A negative charge after invoicing: a line on the draft invoice, or
        a credit note of the posted one."""
        return self._adjust(action, refund=True)

    def _do_supplementary_invoice(self, action):
        return self._adjust(action, refund=False)

    def _adjust(self, action, refund):
        key = action["idempotency_key"]
        existing = self._existing(key)
        if existing:
            return {"move_id": existing.id, "existing": True}
        payload = action["payload"] or {}
        invoice = self._existing(payload.get("invoice_action") or "create_invoice:%s" % action["picking_id"])
        so = self.env["sale.order"].browse(action["sale_order_id"]).exists()
        company = (invoice or so).company_id
        charges = payload.get("charges") or []
        if invoice and invoice.state == "draft":
            invoice.write({"invoice_line_ids": self._charge_lines(charges, company)})
            return {"invoice_id": invoice.id, "added_to_draft": True}
        if refund:
            lines = self._charge_lines([dict(c, amount=abs(float(c.get("amount") or 0))) for c in charges], company)
        else:
            lines = self._charge_lines(charges, company)
        if not lines:
            return {"move_id": None, "nothing": True}
        partner = (invoice or so).partner_id if invoice else so.partner_invoice_id
        vals = {
            "move_type": "out_refund" if refund else "out_invoice",
            "partner_id": partner.id,
            "invoice_origin": invoice.name if invoice else so.name,
            "ref": _("Adjustment of %s") % (invoice.name if invoice else so.name),
            "invoice_line_ids": lines,
            "odoo_sync_idempotency_key": key,
            "odoo_sync_picking_id": action["picking_id"],
        }
        if refund and invoice:
            vals["reversed_entry_id"] = invoice.id
        move = self.env["account.move"].with_company(company).create(vals)
        if self._param("post_invoice", "False") not in ("False", "0", ""):
            move.action_post()
        return {"move_id": move.id, "name": move.name, "move_type": move.move_type}
