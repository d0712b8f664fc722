"""inventory: the shop's stock. Reserves it for orders and gives it back when they are
cancelled.

    GET  /stock           every SKU: available, price, low-stock threshold
    GET  /reservations    what each order holds (or why it was refused)
    POST /events          pushed by Switchyard: order.placed, order.cancelled (orders.v1)

On order.placed it reserves every item or none: stock.reserved (with the total) or
stock.rejected (with the reason), keyed by the order id. When a reservation takes a SKU below
its threshold it asks for a restock with stock.low, keyed by the SKU (a vendor adapter will
carry it out later). On order.cancelled it releases what the order held. Python 3 standard
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

NAME = os.environ.get("SERVICE_NAME", "inventory")
PORT = int(os.environ["PORT"])
SWITCHYARD_URL = os.environ["SWITCHYARD_URL"]
DB_PATH = os.environ["DATABASE_URL"].removeprefix("sqlite://").split("?")[0]
TOPIC = "inventory.v1"


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


def emit(conn, type_, event_id, key, data, cause):
    event = {
        "specversion": "1.0",
        "id": event_id,
        "source": f"/shop/{NAME}",
        "type": type_,
        "subject": key,
        "partitionkey": key,
        "correlationid": cause["correlationid"] or cause["subject"],
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


# ---- events pushed by Switchyard; each handler runs inside the event's transaction


def cents(n):
    return f"{n // 100}.{n % 100:02d}"


def on_order_placed(conn, ev, data):
    order_id, items = data["order"], data["items"]
    if conn.execute("SELECT 1 FROM reservations WHERE order_id = ?", (order_id,)).fetchone():
        return f"order {order_id} already decided"
    # Several lines of one SKU count together.
    wanted = {}
    for item in items:
        wanted[item["sku"]] = wanted.get(item["sku"], 0) + int(item["qty"])
    stock = {}
    reason = None
    for sku, qty in wanted.items():
        row = conn.execute("SELECT * FROM stock WHERE sku = ?", (sku,)).fetchone()
        if row is None:
            reason = f"unknown sku {sku}"
        elif qty < 1:
            reason = f"bad quantity {qty} of {sku}"
        elif row["available"] < qty:
            reason = f"not enough {sku}: {qty} requested, {row['available']} available"
        if reason:
            break
        stock[sku] = row
    if reason:
        conn.execute(
            "INSERT INTO reservations (order_id, items, state, reason) VALUES (?, ?, 'rejected', ?)",
            (order_id, json.dumps(items), reason),
        )
        emit(conn, "stock.rejected", f"stock.rejected/{order_id}", order_id,
             {"order": order_id, "reason": reason}, ev)
        return f"order {order_id} rejected: {reason}"
    total = 0
    low = []
    for sku, qty in wanted.items():
        row = stock[sku]
        left = row["available"] - qty
        conn.execute("UPDATE stock SET available = ? WHERE sku = ?", (left, sku))
        total += qty * row["price_cents"]
        if left < row["low_threshold"] <= row["available"]:  # it crossed the threshold now
            low.append((row, left))
    conn.execute(
        "INSERT INTO reservations (order_id, items, state, total_cents) VALUES (?, ?, 'held', ?)",
        (order_id, json.dumps(items), total),
    )
    lines = [{"sku": s, "qty": q, "price_cents": stock[s]["price_cents"]} for s, q in wanted.items()]
    emit(conn, "stock.reserved", f"stock.reserved/{order_id}", order_id,
         {"order": order_id, "customer": data["customer"], "items": lines, "total_cents": total},
         ev)
    done = f"order {order_id} reserved: {len(lines)} sku(s), {cents(total)}"
    for row, left in low:
        sku = row["sku"]
        emit(conn, "stock.low", f"stock.low/{sku}/{order_id}", sku,
             {"sku": sku, "available": left, "threshold": row["low_threshold"],
              "restock_qty": row["restock_qty"]}, ev)
        done += f"; {sku} low ({left} left), restock of {row['restock_qty']} requested"
    return done


def on_order_cancelled(conn, ev, data):
    order_id = data["order"]
    r = conn.execute("SELECT * FROM reservations WHERE order_id = ?", (order_id,)).fetchone()
    if r is None or r["state"] != "held":
        return f"order {order_id} cancelled, it held no stock"
    released = []
    for item in json.loads(r["items"]):
        conn.execute(
            "UPDATE stock SET available = available + ? WHERE sku = ?", (item["qty"], item["sku"])
        )
        released.append(f"{item['qty']} {item['sku']}")
    conn.execute(
        "UPDATE reservations SET state = 'released', updated_at = strftime('%Y-%m-%dT%H:%M:%fZ')"
        " WHERE order_id = ?",
        (order_id,),
    )
    return f"order {order_id} cancelled: released {', '.join(released)}"


HANDLERS = {"order.placed": on_order_placed, "order.cancelled": on_order_cancelled}


def consume(ev, data):
    """Processes one pushed event exactly once: the ce-id is remembered in the same
    transaction as the work. Returns the HTTP status to answer."""
    handler = HANDLERS.get(ev["type"])
    if handler is None:
        log(f"{ev['type']} {ev['id']}: not an event inventory takes; parked")
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

    def rows(self, sql):
        conn = connect()
        try:
            return [dict(r) for r in conn.execute(sql)]
        finally:
            conn.close()

    def do_GET(self):
        if self.path == "/healthz":
            ok = healthy()
            return self.reply(200 if ok else 503, {"ok": ok})
        if self.path == "/stock":
            return self.reply(200, {"stock": self.rows(
                "SELECT sku, available, price_cents, low_threshold, restock_qty FROM stock"
                " ORDER BY sku")})
        if self.path == "/reservations":
            return self.reply(200, {"reservations": self.rows(
                "SELECT order_id, state, total_cents, reason, items FROM reservations"
                " ORDER BY created_at DESC LIMIT 100")})
        self.problem(404, "not-found", f"no route GET {self.path}")

    def do_POST(self):
        raw = self.rfile.read(int(self.headers.get("content-length") or 0))
        if self.path != "/events":
            return self.problem(404, "not-found", f"no route POST {self.path}")
        ev = {k: unquote(self.headers.get(f"ce-{k}", ""))
              for k in ("id", "type", "source", "subject", "traceparent", "correlationid")}
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
    log(f"inventory listening on :{PORT}")
    server.serve_forever()


if __name__ == "__main__":
    main()
