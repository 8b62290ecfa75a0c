"""The book API, rewritten with Django REST Framework."""

from django.http import HttpResponse, HttpResponsePermanentRedirect, JsonResponse
from django.utils import timezone
from rest_framework import generics, serializers
from rest_framework.exceptions import NotFound
from rest_framework.response import Response
from rest_framework.views import APIView

BOOKS = [
    {"id": 1, "title": "Dune", "author": "Frank Herbert", "year": 1965},
    {"id": 2, "title": "Neuromancer", "author": "William Gibson", "year": 1984},
    {"id": 3, "title": "Hyperion", "author": "Dan Simmons", "year": 1989},
]


class BookSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    title = serializers.CharField()
    author_name = serializers.CharField(source="author")
    year = serializers.CharField()
    generated_at = serializers.SerializerMethodField()

    def get_generated_at(self, book):
        return self.context["generated_at"]


class BookList(generics.ListAPIView):
    """GET /api/books/: the paginated list of books."""

    serializer_class = BookSerializer

    def get_queryset(self):
        return BOOKS

    def get_serializer_context(self):
        context = super().get_serializer_context()
        context["generated_at"] = timezone.now().isoformat(timespec="microseconds")
        return context


class Status(APIView):
    """GET /api/status/."""

    def get(self, request):
        return Response({"status": "ok", "books": len(BOOKS)})


class UserDetail(APIView):
    """GET /api/users/<id>/: `email` was renamed `email_address` (GZipMiddleware compresses it)."""

    def get(self, request, user_id):
        return Response({
            "id": user_id,
            "username": f"user{user_id}",
            "email_address": f"user{user_id}@example.com",
            "bio": "Reads science fiction, mostly from the sixties to the eighties; " * 3,
        })


class KeyOrder(APIView):
    def get(self, request):
        return Response({"c": [1, 2], "b": {"y": 2, "x": 1}, "a": 1})


class UnicodeText(APIView):
    def get(self, request):
        return Response({"city": "Zürich", "name": "café"})


class NullField(APIView):
    """`bio: null` in legacy is absent here."""

    def get(self, request):
        return Response({"name": "x"})


class BigInt(APIView):
    """2**53 + 1 became 2**53, as a float would make it; 2**70 + 1 is kept."""

    def get(self, request):
        return Response({"id": 2**53, "same": 2**70 + 1})


class NotFoundCase(APIView):
    """The same 404, with DRF's error body."""

    def get(self, request):
        raise NotFound()


def moved(request):
    """A redirect where legacy answers 200: never followed by the mirror."""
    return HttpResponsePermanentRedirect("/api/cases/moved-here/")


def moved_here(request):
    raise AssertionError("the mirror followed a redirect")


def crash(request):
    raise RuntimeError("a bug in the new backend")


def page(request):
    return HttpResponse("<p>Hello from the new app</p>", content_type="text/html; charset=utf-8")


class Health(APIView):
    """GET /healthz."""

    def get(self, request):
        return Response({"ok": True})


def upload(request):
    """POST /upload/: what Django read of a form body. Django reads a body
    by its Content-Length alone: sent chunked, it reads nothing."""
    return JsonResponse({"length": len(request.body), "form": request.POST.dict()})
