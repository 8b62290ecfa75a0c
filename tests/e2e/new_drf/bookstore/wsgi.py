"""WSGI entry point: `gunicorn bookstore.wsgi`."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bookstore.settings")
application = get_wsgi_application()
