# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""Senders allowed to POST to /odoo_sync/events/<name>, with the Standard
Webhooks secret their requests are signed with (write-only in the UI)."""
import base64
import hashlib
import hmac

from odoo import api, fields, models


class OdooSyncInboundSource(models.Model):
    _name = "odoo_sync.inbound.source"
    _description = "odoo_sync inbound source"
    _order = "name"

    name = fields.Char(required=True, help="The <source> in POST /odoo_sync/events/<source>.")
    active = fields.Boolean(default=True)
    company_id = fields.Many2one("res.company", default=lambda self: self.env.company)
    secret = fields.Char(groups="base.group_system", copy=False, prefetch=False)
    secret_hint = fields.Char(compute="_compute_secret_hint")
    new_secret = fields.Char(string="New secret", compute="_compute_secret_hint",
                             inverse="_inverse_new_secret",
                             help="Write-only: whsec_<base64> (Standard Webhooks). Never shown back.")
    tolerance = fields.Integer(string="Timestamp tolerance (s)", default=300)
    max_body_kb = fields.Integer(string="Largest body (kB)", default=1024)

    _sql_constraints = [("name_uniq", "unique(name)", "An inbound source of that name exists.")]

    @api.depends("name")
    def _compute_secret_hint(self):
        for rec in self:
            s = rec.sudo().secret or ""
            rec.secret_hint = ("****" + s[-4:]) if len(s) > 8 else ("****" if s else False)
            rec.new_secret = False

    def _inverse_new_secret(self):
        for rec in self:
            if rec.new_secret:
                rec.sudo().secret = rec.new_secret

    def _key(self):
        secret = self.sudo().secret or ""
        if secret.startswith("whsec_"):
            return base64.b64decode(secret[6:])
        return secret.encode()

    def verify(self, msg_id, timestamp, body, signatures):
        """True when one of the space separated "v1,<base64>" signatures is
        HMAC-SHA256 of "<msg_id>.<timestamp>.<body>" with this source's key."""
        self.ensure_one()
        if not self.sudo().secret:
            return False
        expected = base64.b64encode(hmac.new(
            self._key(), b"%s.%s.%s" % (msg_id.encode(), timestamp.encode(), body),
            hashlib.sha256).digest()).decode()
        for sig in (signatures or "").split():
            version, _sep, value = sig.partition(",")
            if version == "v1" and hmac.compare_digest(value, expected):
                return True
        return False

    @api.model
    def sign(self, secret, msg_id, timestamp, body):
        """The webhook-signature header value for body (tests, demo, senders)."""
        key = base64.b64decode(secret[6:]) if secret.startswith("whsec_") else secret.encode()
        if isinstance(body, str):
            body = body.encode()
        return "v1," + base64.b64encode(hmac.new(
            key, b"%s.%s.%s" % (msg_id.encode(), str(timestamp).encode(), body),
            hashlib.sha256).digest()).decode()
