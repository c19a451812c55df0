# demo part (sourced by demo/demo.sh): a loopback "dispatch system" (the
# test sink) receives the events as signed CloudEvents; every signature is
# checked by an independent verifier (test/sink/verify_webhook.py).
say "Delivery: events to a loopback endpoint, signed (Standard Webhooks), as CloudEvents"
sink_dir="$dir/sink"; mkdir -p "$sink_dir"
python3 "$TOP/test/sink/sink.py" --port 0 --port-file "$sink_dir/port" >"$sink_dir/log" 2>&1 &
SINK_PID=$!
for _ in $(seq 1 100); do [ -s "$sink_dir/port" ] && break; sleep 0.05; done
sink_port=$(cat "$sink_dir/port")
secret='whsec_ZGVtby1zZWNyZXQtZm9yLW9kb29fc3luYw=='
# loopback endpoints are refused unless the DBA allows them (this is a demo)
psql_o -c "ALTER SYSTEM SET odoo_sync.allow_private_endpoints = on" -c "SELECT pg_reload_conf()" >/dev/null
sleep 0.3
psql_o -Atc "SELECT odoo_sync.create_loopback_endpoint('dispatch', $sink_port, '/hook', secret => '$secret', types => '{dispatch.*,shipment.*,order.*,invoice.*,credit_note.*}')" >/dev/null
echo "endpoint 'dispatch' -> http://127.0.0.1:$sink_port/hook; the secret is write-only:"
psql_o -c "SELECT name, url, secret_hint, enabled FROM odoo_sync.endpoints"
echo "the events captured so far are replayed to it (odoo_sync.replay), new ones follow as they commit:"
replayed=$(psql_o -Atc "SELECT odoo_sync.replay('dispatch', now() - interval '1 hour')")
echo "$replayed deliveries queued by the replay (the inventory.changed events are not subscribed)"
order3=$(psql_o -Atc "SELECT odoo_flow.create_order($partner, 25, 1)")
psql_o -Atc "SELECT odoo_flow.confirm_order($order3)" >/dev/null
echo "then sale order $order3 is confirmed: its events are delivered as they are captured"
want=$(psql_o -Atc "SELECT count(*) FROM odoo_sync.event WHERE type ~ '^(dispatch|shipment|order|invoice|credit_note)\.'")
for _ in $(seq 1 200); do
	got=$(curl -s "http://127.0.0.1:$sink_port/_control/count?path=/hook" | python3 -c 'import json,sys; print(json.load(sys.stdin)["count"])')
	[ "$got" -ge "$want" ] && break; sleep 0.05
done
curl -s "http://127.0.0.1:$sink_port/_control/requests?path=/hook" >"$sink_dir/requests.json"
SECRET="$secret" python3 - "$sink_dir/requests.json" "$TOP/test/sink" <<'PY'
import json, os, sys
sys.path.insert(0, sys.argv[2])
from verify_webhook import check
reqs = json.load(open(sys.argv[1]))["requests"]
print(f"{'webhook-id':38} {'type':30} {'subject':16} signature  traceparent")
for r in reqs:
    h = {k.lower(): v for k, v in r["headers"]}
    body = json.loads(r["body"])
    ok, why = check(os.environ["SECRET"], r["headers"], r["body"].encode())
    print(f"{h['webhook-id']:38} {body['type']:30} {str(body.get('subject')):16} {'valid' if ok else 'INVALID: ' + why:10} {h.get('traceparent', '')[:36]}...")
print(f"{len(reqs)} requests, content-type {h['content-type']}, all signatures valid: "
      f"{all(check(os.environ['SECRET'], r['headers'], r['body'].encode())[0] for r in reqs)}")
PY
echo "endpoint status (its latency percentiles count from each event's commit, so the replayed"
echo "events, committed seconds before the endpoint existed, weigh them down):"
psql_o -c "SELECT name, circuit, backlog, in_flight, delivered_5m, dead, latency_p50_ms, latency_p95_ms FROM odoo_sync.endpoint_status"
echo "commit -> 2xx of sale order $order3's events, delivered live:"
psql_o -c "SELECT e.type, d.state, round((extract(epoch FROM d.finished_at - e.commit_time) * 1000)::numeric, 1) AS ms_commit_to_2xx
  FROM odoo_sync.deliveries d JOIN odoo_sync.event e ON e.id = d.event_id
 WHERE e.correlation_id = odoo_sync.correlation_id('sale.order', '$order3') ORDER BY e.seq"
