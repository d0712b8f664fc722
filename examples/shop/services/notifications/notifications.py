"""notifications: tells people what happened. "Sending" is appending to a table and printing
a line; a real one would hand the message to a mail or SMS vendor.

    GET  /notifications   every notification, newest first
    POST /events          pushed by Switchyard: order.confirmed, order.cancelled (orders.v1),
                          stock.low (inventory.v1)

Python 3 standard library only; Switchyard's dev runner sets PORT and DATABASE_URL.
"""

import json
import os
import signal
import sqlite3
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import quote, unquote

PORT = int(os.environ["PORT"])
DB_PATH = os.environ["DATABASE_URL"].removeprefix("sqlite://").split("?")[0]


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


def cents(n):
    return f"{n // 100}.{n % 100:02d}"


def items(data):
    return ", ".join(f"{i['qty']} {i['sku']}" for i in data["items"])


# Each event becomes (recipient, message).
MESSAGES = {
    "order.confirmed": lambda d: (
        d["customer"],
        f"Your order {d['order']} ({items(d)}) is confirmed: {cents(d['total_cents'])} charged.",
    ),
    "order.cancelled": lambda d: (
        d["customer"],
        f"Sorry, your order {d['order']} ({items(d)}) was cancelled: {d['reason']}.",
    ),
    "stock.low": lambda d: (
        "purchasing",
        f"Restock {d['sku']}: {d['available']} left (threshold {d['threshold']}),"
        f" please order {d['restock_qty']}.",
    ),
}


def consume(ev, data):
    """Sends one notification per event, exactly once: the ce-id is remembered in the same
    transaction as the notification. Returns the HTTP status to answer."""
    make = MESSAGES.get(ev["type"])
    if make is None:
        log(f"{ev['type']} {ev['id']}: not an event notifications takes; parked")
        return 400
    recipient, message = make(data)
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
        conn.execute(
            "INSERT INTO notifications (event_id, event_type, recipient, message)"
            " VALUES (?, ?, ?, ?)",
            (ev["id"], ev["type"], recipient, message),
        )
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
    log(f"to {recipient}: {message}")
    return 200


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
        if self.path == "/notifications":
            conn = connect()
            try:
                rows = [dict(r) for r in conn.execute(
                    "SELECT id, event_type, recipient, message, sent_at FROM notifications"
                    " ORDER BY id DESC LIMIT 100")]
            finally:
                conn.close()
            return self.reply(200, {"notifications": rows})
        self.problem(404, "not-found", f"no route GET {self.path}")

    def do_POST(self):
        raw = self.rfile.read(int(self.headers.get("content-length") or 0))
        if self.path != "/events":
            return self.problem(404, "not-found", f"no route POST {self.path}")
        ev = {k: unquote(self.headers.get(f"ce-{k}", "")) for k in ("id", "type", "source")}
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
    server = ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
    server.daemon_threads = True
    log(f"notifications listening on :{PORT}")
    server.serve_forever()


if __name__ == "__main__":
    main()
