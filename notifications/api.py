"""Operator REST API: /api/v1/notification-hooks/."""

from drf_spectacular.utils import extend_schema
from rest_framework import viewsets
from rest_framework.decorators import action

from .models import NotificationHook
from .serializers import NotificationDeliverySerializer, NotificationHookSerializer
from .services import hook_create


class NotificationHookViewSet(viewsets.ModelViewSet):
    queryset = NotificationHook.objects.order_by("id")
    serializer_class = NotificationHookSerializer

    def perform_create(self, serializer):
        serializer.instance = hook_create(**serializer.validated_data)

    # A page of deliveries: many=True gives the schema the paginated list.
    @extend_schema(responses=NotificationDeliverySerializer(many=True))
    @action(
        detail=True, methods=["get"], serializer_class=NotificationDeliverySerializer, filter_backends=[]
    )
    def deliveries(self, request, pk=None):
        hook = self.get_object()
        page = self.paginate_queryset(hook.deliveries.order_by("-created_at", "-id"))
        return self.get_paginated_response(NotificationDeliverySerializer(page, many=True).data)
