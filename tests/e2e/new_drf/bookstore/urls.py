from django.urls import path

from . import api

urlpatterns = [
    path("api/books/", api.BookList.as_view()),
    path("upload/", api.upload),
    path("api/status/", api.Status.as_view()),
    path("api/users/<int:user_id>/", api.UserDetail.as_view()),
    path("api/cases/key-order/", api.KeyOrder.as_view()),
    path("api/cases/unicode/", api.UnicodeText.as_view()),
    path("api/cases/null/", api.NullField.as_view()),
    path("api/cases/bigint/", api.BigInt.as_view()),
    path("api/cases/not-found/", api.NotFoundCase.as_view()),
    path("api/cases/moved/", api.moved),
    path("api/cases/moved-here/", api.moved_here),
    path("api/cases/crash/", api.crash),
    path("api/cases/page/", api.page),
    path("healthz", api.Health.as_view()),
]
