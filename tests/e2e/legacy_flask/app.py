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


@app.get("/healthz")
def healthz():
    return jsonify({"ok": True})


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=8000)
