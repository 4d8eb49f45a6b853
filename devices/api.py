"""Operator REST API for fleets and devices (/api/v1/fleets/, /api/v1/devices/)."""

import uuid as uuid_lib

import django_filters
from django.db.models import Count
from django.http import Http404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import status, viewsets
from rest_framework.response import Response

from fleet.api import Conflict, StrictBooleanFilter

from . import services
from .models import Device, Fleet
from .selectors import devices_online, online_since
from .serializers import (
    DeviceSerializer,
    DeviceUpdateSerializer,
    FleetSerializer,
    FleetUpdateSerializer,
)


class FleetViewSet(viewsets.ModelViewSet):
    lookup_field = "slug"
    # Anything else is no slug: a 404 from the URL resolver, not a query.
    lookup_value_regex = r"[-a-zA-Z0-9_]+"
    serializer_class = FleetSerializer
    queryset = Fleet.objects.annotate(device_count=Count("devices")).order_by("slug")

    def get_serializer_class(self):
        if self.action in ("update", "partial_update"):
            return FleetUpdateSerializer
        return FleetSerializer

    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        fleet, key = services.fleet_create(**serializer.validated_data)
        fleet.device_count = 0
        data = {**FleetSerializer(fleet).data, "provisioning_key": key}
        return Response(data, status=status.HTTP_201_CREATED)

    def perform_destroy(self, fleet: Fleet) -> None:
        try:
            services.fleet_delete(fleet=fleet)
        except services.FleetNotEmpty as exc:
            raise Conflict(str(exc), code="fleet_not_empty") from exc


class DeviceFilter(django_filters.FilterSet):
    fleet = django_filters.CharFilter(field_name="fleet__slug")
    tag = django_filters.CharFilter(method="filter_tag")
    online = StrictBooleanFilter(method="filter_online")

    class Meta:
        model = Device
        fields = ["fleet", "tag", "online"]

    def filter_tag(self, queryset, name, value):
        return queryset.filter(tag_set__name=value)

    @extend_schema_field(OpenApiTypes.BOOL)
    def filter_online(self, queryset, name, value):
        return devices_online(queryset, value)


class DeviceViewSet(viewsets.ModelViewSet):
    lookup_field = "uuid"
    filterset_class = DeviceFilter
    queryset = (
        Device.objects.select_related("fleet")
        .prefetch_related("tag_set", "services")
        .order_by("id")
    )

    def get_serializer_class(self):
        if self.action in ("update", "partial_update"):
            return DeviceUpdateSerializer
        return DeviceSerializer

    def get_serializer_context(self):
        # One cut-off per request, so every row of a page is judged alike.
        return {**super().get_serializer_context(), "online_since": online_since()}

    def get_object(self):
        # Any usual uuid spelling is accepted; a malformed one is simply not found.
        try:
            self.kwargs[self.lookup_field] = uuid_lib.UUID(self.kwargs[self.lookup_field])
        except ValueError as exc:
            raise Http404("No such device.") from exc
        return super().get_object()

    @extend_schema(responses={201: DeviceSerializer})
    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        try:
            device, key = services.device_create(
                fleet=data["fleet"],
                uuid=data.get("uuid"),
                name=data.get("name", ""),
                tags=data.get("tags", []),
                targets=data.get("services", {}),
            )
        except services.DeviceAlreadyExists as exc:
            raise Conflict(str(exc), code="device_exists") from exc
        body = {**self._render(device), "api_key": key}
        return Response(body, status=status.HTTP_201_CREATED)

    def update(self, request, *args, **kwargs):
        partial = kwargs.pop("partial", False)
        device = self.get_object()
        serializer = self.get_serializer(device, data=request.data, partial=partial)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        services.device_update(
            device=device,
            name=data.get("name"),
            tags=data.get("tags"),
            targets=data.get("services"),
        )
        return Response(self._render(device))

    def _render(self, device: Device) -> dict:
        fresh = self.get_queryset().get(pk=device.pk)
        return DeviceSerializer(fresh, context=self.get_serializer_context()).data
