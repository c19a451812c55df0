#!/usr/bin/python3
"""The whole odoo_sync loop against a running Odoo 17 (driven by test/odoo/demo.sh).

    demo_flow.py --odoo http://127.0.0.1:PORT --db DB --sink http://127.0.0.1:PORT
                 [--orders N] [--screenshots DIR]

Over XML-RPC as admin: an endpoint to the loopback sink (and a failing one,
for dead letters), an inbound source, a stocked product, a sale order that is
confirmed; then, as a dispatch system would: the route, milestones, a charge
and the proof of delivery POSTed, signed, to /odoo_sync/events/<source>.
Odoo's own cron thread, woken by the extension, validates the picking and
invoices.  Prints each step with its time, the POD -> invoice posted latency
(median over --orders), and takes screenshots with headless Chromium.
"""
import argparse
import base64
import hashlib
import hmac
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import xmlrpc.client
from datetime import datetime, timezone

import requests

SECRET = "whsec_" + base64.b64encode(b"odoo_sync demo secret 0123456789").decode()
T0 = time.monotonic()


def say(msg):
    print("[%6.2fs] %s" % (time.monotonic() - T0, msg), flush=True)


def iso():
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def poll(what, fn, timeout=30.0, interval=0.02):
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > deadline:
            sys.exit("timed out waiting for %s" % what)
        time.sleep(interval)


class Odoo:
    def __init__(self, url, db, login="admin", password="admin"):
        self.url, self.db, self.password = url, db, password
        self.uid = xmlrpc.client.ServerProxy(url + "/xmlrpc/2/common").authenticate(db, login, password, {})
        self.models = xmlrpc.client.ServerProxy(url + "/xmlrpc/2/object", allow_none=True)

    def __call__(self, model, method, *args, **kw):
        try:
            return self.models.execute_kw(self.db, self.uid, self.password, model, method, list(args), kw)
        except xmlrpc.client.Fault as f:
            if "cannot marshal None" in f.faultString:
                return None  # committed; the method returned None (NOTES.md section 1)
            raise


def sign(body, msg_id, ts):
    key = base64.b64decode(SECRET[6:])
    return "v1," + base64.b64encode(hmac.new(key, ("%s.%s." % (msg_id, ts)).encode() + body,
                                             hashlib.sha256).digest()).decode()


def post_events(odoo_url, events):
    body = json.dumps(events).encode()
    msg_id, ts = "msg_" + uuid.uuid4().hex, str(int(time.time()))
    r = requests.post(odoo_url + "/odoo_sync/events/dispatch", data=body, timeout=30, headers={
        "Content-Type": "application/json", "webhook-id": msg_id, "webhook-timestamp": ts,
        "webhook-signature": sign(body, msg_id, ts)})
    return r


def event(picking_name, type_, data):
    return {"specversion": "1.0", "id": "demo-" + uuid.uuid4().hex, "source": "urn:demo:dispatch",
            "type": type_, "time": iso(), "subject": picking_name, "data": data}


def sink_events(sink, path="/hook"):
    r = requests.get(sink + "/_control/requests", params={"path": path}, timeout=10).json()
    out = []
    for req in r["requests"]:
        b = json.loads(req["body"])
        out.extend(b if isinstance(b, list) else [b])
    return out


def one_order(o, args, product_id, partner_id, charges=True, n=0):
    so_id = o("sale.order", "create", {"partner_id": partner_id, "order_line": [
        (0, 0, {"product_id": product_id, "product_uom_qty": 3})]})
    o("sale.order", "action_confirm", [so_id])
    so = o("sale.order", "read", [so_id], ["name", "picking_ids"])[0]
    picking = o("stock.picking", "read", so["picking_ids"][:1], ["name", "move_ids"])[0]
    say("order %s confirmed, picking %s" % (so["name"], picking["name"]))
    subject = "stock.picking/%s" % picking["id"]
    ev = poll("dispatch.order.ready", lambda: [e for e in sink_events(args.sink)
                                              if e["type"] == "dispatch.order.ready" and e["subject"] == subject])
    say("  sink received dispatch.order.ready (id %s, correlation %s)" % (ev[0]["id"], ev[0].get("correlationid")))
    name = picking["name"]
    steps = [event(name, "shipment.route_assigned", {"route": "R-7", "vehicle": "VAN-3", "driver": "Ann",
                                                       "tracking_ref": "DEMO-%s-%d" % (picking["id"], n)}),
             event(name, "shipment.milestone", {"status": "loaded"}),
             event(name, "shipment.milestone", {"status": "in_transit",
                                                "location": {"name": "Ring road", "lat": 48.85, "lon": 2.35}})]
    if charges:
        steps.append(event(name, "shipment.charge", {"code": "WAIT", "kind": "waiting_time", "amount": 7.5,
                                                     "currency": "USD", "quantity": 15,
                                                     "description": "Waiting time at the dock"}))
    r = post_events(args.odoo, steps)
    say("  POST route, milestones%s -> HTTP %s" % (", charge" if charges else "", r.status_code))
    moves = o("stock.move", "read", picking["move_ids"], ["product_uom_qty"])
    pod = event(name, "shipment.pod", {"signed_by": "R. Receiver", "signature_ref": "sig://demo",
                                       "delivered_at": iso(),
                                       "lines": [{"move_id": m["id"], "quantity": m["product_uom_qty"]} for m in moves]})
    t0 = time.monotonic()
    r = post_events(args.odoo, pod)
    say("  POST proof of delivery -> HTTP %s %s" % (r.status_code, r.json()["results"][0]["status"]))
    key = "create_invoice:%s" % picking["id"]
    # poll in SQL: XML-RPC calls every 10 ms would compete with the cron thread
    # of the (single-process) Odoo server and slow down what is measured
    poll("invoice posted", lambda: args.sql("SELECT 1 FROM account_move WHERE odoo_sync_idempotency_key = %s "
                                            "AND state = 'posted'", (key,)), interval=0.005)
    latency = time.monotonic() - t0
    inv = o("account.move", "search_read", [("odoo_sync_idempotency_key", "=", key)],
            fields=["name", "amount_total"])
    say("  invoice %s posted (%.2f), %.0f ms after the POD reached the controller"
        % (inv[0]["name"], inv[0]["amount_total"], latency * 1000))
    st = o("stock.picking", "read", [picking["id"]], ["state"])[0]["state"]
    say("  picking %s is %s" % (name, st))
    poll("invoice.posted at the sink", lambda: [e for e in sink_events(args.sink)
                                                if e["type"] == "invoice.posted"
                                                and e["subject"] == "account.move/%s" % inv[0]["id"]])
    say("  sink received invoice.posted")
    r = post_events(args.odoo, pod)
    say("  the same POD again -> HTTP %s (%s); invoices for the order: %d" % (
        r.status_code, r.json()["results"][0]["status"],
        len(o("account.move", "search", [("odoo_sync_picking_id", "=", picking["id"])]))))
    return picking["id"], latency


# ---------------------------------------------------------------- screenshots (Chrome DevTools protocol)
class Chromium:
    FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
             "--window-size=1400,860", "--remote-debugging-port=0"]

    def __init__(self, exe="chromium"):
        import websocket  # python3-websocket
        self.profile = tempfile.mkdtemp(prefix="odoo_sync_chromium_")
        self.proc = subprocess.Popen([exe] + self.FLAGS + ["--user-data-dir=" + self.profile, "about:blank"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = os.path.join(self.profile, "DevToolsActivePort")
        port = poll("chromium's DevTools port", lambda: os.path.exists(port_file) and open(port_file).read().split()[:1], 30)[0]
        targets = poll("a page target", lambda: [t for t in requests.get(
            "http://127.0.0.1:%s/json" % port, timeout=5).json() if t["type"] == "page"], 15)
        self.ws = websocket.create_connection(targets[0]["webSocketDebuggerUrl"], timeout=30)
        self.n = 0

    def cmd(self, method, **params):
        self.n += 1
        self.ws.send(json.dumps({"id": self.n, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.n:
                if "error" in msg:
                    raise RuntimeError("%s: %s" % (method, msg["error"]))
                return msg.get("result", {})

    def js(self, expr):
        return self.cmd("Runtime.evaluate", expression=expr, returnByValue=True).get("result", {}).get("value")

    def shot(self, url, ready_js, path, before_js=None, height=860):
        self.cmd("Emulation.setDeviceMetricsOverride", width=1400, height=height, deviceScaleFactor=1, mobile=False)
        self.cmd("Page.navigate", url=url)
        poll("page %s ready" % url, lambda: self.js(ready_js), 60, 0.2)
        if before_js:
            self.js(before_js)
            time.sleep(0.8)  # let the clicked tab render (no event to wait for)
        time.sleep(0.5)
        data = self.cmd("Page.captureScreenshot", format="png")["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))
        try:  # a 256-colour palette keeps the PNGs in docs/ small
            from PIL import Image
            Image.open(path).convert("RGB").quantize(256).save(path, optimize=True)
        except ImportError:
            pass
        say("  screenshot %s (%d kB)" % (path, os.path.getsize(path) // 1024))

    def close(self):
        self.proc.terminate()
        self.proc.wait(10)
        shutil.rmtree(self.profile, ignore_errors=True)


def screenshots(args, o, picking_id):
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if not exe:
        say("no chromium: screenshots skipped")
        return
    os.makedirs(args.screenshots, exist_ok=True)
    s = requests.post(args.odoo + "/web/session/authenticate", json={
        "jsonrpc": "2.0", "params": {"db": args.db, "login": "admin", "password": "admin"}}, timeout=30)
    sid = s.cookies.get("session_id")
    c = Chromium(exe)
    try:
        c.cmd("Network.enable")
        host = args.odoo.split("//")[1].split(":")[0]
        c.cmd("Network.setCookie", name="session_id", value=sid, domain=host, path="/")
        c.shot(args.odoo + "/web#action=odoo_sync.odoo_sync_dashboard_action",
               "!!document.querySelector('.o_odoo_sync_endpoints tbody tr td')",
               os.path.join(args.screenshots, "dashboard.png"))
        c.shot(args.odoo + "/web#action=odoo_sync.odoo_sync_delivery_dead_action",
               "!!document.querySelector('.o_list_table .o_group_name, .o_list_table .o_data_row')",
               os.path.join(args.screenshots, "dead-letters.png"),
               before_js="document.querySelector('.o_group_name') && document.querySelector('.o_group_name').click()")
        c.shot(args.odoo + "/web#id=%s&model=stock.picking&view_type=form" % picking_id,
               "!!document.querySelector('.o_form_view .o_notebook')",
               os.path.join(args.screenshots, "picking-dispatch-tab.png"), height=1250,
               before_js="[...document.querySelectorAll('.o_notebook .nav-link')].find(a => a.textContent.trim() === 'Dispatch').click()")
    finally:
        c.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--odoo", required=True)
    ap.add_argument("--db", required=True)
    ap.add_argument("--sink", required=True)
    ap.add_argument("--orders", type=int, default=5)
    ap.add_argument("--screenshots")
    ap.add_argument("--dsn", required=True, help="libpq DSN of the Odoo database (polling)")
    args = ap.parse_args()
    import psycopg2
    conn = psycopg2.connect(args.dsn)
    conn.autocommit = True

    def sql(query, params=()):
        with conn.cursor() as cr:
            cr.execute(query, params)
            return cr.fetchall()
    args.sql = sql
    o = Odoo(args.odoo, args.db)
    say("logged in to %s (db %s) as admin" % (args.odoo, args.db))

    requests.post(args.sink + "/_control/script", json={"path": "/fail", "responses": [
        {"status": 503, "body": {"error": "maintenance"}, "repeat": -1}]}, timeout=10)
    o("odoo_sync.endpoint", "create", {"name": "dispatch", "url": args.sink + "/hook", "new_secret": SECRET,
                                      "subscription_ids": [(0, 0, {"types": "dispatch.*, invoice.*, shipment.*"})]})
    o("odoo_sync.endpoint", "create", {"name": "carrier-portal", "url": args.sink + "/fail", "max_attempts": 1,
                                      "subscription_ids": [(0, 0, {"types": "dispatch.order.ready"})]})
    o("odoo_sync.inbound.source", "create", {"name": "dispatch", "new_secret": SECRET})
    say("endpoints 'dispatch' (sink /hook) and 'carrier-portal' (answers 503: dead letters), source 'dispatch'")

    tmpl = o("product.template", "create", {"name": "Pallet of tiles", "detailed_type": "product",
                                            "invoice_policy": "delivery", "list_price": 120.0})
    product_id = o("product.product", "search", [("product_tmpl_id", "=", tmpl)])[0]
    o("stock.quant", "create", {"product_id": product_id, "location_id": 8, "inventory_quantity": 500})
    quant = o("stock.quant", "search", [("product_id", "=", product_id), ("location_id", "=", 8)])
    o("stock.quant", "action_apply_inventory", quant)
    partner_id = o("res.partner", "create", {"name": "Demo Builders Ltd", "street": "1 Dock Road", "city": "Springfield"})
    say("product, 500 in stock, customer")

    latencies, picking_id = [], None
    for i in range(args.orders):
        pid, lat = one_order(o, args, product_id, partner_id, charges=(i == 0), n=i)
        picking_id = picking_id or pid
        latencies.append(lat)
    say("POD at the controller -> invoice posted (Odoo's cron thread woken by the extension): "
        "median %.0f ms, min %.0f, max %.0f over %d orders"
        % (statistics.median(latencies) * 1000, min(latencies) * 1000, max(latencies) * 1000, len(latencies)))
    dead = poll("dead letters", lambda: o("odoo_sync.delivery", "search_count", [("state", "=", "dead")]), 30)
    say("dead letters at 'carrier-portal': %d" % dead)
    if args.screenshots:
        time.sleep(1)  # one dashboard refresh with the latest numbers
        screenshots(args, o, picking_id)


if __name__ == "__main__":
    main()
