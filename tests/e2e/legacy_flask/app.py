"""The legacy backend: a small Flask book API.

Served by gunicorn (`gunicorn app:app`) in the end-to-end parity suite; the
replacement in ../new_drf answers the same paths with a few deliberate
differences.
"""

from datetime import datetime, timezone

from flask import Flask, jsonify

app = Flask(__name__)

BOOKS = [
    {"id": 1, "title": "Dune", "author": "Frank Herbert", "year": 1965},
    {"id": 2, "title": "Neuromancer", "author": "William Gibson", "year": 1984},
    {"id": 3, "title": "Hyperion", "author": "Dan Simmons", "year": 1989},
]


def now():
    """The current time, ISO 8601 with microseconds."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


@app.get("/api/books/")
def books():
    # A bare list; each item stamped with the time it was rendered.
    generated_at = now()
    return jsonify([dict(book, generated_at=generated_at) for book in BOOKS])


@app.get("/api/status/")
def status():
    return jsonify({"status": "ok", "books": len(BOOKS)})


def user(user_id):
    return {
        "id": user_id,
        "username": f"user{user_id}",
        "email": f"user{user_id}@example.com",
        "bio": "Reads science fiction, mostly from the sixties to the eighties; " * 3,
    }


@app.get("/api/users/<int:user_id>/")
def user_detail(user_id):
    return jsonify(user(user_id))


# The hard cases: each answers like its DRF twin in ../new_drf/bookstore/api.py,
# or differs in one planted way.


@app.get("/api/cases/key-order/")
def key_order():
    # Flask sorts keys; DRF keeps its own order.
    return jsonify({"a": 1, "b": {"x": 1, "y": 2}, "c": [1, 2]})


@app.get("/api/cases/unicode/")
def unicode_text():
    # Flask escapes non-ASCII (`caf\u00e9`); DRF writes UTF-8 (`café`).
    return jsonify({"name": "café", "city": "Zürich"})


@app.get("/api/cases/null/")
def null_field():
    return jsonify({"name": "x", "bio": None})


@app.get("/api/cases/bigint/")
def bigint():
    return jsonify({"id": 2**53 + 1, "same": 2**70 + 1})


@app.get("/api/cases/not-found/")
def not_found():
    return jsonify({"error": "not found"}), 404


@app.get("/api/cases/moved/")
def moved():
    return jsonify({"here": True})


@app.get("/api/cases/crash/")
def crash():
    return jsonify({"ok": True})


@app.get("/api/cases/page/")
def page():
    return "<p>Hello from the legacy app</p>", 200, {"Content-Type": "text/html; charset=utf-8"}


@app.get("/healthz")
def healthz():
    return jsonify({"ok": True})


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=8000)
