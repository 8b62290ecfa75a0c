"""Settings of the new backend: Django REST Framework, no database.

The books live in memory (bookstore/api.py), so no migrations are needed.
"""

import os

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "bookstore-e2e-not-secret")
DEBUG = False
ALLOWED_HOSTS = ["*"]

INSTALLED_APPS = [
    "django.contrib.staticfiles",
    "rest_framework",
]
MIDDLEWARE = [
    # Compresses answers of 200 bytes or more for clients that accept gzip.
    "django.middleware.gzip.GZipMiddleware",
    "django.middleware.common.CommonMiddleware",
]
ROOT_URLCONF = "bookstore.urls"
WSGI_APPLICATION = "bookstore.wsgi.application"
DATABASES = {}

# `manage.py collectstatic` gathers DRF's assets here; cutover serves them
# from disk (a `file:` backend), as nginx's `alias` does in front of Django.
STATIC_URL = "static/"
STATIC_ROOT = os.environ.get("STATIC_ROOT")

USE_TZ = True
TIME_ZONE = "UTC"

REST_FRAMEWORK = {
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.AllowAny"],
    "UNAUTHENTICATED_USER": None,
}
