"""orders: takes orders from users and follows each one to `confirmed` or `cancelled`.

    POST /orders {"customer": "ada", "items": [{"sku": "widget", "qty": 2}]}  -> 202 {"order": ...}
                          (through the gateway, /api/orders, the customer is the token's user)
    GET  /orders/{id}     the order, its state and the events that moved it
    GET  /orders          the latest orders
    POST /events          pushed by Switchyard: order.placed (placed by others, e.g. seed.yaml),
                          stock.reserved / stock.rejected, payment.captured / payment.failed

Publishes order.placed, order.confirmed and order.cancelled on orders.v1, keyed by the order
id. Python 3 standard library only; Switchyard's dev runner sets PORT, SWITCHYARD_URL and
DATABASE_URL (this service's SQLite file, migrations applied).
"""

import hashlib
import json
import os
import re
import secrets
import signal
import sqlite3
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import quote, unquote

NAME = os.environ.get("SERVICE_NAME", "orders")
PORT = int(os.environ["PORT"])
SWITCHYARD_URL = os.environ["SWITCHYARD_URL"]
DB_PATH = os.environ["DATABASE_URL"].removeprefix("sqlite://").split("?")[0]
TOPIC = "orders.v1"
SOURCE = f"/shop/{NAME}"
FINAL = ("confirmed", "cancelled")


_log_lock = threading.Lock()


def log(line):
    """One line per thing done; whole lines, even from concurrent handlers."""
    with _log_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def connect():
    # mode=rw: never create the file (the dev runner does, with the migrations applied).
    # Autocommit: transactions are the explicit BEGIN IMMEDIATE ... COMMIT below.
    conn = sqlite3.connect(f"file:{quote(DB_PATH)}?mode=rw", uri=True, timeout=10,
                           isolation_level=None)
    conn.row_factory = sqlite3.Row
    return conn


class Retry(Exception):
    """Not now: answered 503, so Switchyard delivers the event again a little later."""


# ---- outbox: events are written in the same transaction as the state they describe, and
# published after the commit (again by the flusher thread if the platform was away). Ids
# are derived from what caused them, so a second publish is a duplicate the journal drops.


def child_traceparent(parent):
    trace = parent.split("-")[1] if parent and parent.count("-") == 3 else secrets.token_hex(16)
    return f"00-{trace}-{secrets.token_hex(8)}-01"


def emit(conn, type_, order_id, data, cause=None, traceparent=None):
    event = {
        "specversion": "1.0",
        "id": f"{type_}/{order_id}",
        "source": SOURCE,
        "type": type_,
        "subject": order_id,
        "partitionkey": order_id,
        "correlationid": order_id,
        "traceparent": child_traceparent(traceparent),
        "data": data,
    }
    if cause:
        event["causationid"] = cause
    conn.execute("INSERT INTO outbox (topic, event) VALUES (?, ?)", (TOPIC, json.dumps(event)))
    history(conn, order_id, type_, event["id"], "published")


_flushing = threading.Lock()


def flush_outbox():
    with _flushing:
        conn = connect()
        try:
            for row in conn.execute("SELECT seq, topic, event FROM outbox ORDER BY seq").fetchall():
                req = urllib.request.Request(
                    f"{SWITCHYARD_URL}/v1/topics/{row['topic']}/events",
                    data=row["event"].encode(),
                    headers={"content-type": "application/cloudevents+json"},
                    method="POST",
                )
                try:
                    with urllib.request.urlopen(req, timeout=10) as resp:
                        json.load(resp)
                except Exception as e:  # the platform is away: the flusher tries again
                    log(f"publish {json.loads(row['event'])['id']} failed ({e}); will retry")
                    return
                conn.execute("DELETE FROM outbox WHERE seq = ?", (row["seq"],))
        finally:
            conn.close()


def flusher():
    while True:
        try:
            flush_outbox()
        except Exception as e:
            log(f"outbox: {e!r}")
        time.sleep(1)


# ---- the order's state


def history(conn, order_id, type_, event_id, how):
    conn.execute(
        "INSERT INTO history (order_id, event_type, event_id, how) VALUES (?, ?, ?, ?)",
        (order_id, type_, event_id, how),
    )


def load(conn, order_id):
    row = conn.execute("SELECT * FROM orders WHERE id = ?", (order_id,)).fetchone()
    if row is None:
        return None
    order = {
        "id": row["id"],
        "customer": row["customer"],
        "items": json.loads(row["items"]),
        "state": row["state"],
        "total_cents": row["total_cents"],
        "reason": row["reason"],
        "placed_at": row["placed_at"],
        "updated_at": row["updated_at"],
    }
    order["history"] = [
        {"type": h["event_type"], "id": h["event_id"], "how": h["how"], "at": h["at"]}
        for h in conn.execute(
            "SELECT * FROM history WHERE order_id = ? ORDER BY seq", (order_id,)
        )
    ]
    return order


def set_state(conn, order_id, state, reason=None):
    conn.execute(
        "UPDATE orders SET state = ?, reason = coalesce(?, reason),"
        " updated_at = strftime('%Y-%m-%dT%H:%M:%fZ') WHERE id = ?",
        (state, reason, order_id),
    )


def check_order(body):
    """The problem with a new order's body, or None."""
    if not isinstance(body, dict):
        return "/", "the body must be a JSON object"
    customer = body.get("customer")
    if not isinstance(customer, str) or not customer.strip():
        return "/customer", "customer must be a non-empty string"
    items = body.get("items")
    if not isinstance(items, list) or not items:
        return "/items", "items must be a non-empty list of {sku, qty}"
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("sku"), str) or not item["sku"]:
            return f"/items/{i}/sku", "sku must be a non-empty string"
        qty = item.get("qty")
        if not isinstance(qty, int) or isinstance(qty, bool) or qty < 1:
            return f"/items/{i}/qty", "qty must be a positive integer"
    return None


def place(body, idempotency_key, traceparent):
    """Stores a new order and its order.placed event; returns (order id, created)."""
    if idempotency_key:  # the same key is the same order: a retried POST changes nothing
        order_id = "ord-" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:8]
    else:
        order_id = "ord-" + secrets.token_hex(4)
    items = [{"sku": i["sku"], "qty": i["qty"]} for i in body["items"]]
    conn = connect()
    try:
        conn.execute("BEGIN IMMEDIATE")
        if conn.execute("SELECT 1 FROM orders WHERE id = ?", (order_id,)).fetchone():
            conn.execute("ROLLBACK")
            return order_id, False
        conn.execute(
            "INSERT INTO orders (id, customer, items, state) VALUES (?, ?, ?, 'placed')",
            (order_id, body["customer"], json.dumps(items)),
        )
        data = {"order": order_id, "customer": body["customer"], "items": items}
        emit(conn, "order.placed", order_id, data, traceparent=traceparent)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    finally:
        conn.close()
    n = sum(i["qty"] for i in items)
    log(f"order {order_id} placed by {body['customer']} ({n} item(s))")
    return order_id, True


# ---- events pushed by Switchyard; each handler runs inside the event's transaction


def on_order_placed(conn, ev, data):
    """An order placed by someone else (seed.yaml, a script): take it on."""
    order_id = data["order"]
    if conn.execute("SELECT 1 FROM orders WHERE id = ?", (order_id,)).fetchone():
        return f"order {order_id} already known"
    conn.execute(
        "INSERT INTO orders (id, customer, items, state) VALUES (?, ?, ?, 'placed')",
        (order_id, data["customer"], json.dumps(data["items"])),
    )
    history(conn, order_id, ev["type"], ev["id"], "received")
    return f"order {order_id} taken on from {ev['source']}"


def on_result(conn, ev, data):
    order_id = data["order"]
    order = load(conn, order_id)
    if order is None:
        # Its order.placed comes on another subscription and has not been taken on yet.
        raise Retry(f"{ev['type']} for unknown order {order_id}")
    history(conn, order_id, ev["type"], ev["id"], "received")
    state, kind = order["state"], ev["type"]
    if kind == "stock.reserved":
        conn.execute(
            "UPDATE orders SET total_cents = ? WHERE id = ?", (data["total_cents"], order_id)
        )
        if state in FINAL:  # the payment's answer came first (another topic, another lane)
            return f"order {order_id} reserved, already {state}"
        set_state(conn, order_id, "reserved")
        return f"order {order_id} reserved ({cents(data['total_cents'])})"
    if state in FINAL:
        return f"order {order_id} already {state}: {kind} changes nothing"
    base = {"order": order_id, "customer": order["customer"], "items": order["items"]}
    tp = ev.get("traceparent")
    if kind == "payment.captured":
        set_state(conn, order_id, "confirmed")
        total = data["amount_cents"]
        emit(conn, "order.confirmed", order_id, {**base, "total_cents": total}, ev["id"], tp)
        return f"order {order_id} confirmed ({cents(total)})"
    reason = data.get("reason", kind)
    set_state(conn, order_id, "cancelled", reason)
    emit(conn, "order.cancelled", order_id, {**base, "reason": reason}, ev["id"], tp)
    return f"order {order_id} cancelled: {reason}"


HANDLERS = {
    "order.placed": on_order_placed,
    "stock.reserved": on_result,
    "stock.rejected": on_result,
    "payment.captured": on_result,
    "payment.failed": on_result,
}


def cents(n):
    return f"{n // 100}.{n % 100:02d}"


def consume(ev, data):
    """Processes one pushed event exactly once: the ce-id is remembered in the same
    transaction as the work. Returns the HTTP status to answer."""
    if ev["source"] == SOURCE:
        return 200  # an order.placed of our own: stored with it when it was placed
    handler = HANDLERS.get(ev["type"])
    if handler is None:
        log(f"{ev['type']} {ev['id']}: not an event orders takes; parked")
        return 400
    conn = connect()
    try:
        conn.execute("BEGIN IMMEDIATE")
        seen = conn.execute(
            "SELECT 1 FROM processed WHERE source = ? AND event_id = ?", (ev["source"], ev["id"])
        ).fetchone()
        if seen:
            conn.execute("ROLLBACK")
            log(f"{ev['type']} {ev['id']}: seen before, skipped")
            return 200
        done = handler(conn, ev, data)
        conn.execute(
            "INSERT INTO processed (source, event_id, event_type) VALUES (?, ?, ?)",
            (ev["source"], ev["id"], ev["type"]),
        )
        conn.execute("COMMIT")
    except Retry as e:
        conn.execute("ROLLBACK")
        log(f"{e}; retry later")
        return 503
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    finally:
        conn.close()
    log(done)
    flush_outbox()
    return 200


# ---- HTTP


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # one line per thing done, not per request
        pass

    def reply(self, status, body, content_type="application/json", headers=()):
        raw = json.dumps(body, indent=1).encode() + b"\n"
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(raw)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(raw)

    def problem(self, status, code, detail, pointer=None):
        body = {"type": f"https://switchyard.dev/problems/{code}", "status": status,
                "code": code, "detail": detail}
        if pointer:
            body["pointer"] = pointer
        self.reply(status, body, "application/problem+json")

    def body(self):
        n = int(self.headers.get("content-length") or 0)
        return self.rfile.read(n)

    def do_GET(self):
        if self.path == "/healthz":
            ok = healthy()
            return self.reply(200 if ok else 503, {"ok": ok})
        if self.path == "/orders":
            conn = connect()
            try:
                rows = conn.execute(
                    "SELECT id, customer, state, total_cents, reason FROM orders"
                    " ORDER BY placed_at DESC, id LIMIT 100"
                ).fetchall()
            finally:
                conn.close()
            return self.reply(200, {"orders": [dict(r) for r in rows]})
        m = re.fullmatch(r"/orders/([A-Za-z0-9._-]+)", self.path)
        if m:
            conn = connect()
            try:
                order = load(conn, m.group(1))
            finally:
                conn.close()
            if order is None:
                return self.problem(404, "order-not-found", f"no order {m.group(1)}")
            return self.reply(200, order)
        self.problem(404, "not-found", f"no route GET {self.path}")

    def do_POST(self):
        raw = self.body()
        if self.path == "/orders":
            try:
                body = json.loads(raw)
            except ValueError as e:
                return self.problem(400, "malformed-json", f"body is not JSON: {e}")
            # Through the gateway the customer is the signed-in user: the gateway checked the
            # token and put its subject in x-user-id (dropping any copy the client sent).
            user = self.headers.get("x-user-id")
            if user and isinstance(body, dict):
                body["customer"] = user
            bad = check_order(body)
            if bad:
                return self.problem(422, "invalid-order", bad[1], bad[0])
            order_id, created = place(
                body, self.headers.get("idempotency-key"), self.headers.get("traceparent")
            )
            flush_outbox()
            return self.reply(
                202 if created else 200,
                {"order": order_id, "state": "placed" if created else "known",
                 "href": f"/orders/{order_id}"},
                headers=[("location", f"/orders/{order_id}")],
            )
        if self.path == "/events":
            ev = {k: unquote(self.headers.get(f"ce-{k}", ""))
                  for k in ("id", "type", "source", "subject", "traceparent")}
            try:
                status = consume(ev, json.loads(raw))
                retry = [("retry-after", "1")] if status == 503 else []
                return self.reply(status, {}, headers=retry)
            except (ValueError, KeyError, TypeError) as e:  # never going to work: park it
                log(f"{ev['type']} {ev['id']}: bad data ({e!r}); parked")
                return self.problem(400, "bad-event", repr(e))
            except Exception as e:  # the database, say: 500, delivered again later
                log(f"{ev['type']} {ev['id']}: failed ({e!r}); will be retried")
                return self.problem(500, "failed", repr(e))
        self.problem(404, "not-found", f"no route POST {self.path}")


def healthy():
    """The database is there and migrated: its tables answer."""
    conn = connect()
    try:
        conn.execute("SELECT count(*) FROM processed").fetchone()
        return True
    except sqlite3.Error:
        return False
    finally:
        conn.close()


def main():
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    if not os.path.isfile(DB_PATH):
        sys.exit(f"no database at {DB_PATH} (DATABASE_URL={os.environ['DATABASE_URL']},"
                 f" working directory {os.getcwd()})")
    threading.Thread(target=flusher, daemon=True).start()
    server = ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
    server.daemon_threads = True
    log(f"orders listening on :{PORT}")
    server.serve_forever()


if __name__ == "__main__":
    main()
