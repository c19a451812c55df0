# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
from unittest.mock import patch

from odoo.exceptions import UserError
from odoo.tests import tagged
from odoo.tests.common import TransactionCase
from odoo.tools import mute_logger

from .. import pre_init_hook
from ..models import odoo_sync_sql


@tagged("post_install", "-at_install", "odoo_sync")
class TestInstall(TransactionCase):

    def test_requirements_met_here(self):
        self.assertEqual(odoo_sync_sql.missing_requirements(self.env.cr), [])

    def test_install_without_extension_says_what_to_run(self):
        with patch.object(odoo_sync_sql, "extension_present", return_value=None):
            with self.assertRaises(UserError) as ctx:
                pre_init_hook(self.env)
        msg = str(ctx.exception)
        self.assertIn("CREATE EXTENSION odoo_sync", msg)
        self.assertIn("shared_preload_libraries", msg)

    @mute_logger("odoo.sql_db")
    def test_sql_error_becomes_user_error_and_transaction_survives(self):
        with self.assertRaisesRegex(UserError, "endpoint .* does not exist"):
            odoo_sync_sql.call(self.env.cr, "SELECT odoo_sync.retry_dead(%s)", ("no-such-endpoint",))
        self.env.cr.execute("SELECT 1")
        self.assertEqual(self.env.cr.fetchone()[0], 1)

    def test_screens_read(self):
        """Every model reads its extension view without error."""
        for model in ("odoo_sync.endpoint", "odoo_sync.subscription", "odoo_sync.delivery",
                      "odoo_sync.delivery.attempt", "odoo_sync.event", "odoo_sync.inbound.event",
                      "odoo_sync.shipment", "odoo_sync.shipment.history", "odoo_sync.erp.action"):
            self.env[model].search_read([], limit=5)
        data = self.env["odoo_sync.dashboard"].get_data()
        for section in ("endpoints", "inbound", "erp_actions", "dead_by_type"):
            self.assertIsNotNone(data[section], section)

    def test_endpoint_crud_through_sql_functions(self):
        Endpoint = self.env["odoo_sync.endpoint"]
        # a loopback URL: the test clusters run with odoo_sync.allow_private_endpoints = on
        ep = Endpoint.create({"name": "t-crud", "url": "http://127.0.0.1:9/hook",
                              "new_secret": "whsec_dGVzdC1zZWNyZXQtdGVzdC1zZWNyZXQ=",
                              "subscription_ids": [(0, 0, {"types": "dispatch.*, invoice.posted"})]})
        self.assertEqual(ep.name, "t-crud")
        self.assertTrue(ep.secret_hint.startswith("****"))
        self.assertFalse(ep.new_secret, "the secret is never read back")
        self.assertEqual(ep.subscription_ids.types, "dispatch.*, invoice.posted")
        ep.write({"enabled": False, "max_attempts": 3})
        self.assertFalse(ep.enabled)
        self.assertEqual(ep.max_attempts, 3)
        ep.unlink()
        self.assertFalse(Endpoint.search([("name", "=", "t-crud")]))

    def test_user_cannot_configure(self):
        user = self.env["res.users"].create({
            "name": "sync user", "login": "sync_user_t",
            "groups_id": [(6, 0, [self.env.ref("odoo_sync.group_odoo_sync_user").id])]})
        Endpoint = self.env["odoo_sync.endpoint"].with_user(user)
        Endpoint.search([])  # may read
        with self.assertRaises(Exception):
            Endpoint.create({"name": "nope", "url": "http://127.0.0.1:9/"})
