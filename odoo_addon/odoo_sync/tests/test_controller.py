# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""The inbound controller, in the test's transaction (HttpCase shares it)."""
import json
import time

from odoo.tests import tagged
from odoo.tests.common import HttpCase
from odoo.tools import mute_logger

from .common import SECRET, OdooSyncFixtures


@tagged("post_install", "-at_install", "odoo_sync")
class TestController(HttpCase, OdooSyncFixtures):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.source = cls.env["odoo_sync.inbound.source"].create(
            {"name": "dispatch-test", "new_secret": SECRET, "max_body_kb": 64})
        cls.product = cls.make_product(cls.env)
        cls.so, cls.picking = cls.make_order(cls.env, cls.product)
        cls.url = "/odoo_sync/events/dispatch-test"

    def post(self, payload, headers=None, secret=SECRET, raw=None, url=None):
        body = raw if raw is not None else json.dumps(payload)
        hdrs = self.signed_headers(secret, body)
        hdrs.update(headers or {})
        self.env.flush_all()
        return self.url_open(url or self.url, data=body.encode() if isinstance(body, str) else body,
                             headers=hdrs, timeout=30)

    def inbound(self, event_id):
        self.env.cr.execute("SELECT state FROM odoo_sync.inbound WHERE event_id = %s", (event_id,))
        row = self.env.cr.fetchone()
        return row and row[0]

    def test_accepted_then_duplicate(self):
        ev = self.milestone(self.picking, "loaded")
        r = self.post(ev)
        self.assertEqual(r.status_code, 202, r.text)
        self.assertEqual(r.json()["results"][0]["status"], "accepted")
        self.assertEqual(self.inbound(ev["id"]), "accepted")
        r = self.post(ev)
        self.assertEqual(r.status_code, 200, r.text)
        self.assertEqual(r.json()["results"][0]["status"], "duplicate")

    def test_batch_with_rejected_event_is_422_with_reasons(self):
        good = self.milestone(self.picking, "in_transit")
        bad = self.event(self.picking, "shipment.teleported", {})
        r = self.post([good, bad])
        self.assertEqual(r.status_code, 422, r.text)
        res = r.json()["results"]
        self.assertEqual([x["status"] for x in res], ["accepted", "rejected"])
        self.assertTrue(res[1]["reason"])
        self.assertEqual(self.inbound(good["id"]), "accepted")

    @mute_logger("odoo.addons.odoo_sync.controllers.main")
    def test_bad_signature_refused(self):
        ev = self.milestone(self.picking, "loaded")
        r = self.post(ev, secret="whsec_" + "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZw==")
        self.assertEqual(r.status_code, 401)
        self.assertIsNone(self.inbound(ev["id"]))

    def test_unsigned_and_stale_refused(self):
        ev = self.milestone(self.picking, "loaded")
        body = json.dumps(ev)
        r = self.url_open(self.url, data=body.encode(), headers={"Content-Type": "application/json"})
        self.assertEqual(r.status_code, 401)
        hdrs = self.signed_headers(SECRET, body, ts=time.time() - 3600)
        r = self.url_open(self.url, data=body.encode(), headers=hdrs)
        self.assertEqual(r.status_code, 401)
        self.assertIn("tolerance", r.text)
        self.assertIsNone(self.inbound(ev["id"]))

    def test_unknown_source_refused(self):
        r = self.post(self.milestone(self.picking, "loaded"), url="/odoo_sync/events/nobody")
        self.assertEqual(r.status_code, 401)

    def test_oversized_body_413(self):
        ev = self.milestone(self.picking, "loaded", note="x" * (70 * 1024))
        r = self.post(ev)
        self.assertEqual(r.status_code, 413)

    def test_not_json_400(self):
        r = self.post(None, raw="{not json")
        self.assertEqual(r.status_code, 400, r.text)

    def test_get_not_allowed(self):
        r = self.url_open(self.url, timeout=10)
        self.assertIn(r.status_code, (404, 405))
