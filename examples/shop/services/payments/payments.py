"""payments: takes the payment for each order whose stock is reserved.

    GET  /payments    every payment and its outcome
    POST /events      pushed by Switchyard: stock.reserved (inventory.v1)

A stand-in for a card processor with a fixed rule, so the demo is repeatable: customers whose
name starts with "broke" are declined, and so is any total over 500.00. Publishes
payment.captured or payment.failed on payments.v1, keyed by the order id. Python 3 standard
library only; Switchyard's dev runner sets PORT, SWITCHYARD_URL and DATABASE_URL.
"""

import json
import os
import secrets
import signal
import sqlite3
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import quote, unquote

NAME = os.environ.get("SERVICE_NAME", "payments")
PORT = int(os.environ["PORT"])
SWITCHYARD_URL = os.environ["SWITCHYARD_URL"]
DB_PATH = os.environ["DATABASE_URL"].removeprefix("sqlite://").split("?")[0]
TOPIC = "payments.v1"
LIMIT_CENTS = int(os.environ.get("PAYMENT_LIMIT_CENTS", "50000"))


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


# ---- outbox (as in orders.py): written in the event's transaction, published after commit


def child_traceparent(parent):
    trace = parent.split("-")[1] if parent and parent.count("-") == 3 else secrets.token_hex(16)
    return f"00-{trace}-{secrets.token_hex(8)}-01"


def emit(conn, type_, order_id, data, cause):
    event = {
        "specversion": "1.0",
        "id": f"{type_}/{order_id}",
        "source": f"/shop/{NAME}",
        "type": type_,
        "subject": order_id,
        "partitionkey": order_id,
        "correlationid": order_id,
        "causationid": cause["id"],
        "traceparent": child_traceparent(cause["traceparent"]),
        "data": data,
    }
    conn.execute("INSERT INTO outbox (topic, event) VALUES (?, ?)", (TOPIC, json.dumps(event)))


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
                except Exception as e:
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


# ---- events pushed by Switchyard


def cents(n):
    return f"{n // 100}.{n % 100:02d}"


def decide(customer, amount):
    """None when the payment goes through, else why not."""
    if customer.lower().startswith("broke"):
        return "card declined"
    if amount > LIMIT_CENTS:
        return f"{cents(amount)} is over the {cents(LIMIT_CENTS)} limit"
    return None


def on_stock_reserved(conn, ev, data):
    order_id, customer, amount = data["order"], data["customer"], int(data["total_cents"])
    if conn.execute("SELECT 1 FROM payments WHERE order_id = ?", (order_id,)).fetchone():
        return f"order {order_id} already charged"
    reason = decide(customer, amount)
    if reason is None:
        payment = "pay-" + secrets.token_hex(4)
        conn.execute(
            "INSERT INTO payments (order_id, payment_id, customer, amount_cents, state)"
            " VALUES (?, ?, ?, ?, 'captured')",
            (order_id, payment, customer, amount),
        )
        emit(conn, "payment.captured", order_id,
             {"order": order_id, "payment": payment, "amount_cents": amount}, ev)
        return f"order {order_id}: {cents(amount)} captured from {customer} ({payment})"
    conn.execute(
        "INSERT INTO payments (order_id, customer, amount_cents, state, reason)"
        " VALUES (?, ?, ?, 'failed', ?)",
        (order_id, customer, amount, reason),
    )
    emit(conn, "payment.failed", order_id,
         {"order": order_id, "amount_cents": amount, "reason": reason}, ev)
    return f"order {order_id}: payment of {cents(amount)} by {customer} failed: {reason}"


HANDLERS = {"stock.reserved": on_stock_reserved}


def consume(ev, data):
    """Processes one pushed event exactly once: the ce-id is remembered in the same
    transaction as the work. Returns the HTTP status to answer."""
    handler = HANDLERS.get(ev["type"])
    if handler is None:
        log(f"{ev['type']} {ev['id']}: not an event payments takes; parked")
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

    def log_message(self, *args):
        pass

    def reply(self, status, body, content_type="application/json"):
        raw = json.dumps(body, indent=1).encode() + b"\n"
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def problem(self, status, code, detail):
        self.reply(status, {"type": f"https://switchyard.dev/problems/{code}", "status": status,
                            "code": code, "detail": detail}, "application/problem+json")

    def do_GET(self):
        if self.path == "/healthz":
            ok = healthy()
            return self.reply(200 if ok else 503, {"ok": ok})
        if self.path == "/payments":
            conn = connect()
            try:
                rows = [dict(r) for r in conn.execute(
                    "SELECT order_id, payment_id, customer, amount_cents, state, reason, at"
                    " FROM payments ORDER BY at DESC LIMIT 100")]
            finally:
                conn.close()
            return self.reply(200, {"payments": rows})
        self.problem(404, "not-found", f"no route GET {self.path}")

    def do_POST(self):
        raw = self.rfile.read(int(self.headers.get("content-length") or 0))
        if self.path != "/events":
            return self.problem(404, "not-found", f"no route POST {self.path}")
        ev = {k: unquote(self.headers.get(f"ce-{k}", ""))
              for k in ("id", "type", "source", "subject", "traceparent")}
        try:
            return self.reply(consume(ev, json.loads(raw)), {})
        except (ValueError, KeyError, TypeError) as e:  # never going to work: park it
            log(f"{ev['type']} {ev['id']}: bad data ({e!r}); parked")
            return self.problem(400, "bad-event", repr(e))
        except Exception as e:  # the database, say: 500, delivered again later
            log(f"{ev['type']} {ev['id']}: failed ({e!r}); will be retried")
            return self.problem(500, "failed", repr(e))


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
    log(f"payments listening on :{PORT}")
    server.serve_forever()


if __name__ == "__main__":
    main()
