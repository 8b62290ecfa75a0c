from django.urls import path

from . import api

urlpatterns = [
    path("api/books/", api.BookList.as_view()),
    path("api/status/", api.Status.as_view()),
    path("healthz", api.Health.as_view()),
]
