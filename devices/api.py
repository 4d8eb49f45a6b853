"""Operator REST API for fleets and devices (/api/v1/fleets/, /api/v1/devices/)."""

import uuid as uuid_lib

import django_filters
from django.contrib.auth import get_user_model
from django.db.models import Count, Exists, OuterRef
from django.http import Http404
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import permissions, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from fleet.api import BadRequest, Conflict, StrictBooleanFilter

from . import access, services
from .digests import enqueue_fill_target_digests
from .models import Device, DeviceService, Fleet, FleetAuditEvent, FleetMembership, Role, ServiceHistory
from .references import InvalidReference, normalize_repository
from .selectors import devices_behind, devices_online, devices_with_image, online_since
from .serializers import (
    DeviceSerializer,
    DeviceUpdateSerializer,
    ErrorSerializer,
    FleetAuditEventSerializer,
    FleetSerializer,
    FleetUpdateSerializer,
    MemberSerializer,
    MemberUpdateSerializer,
    RollbackSerializer,
    RotatedKeySerializer,
    ServiceHistorySerializer,
)


class DeviceChangePermission(permissions.BasePermission):
    """An action that changes a device's targets, whatever the verb: the model
    permission `change_device`, or a fleet membership (the view then requires
    the operator role in the device's fleet)."""

    def has_permission(self, request, view):
        return access.has_model_perm(request.user, "devices.change_device") or access.is_member(
            request.user
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
        try:
            fleet, key = services.fleet_create(**serializer.validated_data)
        except services.FleetExists as exc:
            raise Conflict(str(exc), code="fleet_exists") from exc
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
        # A PATCH: a field left out keeps its value (`{}` changes nothing).
        serializer = MemberUpdateSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        if "role" in serializer.validated_data:
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
    pinned = StrictBooleanFilter(method="filter_pinned")
    image = django_filters.CharFilter(method="filter_image")
    behind = StrictBooleanFilter(method="filter_behind")

    class Meta:
        model = Device
        fields = ["fleet", "tag", "online", "pinned", "image", "behind"]

    def filter_image(self, queryset, name, value):
        """`?image=`: devices with a service that targets or runs the image."""
        return devices_with_image(queryset, _repository(value))

    @extend_schema_field(OpenApiTypes.BOOL)
    def filter_behind(self, queryset, name, value):
        """`?image=...&behind=true`: devices not on the image's latest version
        (that of its newest completed rollout)."""
        image = self.form.cleaned_data.get("image")
        if not image:
            raise ValidationError({"behind": "behind needs image=<repository>."})
        behind = devices_behind(queryset, _repository(image))
        return behind if value else queryset.exclude(pk__in=behind.values("pk"))

    @extend_schema_field(OpenApiTypes.BOOL)
    def filter_pinned(self, queryset, name, value):
        """`?pinned=true`: devices with a pinned service."""
        pinned = Exists(DeviceService.objects.filter(device_id=OuterRef("pk"), pinned=True))
        return queryset.filter(pinned) if value else queryset.exclude(pinned)

    def filter_tag(self, queryset, name, value):
        return queryset.filter(tag_set__name=value)

    @extend_schema_field(OpenApiTypes.BOOL)
    def filter_online(self, queryset, name, value):
        return devices_online(queryset, value)


def _repository(value: str) -> str:
    try:
        return normalize_repository(value)
    except InvalidReference as exc:
        raise ValidationError({"image": str(exc)}) from exc


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
        # The role first, then the body (CONTRACT section 10: 403, not 400).
        access.require_somewhere(request.user, Role.ADMIN, perm="devices.add_device")
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
        enqueue_fill_target_digests(device.pk)
        body = {**self._render(device), "api_key": key}
        return Response(body, status=status.HTTP_201_CREATED)

    def update(self, request, *args, **kwargs):
        partial = kwargs.pop("partial", False)
        device = self.get_object()
        # Deploying (services) is an operator's job; renaming and retagging an
        # admin's. Judged from the body as sent, before it is validated: a
        # caller without the role gets 403 whatever the body.
        raw = request.data if isinstance(request.data, dict) else {}
        changes_device = raw.get("name") is not None or raw.get("tags") is not None
        role = Role.ADMIN if changes_device else Role.OPERATOR
        access.require(request.user, [device.fleet_id], role, perm="devices.change_device")
        serializer = self.get_serializer(device, data=request.data, partial=partial)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        try:
            services.device_update(
                device=device,
                name=data.get("name"),
                tags=data.get("tags"),
                services=data.get("services"),
            )
        except services.UnknownService as exc:
            raise BadRequest(str(exc), code="unknown_service") from exc
        enqueue_fill_target_digests(device.pk)
        return Response(self._render(device))

    @extend_schema(
        parameters=[OpenApiParameter("service", str, description="Only this service.")],
        responses={
            200: ServiceHistorySerializer(many=True),
            403: ErrorSerializer,
            404: ErrorSerializer,
        },
    )
    @action(detail=True, methods=["get"], filter_backends=[])
    def history(self, request, uuid=None):
        """Every target the device's services had, newest first."""
        device = self.get_object()
        entries = ServiceHistory.objects.filter(device=device).order_by("-deployed_at", "-id")
        if request.query_params.get("service"):
            entries = entries.filter(service=request.query_params["service"])
        page = self.paginate_queryset(entries)
        return self.get_paginated_response(ServiceHistorySerializer(page, many=True).data)

    @extend_schema(
        request=RollbackSerializer,
        responses={
            200: DeviceSerializer,
            400: ErrorSerializer,
            403: ErrorSerializer,
            404: ErrorSerializer,
            409: ErrorSerializer,
        },
    )
    @action(
        detail=True, methods=["post"], permission_classes=[DeviceChangePermission], filter_backends=[]
    )
    def rollback(self, request, uuid=None):
        """Send one or every service back to its previous (or a named) version."""
        device = self.get_object()
        access.require(request.user, [device.fleet_id], Role.OPERATOR, perm="devices.change_device")
        serializer = RollbackSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            services.device_rollback(device_id=device.pk, **serializer.validated_data)
        except services.UnknownService as exc:
            raise BadRequest(str(exc), code="unknown_service") from exc
        except services.NoPreviousVersion as exc:
            raise Conflict(str(exc), code="no_previous_version") from exc
        enqueue_fill_target_digests(device.pk)
        return Response(self._render(device))

    def perform_destroy(self, device: Device) -> None:
        access.require(self.request.user, [device.fleet_id], Role.ADMIN, perm="devices.delete_device")
        device.delete()

    def _render(self, device: Device) -> dict:
        fresh = self.get_queryset().get(pk=device.pk)
        return DeviceSerializer(fresh, context=self.get_serializer_context()).data
