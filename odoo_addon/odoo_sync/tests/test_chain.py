# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""The whole loop on a real Odoo with the extension's workers running.

Unlike the other tests this one commits (the capture, deliver and apply
workers only see committed transactions), so it runs on a throwaway
database (test/odoo/run.sh makes one):

    sale order confirmed -> capture -> dispatch.order.ready delivered to a
    loopback sink -> milestones and proof of delivery POSTed to the
    controller -> apply worker -> ERP actions queued, cron woken through
    ir_cron_trigger + NOTIFY -> picking validated, one invoice created and
    posted -> capture -> invoice.posted delivered to the sink.

Odoo's cron thread does not run during a test run, so a thread of this test
does what it does (LISTEN cron_trigger in database postgres, then run the
ready job) for this addon's job only.
"""
import json
import logging
import os
import select
import statistics
import subprocess
import tempfile
import threading
import time
import unittest
from contextlib import contextmanager

import requests

import odoo
from odoo import SUPERUSER_ID, api
from odoo.tests import tagged
from odoo.tests.common import HttpCase

from .common import SECRET, OdooSyncFixtures

_logger = logging.getLogger(__name__)

HERE = os.path.dirname(os.path.abspath(__file__))
SINK = os.environ.get("ODOO_SYNC_SINK") or os.path.normpath(
    os.path.join(HERE, "..", "..", "..", "test", "sink", "sink.py"))
WORKERS = ("odoo_sync capture", "odoo_sync deliver", "odoo_sync deliver critical", "odoo_sync apply")
ORDERS = int(os.environ.get("ODOO_SYNC_CHAIN_ORDERS", "5"))


def poll(what, fn, timeout=30.0, interval=0.01):
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.0f s waiting for %s" % (timeout, what))
        time.sleep(interval)


class CronRunner(threading.Thread):
    """What odoo/service/server.py cron_thread does, for one job."""

    def __init__(self, dbname, cron_id):
        super().__init__(daemon=True, name="odoo_sync test cron")
        self.dbname, self.cron_id = dbname, cron_id
        self.stop = threading.Event()
        self.runs = 0

    def run(self):
        conn = odoo.sql_db.db_connect("postgres")
        with conn.cursor() as cr:
            pg_conn = cr._cnx
            cr.execute("LISTEN cron_trigger")
            cr.commit()
            while not self.stop.is_set():
                if select.select([pg_conn], [], [], 0.5)[0]:
                    pg_conn.poll()
                    pg_conn.notifies.clear()
                try:
                    self._run_job()
                except Exception:  # noqa: BLE001 -- keep listening, like Odoo's runner
                    _logger.exception("odoo_sync test cron: job failed")

    def _run_job(self):
        IrCron = odoo.registry(self.dbname)["ir.cron"]
        db = odoo.sql_db.db_connect(self.dbname)
        with db.cursor() as cron_cr:
            job = IrCron._acquire_one_job(cron_cr, (self.cron_id,))
            if job:
                self.runs += 1
                IrCron._process_job(db, cron_cr, job)
                cron_cr.commit()


@tagged("post_install", "-at_install", "odoo_sync", "odoo_sync_chain")
class TestChain(HttpCase, OdooSyncFixtures):
    registry_test_mode = False  # requests commit, so the workers see them

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.dbname = cls.env.cr.dbname
        with cls.committed() as env:
            env.cr.execute("SELECT worker FROM odoo_sync.workers")
            running = {r[0] for r in env.cr.fetchall()}
            missing = [w for w in WORKERS if w not in running]
            env.cr.execute("SELECT to_regclass('odoo_sync.rule') IS NOT NULL, "
                           "to_regclass('odoo_sync.endpoint') IS NOT NULL, "
                           "to_regclass('odoo_sync.erp_action') IS NOT NULL")
            surfaces = env.cr.fetchone()
        if missing or not all(surfaces):
            raise unittest.SkipTest("the extension in this cluster lacks %s (capture, delivery and "
                                    "inbound must be installed and running)" % (missing or "views"))
        if not os.path.exists(SINK):
            raise unittest.SkipTest("no loopback sink at %s (set ODOO_SYNC_SINK)" % SINK)

        cls.tmp = tempfile.mkdtemp(prefix="odoo_sync_chain_")
        port_file = os.path.join(cls.tmp, "port")
        cls.sink = subprocess.Popen(["/usr/bin/python3", SINK, "--port", "0", "--port-file", port_file],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        cls.addClassCleanup(cls._stop_sink)
        poll("the sink's port file", lambda: os.path.exists(port_file) and open(port_file).read().strip(), 15)
        cls.sink_url = "http://127.0.0.1:%s" % open(port_file).read().strip()

        with cls.committed() as env:
            cls.endpoint_name = "chain-%s" % os.getpid()
            env["odoo_sync.endpoint"].create({
                "name": cls.endpoint_name, "url": cls.sink_url + "/hook", "new_secret": SECRET,
                "subscription_ids": [(0, 0, {"types": "dispatch.order.ready, invoice.posted"})]})
            src = env["odoo_sync.inbound.source"].search([("name", "=", "dispatch-chain")])
            src = src or env["odoo_sync.inbound.source"].create({"name": "dispatch-chain"})
            src.new_secret = SECRET
            cls.product_id = cls.make_product(env, "odoo_sync chain product", 1000).id
            cls.cron_id = env.ref("odoo_sync.ir_cron_odoo_sync_erp_actions").id
        cls.addClassCleanup(cls._drop_endpoint)

        cls.cron = CronRunner(cls.dbname, cls.cron_id)
        cls.cron.start()
        cls.addClassCleanup(cls._stop_cron)

    @classmethod
    def _stop_sink(cls):
        cls.sink.terminate()
        cls.sink.wait(10)

    @classmethod
    def _stop_cron(cls):
        cls.cron.stop.set()
        cls.cron.join(10)

    @classmethod
    def _drop_endpoint(cls):
        with cls.committed() as env:
            env["odoo_sync.endpoint"].search([("name", "=", cls.endpoint_name)]).unlink()

    @classmethod
    @contextmanager
    def committed(cls):
        """An environment on a real cursor: committed at the end."""
        with cls.registry.cursor() as cr:
            yield api.Environment(cr, SUPERUSER_ID, {"tracking_disable": True})

    # ------------------------------------------------------------ helpers
    def sink_events(self):
        r = requests.get(self.sink_url + "/_control/requests", params={"path": "/hook"}, timeout=10)
        out = []
        for req in r.json()["requests"]:
            body = json.loads(req["body"])
            out.extend(body if isinstance(body, list) else [body])
        return out

    def wait_sink(self, type_, subject):
        return poll("%s for %s at the sink" % (type_, subject), lambda: [
            e for e in self.sink_events() if e.get("type") == type_ and e.get("subject") == subject])

    def post(self, payload):
        body = json.dumps(payload)
        return self.url_open("/odoo_sync/events/dispatch-chain", data=body.encode(),
                             headers=self.signed_headers(SECRET, body), timeout=30)

    def query(self, sql, params=()):
        with self.committed() as env:
            env.cr.execute(sql, params)
            return env.cr.fetchall()

    def new_order(self, qty):
        with self.committed() as env:
            so, picking = self.make_order(env, env["product.product"].browse(self.product_id), qty)
            return so.id, picking.id, picking.name, {m.id: m.product_uom_qty for m in picking.move_ids}

    def picking_rec(self, env, picking_id):
        return env["stock.picking"].browse(picking_id)

    def run_order(self, qty=3.0, deliver=None):
        """One order through the loop; returns (ids, POD->posted latency s)."""
        so_id, picking_id, picking_name, moves = self.new_order(qty)
        self.wait_sink("dispatch.order.ready", "stock.picking/%s" % picking_id)
        with self.committed() as env:
            picking = self.picking_rec(env, picking_id)
            for status in ("loaded", "in_transit"):
                r = self.post(self.milestone(picking, status))
                self.assertEqual(r.status_code, 202, r.text)
            pod = self.pod(picking, deliver or moves)
        key = "create_invoice:%s" % picking_id
        t0 = time.monotonic()
        r = self.post(pod)
        self.assertEqual(r.status_code, 202, r.text)
        poll("invoice %s posted" % key, lambda: self.query(
            "SELECT 1 FROM account_move WHERE odoo_sync_idempotency_key = %s AND state = 'posted'", (key,)))
        latency = time.monotonic() - t0
        inv = self.query("SELECT id FROM account_move WHERE odoo_sync_idempotency_key = %s", (key,))
        self.assertEqual(len(inv), 1)
        self.assertEqual(self.query("SELECT state FROM stock_picking WHERE id = %s", (picking_id,))[0][0], "done")
        self.wait_sink("invoice.posted", "account.move/%s" % inv[0][0])
        return so_id, picking_id, inv[0][0], pod, latency

    # ------------------------------------------------------------ tests
    def test_full_chain_replay_and_latency(self):
        latencies = []
        for _i in range(ORDERS):
            so_id, picking_id, invoice_id, pod, latency = self.run_order()
            latencies.append(latency)
        median = statistics.median(latencies)
        _logger.info("odoo_sync chain: POD at controller -> invoice posted: median %.0f ms, "
                     "min %.0f ms, max %.0f ms over %d orders (cron runs: %d)",
                     median * 1000, min(latencies) * 1000, max(latencies) * 1000,
                     len(latencies), self.cron.runs)
        out = os.environ.get("ODOO_SYNC_LATENCY_FILE")
        if out:
            with open(out, "w") as f:
                json.dump({"median_ms": round(median * 1000, 1),
                           "samples_ms": [round(x * 1000, 1) for x in latencies]}, f)
        self.assertLess(median, 10.0)

        # the same POD again: a duplicate; a new POD for the same shipment: applied, nothing queued
        r = self.post(pod)
        self.assertEqual(r.status_code, 200, r.text)
        with self.committed() as env:
            replay = self.pod(self.picking_rec(env, picking_id))
        r = self.post(replay)
        self.assertEqual(r.status_code, 202, r.text)
        poll("replayed POD applied", lambda: self.query(
            "SELECT 1 FROM odoo_sync.inbound WHERE event_id = %s AND state = 'applied'", (replay["id"],)))
        self.assertEqual(self.query("SELECT count(*) FROM odoo_sync.erp_action WHERE picking_id = %s",
                                    (picking_id,))[0][0], 3)
        self.assertEqual(self.query("SELECT count(*) FROM account_move m JOIN account_move_line l ON l.move_id = m.id "
                                    "JOIN sale_order_line_invoice_rel r ON r.invoice_line_id = l.id "
                                    "JOIN sale_order_line s ON s.id = r.order_line_id WHERE s.order_id = %s "
                                    "GROUP BY m.id", (so_id,)).__len__(), 1)

    def test_partial_pod_backorder(self):
        self.query("SELECT odoo_sync.set_billing_var('partial_billing', 'true')")
        self.addCleanup(self.query, "SELECT odoo_sync.set_billing_var('partial_billing', 'false')")
        so_id, picking_id, picking_name, moves = self.new_order(3)
        (move_id,) = moves
        self.wait_sink("dispatch.order.ready", "stock.picking/%s" % picking_id)
        with self.committed() as env:
            pod = self.pod(self.picking_rec(env, picking_id), {move_id: 2})
        r = self.post(pod)
        self.assertEqual(r.status_code, 202, r.text)
        key = "create_invoice:%s" % picking_id
        poll("partial invoice posted", lambda: self.query(
            "SELECT 1 FROM account_move WHERE odoo_sync_idempotency_key = %s AND state = 'posted'", (key,)))
        rows = self.query("""
            SELECT l.quantity FROM account_move m JOIN account_move_line l ON l.move_id = m.id
             WHERE m.odoo_sync_idempotency_key = %s AND l.product_id = %s""", (key, self.product_id))
        self.assertEqual([r[0] for r in rows], [2.0])
        back = self.query("""SELECT m.product_uom_qty FROM stock_picking p JOIN stock_move m ON m.picking_id = p.id
                              WHERE p.backorder_id = %s""", (picking_id,))
        self.assertEqual([r[0] for r in back], [1.0])

    def test_retry_and_replay_deliveries(self):
        """Retry (same endpoint) and Replay (every subscriber) send the same
        event again: the sink sees its webhook-id twice more. (A replay while
        the retried delivery is still pending would not queue it a second
        time: the extension never queues an event twice where it is pending.)"""
        _so_id, picking_id, *_rest = self.new_order(1)
        subject = "stock.picking/%s" % picking_id
        ev = self.wait_sink("dispatch.order.ready", subject)[0]

        def sent():
            return len([e for e in self.sink_events() if e["id"] == ev["id"]])

        with self.committed() as env:
            d = env["odoo_sync.delivery"].search([("event_uuid", "=", ev["id"]),
                                                  ("endpoint", "=", self.endpoint_name)])
            self.assertEqual(d.state, "delivered")
            d.action_retry()
        poll("the event delivered twice", lambda: sent() >= 2)
        poll("the retried delivery recorded", lambda: not self.query(
            "SELECT 1 FROM odoo_sync.deliveries WHERE event_id = %s AND state IN ('pending', 'in_flight')",
            (ev["id"],)))
        with self.committed() as env:
            d = env["odoo_sync.delivery"].search([("event_uuid", "=", ev["id"]),
                                                  ("endpoint", "=", self.endpoint_name)], limit=1)
            d.action_replay()
        poll("the event delivered three times", lambda: sent() >= 3)

    def test_endpoint_test_ping_is_signed(self):
        with self.committed() as env:
            ep = env["odoo_sync.endpoint"].search([("name", "=", self.endpoint_name)])
            res = ep.action_test_ping()
        self.assertEqual(res["params"]["type"], "success", res["params"]["message"])
        r = requests.get(self.sink_url + "/_control/requests", params={"path": "/hook"}, timeout=10).json()
        ping = [q for q in r["requests"] if '"odoo_sync.ping"' in q["body"]][-1]
        headers = {k.lower(): v for k, v in ping["headers"]}
        expected = self.env["odoo_sync.inbound.source"].sign(
            SECRET, headers["webhook-id"], headers["webhook-timestamp"], ping["body"])
        self.assertEqual(headers["webhook-signature"], expected)

    def test_bad_signature_refused(self):
        with self.committed() as env:
            picking = env["stock.picking"].search([("picking_type_code", "=", "outgoing")], limit=1)
            ev = self.milestone(picking, "loaded")
        body = json.dumps(ev)
        headers = self.signed_headers("whsec_" + "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZw==", body)
        r = self.url_open("/odoo_sync/events/dispatch-chain", data=body.encode(), headers=headers)
        self.assertEqual(r.status_code, 401)
        self.assertFalse(self.query("SELECT 1 FROM odoo_sync.inbound WHERE event_id = %s", (ev["id"],)))
