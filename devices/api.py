"""Operator REST API for fleets and devices (/api/v1/fleets/, /api/v1/devices/)."""

import uuid as uuid_lib

import django_filters
from django.contrib.auth import get_user_model
from django.db.models import Count
from django.http import Http404
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from fleet.api import Conflict, StrictBooleanFilter

from . import access, services
from .models import Device, Fleet, FleetAuditEvent, FleetMembership, Role
from .selectors import devices_online, online_since
from .serializers import (
    DeviceSerializer,
    DeviceUpdateSerializer,
    FleetAuditEventSerializer,
    FleetSerializer,
    FleetUpdateSerializer,
    MemberSerializer,
    MemberUpdateSerializer,
    RotatedKeySerializer,
)


class FleetViewSet(viewsets.ModelViewSet):
    lookup_field = "slug"
    # Anything else is no slug: a 404 from the URL resolver, not a query.
    lookup_value_regex = r"[-a-zA-Z0-9_]+"
    serializer_class = FleetSerializer
    permission_classes = [access.FleetScopedPermission]

    def get_queryset(self):
        fleets = Fleet.objects.annotate(device_count=Count("devices")).order_by("slug")
        return access.scope(fleets, self.request.user, perm="devices.view_fleet", fleet_field="pk")

    def get_serializer_class(self):
        if self.action in ("update", "partial_update"):
            return FleetUpdateSerializer
        return FleetSerializer

    def create(self, request, *args, **kwargs):
        # A new fleet has no members yet: creating one is global.
        access.require(request.user, [], Role.ADMIN, perm="devices.add_fleet")
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        fleet, key = services.fleet_create(**serializer.validated_data)
        fleet.device_count = 0
        data = {**FleetSerializer(fleet).data, "provisioning_key": key}
        return Response(data, status=status.HTTP_201_CREATED)

    def perform_update(self, serializer) -> None:
        access.require(
            self.request.user, [serializer.instance.pk], Role.ADMIN, perm="devices.change_fleet"
        )
        serializer.save()

    def perform_destroy(self, fleet: Fleet) -> None:
        # Like creation, deleting a fleet (and its memberships) is global.
        access.require(self.request.user, [], Role.ADMIN, perm="devices.delete_fleet")
        try:
            services.fleet_delete(fleet=fleet)
        except services.FleetNotEmpty as exc:
            raise Conflict(str(exc), code="fleet_not_empty") from exc

    @extend_schema(request=None, responses=RotatedKeySerializer)
    @action(detail=True, methods=["post"], url_path="rotate-key")
    def rotate_key(self, request, slug=None):
        fleet = self.get_object()
        access.require(request.user, [fleet.pk], Role.ADMIN, perm="devices.change_fleet")
        key = services.fleet_rotate_key(fleet=fleet, actor=request.user.get_username())
        return Response({"provisioning_key": key})

    @extend_schema(responses=FleetAuditEventSerializer(many=True))
    @action(detail=True, methods=["get"])
    def audit(self, request, slug=None):
        """Membership changes and key rotations of the fleet, newest first."""
        fleet = self.get_object()
        access.require(request.user, [fleet.pk], Role.ADMIN, perm="devices.view_fleetauditevent")
        page = self.paginate_queryset(FleetAuditEvent.objects.filter(fleet=fleet))
        return self.get_paginated_response(FleetAuditEventSerializer(page, many=True).data)


class FleetMemberViewSet(viewsets.GenericViewSet):
    """/fleets/{slug}/members/: every member of a fleet may read its members;
    its admins (or users with the membership model permissions) change them."""

    serializer_class = MemberSerializer
    permission_classes = [access.FleetScopedPermission]
    # For the permission class (which model) and the schema; rows come from members().
    queryset = FleetMembership.objects.all()
    lookup_field = "username"
    lookup_value_regex = r"[\w.@+-]+"

    def fleet(self) -> Fleet:
        if not hasattr(self, "_fleet"):
            fleets = access.scope(
                Fleet.objects.all(),
                self.request.user,
                perm=("devices.view_fleet", "devices.view_fleetmembership"),
                fleet_field="pk",
            )
            self._fleet = get_object_or_404(fleets, slug=self.kwargs["fleet_slug"])
        return self._fleet

    def members(self):
        return (
            FleetMembership.objects.filter(fleet=self.fleet())
            .select_related("user", "fleet")
            .order_by("user__username")
        )

    def get_object(self) -> FleetMembership:
        return get_object_or_404(self.members(), user__username=self.kwargs["username"])

    def _require_admin(self, perm: str) -> None:
        access.require(self.request.user, [self.fleet().pk], Role.ADMIN, perm=perm)

    def list(self, request, fleet_slug=None):
        page = self.paginate_queryset(self.members())
        return self.get_paginated_response(MemberSerializer(page, many=True).data)

    @extend_schema(request=MemberSerializer, responses={201: MemberSerializer})
    def create(self, request, fleet_slug=None):
        self._require_admin("devices.add_fleetmembership")
        serializer = MemberSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        username = serializer.validated_data["user"]["username"]
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise serializers.ValidationError({"username": [f"No user named {username!r}."]})
        try:
            membership = services.membership_add(
                fleet=self.fleet(),
                user=user,
                role=serializer.validated_data["role"],
                actor=request.user.get_username(),
            )
        except services.MembershipExists as exc:
            raise Conflict(str(exc), code="member_exists") from exc
        return Response(MemberSerializer(membership).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=MemberUpdateSerializer, responses=MemberSerializer)
    def partial_update(self, request, fleet_slug=None, username=None):
        membership = self.get_object()
        self._require_admin("devices.change_fleetmembership")
        serializer = MemberUpdateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        services.membership_change_role(
            membership=membership,
            role=serializer.validated_data["role"],
            actor=request.user.get_username(),
        )
        return Response(MemberSerializer(membership).data)

    def destroy(self, request, fleet_slug=None, username=None):
        membership = self.get_object()
        self._require_admin("devices.delete_fleetmembership")
        services.membership_remove(membership=membership, actor=request.user.get_username())
        return Response(status=status.HTTP_204_NO_CONTENT)


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
    permission_classes = [access.FleetScopedPermission]

    def get_queryset(self):
        devices = (
            Device.objects.select_related("fleet")
            .prefetch_related("tag_set", "services")
            .order_by("id")
        )
        return access.scope(devices, self.request.user, perm="devices.view_device")

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
        access.require(request.user, [data["fleet"].pk], Role.ADMIN, perm="devices.add_device")
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
        # Deploying (services) is an operator's job; renaming and retagging an admin's.
        changes_device = data.get("name") is not None or data.get("tags") is not None
        role = Role.ADMIN if changes_device else Role.OPERATOR
        access.require(request.user, [device.fleet_id], role, perm="devices.change_device")
        services.device_update(
            device=device,
            name=data.get("name"),
            tags=data.get("tags"),
            targets=data.get("services"),
        )
        return Response(self._render(device))

    def perform_destroy(self, device: Device) -> None:
        access.require(self.request.user, [device.fleet_id], Role.ADMIN, perm="devices.delete_device")
        device.delete()

    def _render(self, device: Device) -> dict:
        fresh = self.get_queryset().get(pk=device.pk)
        return DeviceSerializer(fresh, context=self.get_serializer_context()).data
