"""The book API, rewritten with Django REST Framework."""

from django.utils import timezone
from rest_framework import generics, serializers
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


class Health(APIView):
    """GET /healthz."""

    def get(self, request):
        return Response({"ok": True})
