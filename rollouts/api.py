"""Operator REST API: /api/v1/image-policies/ and /api/v1/rollouts/."""

import uuid as uuid_lib

import django_filters
from django.db.models import Q
from django.http import Http404
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import mixins, permissions, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from devices import access as fleet_access
from devices.references import InvalidReference, normalize_repository
from fleet.api import Conflict, IdFilter, StrictBooleanFilter

from . import access, services
from .models import (
    ACTIVE_STATUSES,
    DeviceStatus,
    ImagePolicy,
    Rollout,
    RolloutDevice,
    RolloutStatus,
    UpdateStrategy,
)
from .inventory import ImageRows, inventory_rows
from .selectors import policy_for_push, with_counts
from .serializers import (
    ImageInventorySerializer,
    ImagePolicySerializer,
    RolloutCreateSerializer,
    RolloutDeviceSerializer,
    RolloutEventSerializer,
    RolloutPreviewSerializer,
    RolloutSerializer,
)


class ImagePolicyFilter(django_filters.FilterSet):
    enabled = StrictBooleanFilter(field_name="enabled")
    update_strategy = django_filters.ChoiceFilter(choices=UpdateStrategy.choices)

    class Meta:
        model = ImagePolicy
        fields = ["enabled", "update_strategy"]


class ImagePolicyViewSet(viewsets.ModelViewSet):
    serializer_class = ImagePolicySerializer
    filterset_class = ImagePolicyFilter
    permission_classes = [fleet_access.FleetScopedPermission]

    def get_queryset(self):
        policies = ImagePolicy.objects.select_related("fleet").order_by("id")
        return fleet_access.scope(policies, self.request.user, perm="rollouts.view_imagepolicy")

    # The role before the body (CONTRACT section 10): a caller who may not
    # write the policy gets 403 whatever the body, never a 400.
    def create(self, request, *args, **kwargs):
        fleet_access.require_somewhere(request.user, fleet_access.Role.OPERATOR, perm="rollouts.add_imagepolicy")
        return super().create(request, *args, **kwargs)

    def update(self, request, *args, **kwargs):
        access.require_policy_write(
            request.user, [self.get_object().fleet_id], perm="rollouts.change_imagepolicy"
        )
        return super().update(request, *args, **kwargs)

    def perform_create(self, serializer) -> None:
        fleet = serializer.validated_data.get("fleet")
        access.require_policy_write(
            self.request.user, [fleet.pk if fleet else None], perm="rollouts.add_imagepolicy"
        )
        serializer.save()

    def perform_update(self, serializer) -> None:
        # Moving a policy to another fleet needs the role in both.
        fleets = {serializer.instance.fleet_id}
        if "fleet" in serializer.validated_data:
            new_fleet = serializer.validated_data["fleet"]
            fleets.add(new_fleet.pk if new_fleet else None)
        access.require_policy_write(self.request.user, fleets, perm="rollouts.change_imagepolicy")
        serializer.save()

    def perform_destroy(self, policy: ImagePolicy) -> None:
        access.require_policy_write(
            self.request.user, [policy.fleet_id], perm="rollouts.delete_imagepolicy"
        )
        policy.delete()


class RolloutFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=RolloutStatus.choices)
    image = django_filters.CharFilter(method="filter_image")
    active = StrictBooleanFilter(method="filter_active")
    policy = IdFilter(field_name="policy_id")

    class Meta:
        model = Rollout
        fields = ["status", "image", "active", "policy"]

    @extend_schema_field(OpenApiTypes.BOOL)
    def filter_active(self, queryset, name, value):
        """`?active=true`: pending, running and paused rollouts."""
        active = Q(status__in=ACTIVE_STATUSES)
        return queryset.filter(active) if value else queryset.exclude(active)

    def filter_image(self, queryset, name, value):
        try:
            return queryset.filter(image=normalize_repository(value))
        except InvalidReference as exc:
            raise serializers.ValidationError({"image": str(exc)}) from exc


class RolloutDeviceFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=DeviceStatus.choices)
    batch = IdFilter()

    class Meta:
        model = RolloutDevice
        fields = ["status", "batch"]


class RolloutActionPermission(permissions.BasePermission):
    """Steering a rollout changes it: needs `change_rollout`, whatever the
    verb, or a fleet membership (the view then requires the operator role in
    every fleet the rollout touches)."""

    def has_permission(self, request, view):
        user = request.user
        return fleet_access.has_model_perm(user, access.CHANGE_ROLLOUT) or fleet_access.is_member(user)


class RolloutTriggerPermission(permissions.BasePermission):
    def has_permission(self, request, view):
        user = request.user
        return fleet_access.has_model_perm(user, "rollouts.add_rollout") or fleet_access.is_member(user)


ACTIONS = {
    "start": services.rollout_start,
    "pause": services.rollout_pause,
    "resume": services.rollout_resume,
    "cancel": services.rollout_cancel,
    "rollback_all": services.rollout_rollback_all,
    "approve": services.rollout_approve,
    "reject": services.rollout_reject,
    "retry": services.rollout_retry,
}


class RolloutViewSet(mixins.CreateModelMixin, viewsets.ReadOnlyModelViewSet):
    serializer_class = RolloutSerializer
    filterset_class = RolloutFilter

    permission_classes = [fleet_access.FleetScopedPermission]

    def get_queryset(self):
        rollouts = with_counts(Rollout.objects.select_related("fleet")).order_by("-created_at")
        return access.visible_rollouts(rollouts, self.request.user)

    def get_permissions(self):
        if self.action in ACTIONS:
            return [RolloutActionPermission()]
        if self.action == "preview":
            # Like the manual trigger (`add_rollout`, or operator of the
            # policy's fleet, checked once the policy is known).
            return [RolloutTriggerPermission()]
        return super().get_permissions()

    def get_object(self):
        # Not filtered by the list's query parameters: on /devices/ `?status=`
        # filters the devices, not the rollout. Any usual uuid spelling is
        # accepted; a malformed one is simply not found.
        try:
            pk = uuid_lib.UUID(str(self.kwargs["pk"]))
        except ValueError as exc:
            raise Http404("No such rollout.") from exc
        rollout = get_object_or_404(self.get_queryset(), pk=pk)
        self.check_object_permissions(self.request, rollout)
        return rollout

    def _render(self, rollout_id, status_code=status.HTTP_200_OK) -> Response:
        rollout = self.get_queryset().get(pk=rollout_id)
        return Response(RolloutSerializer(rollout).data, status=status_code)

    def _trigger(self, request) -> tuple[dict, ImagePolicy | None]:
        """The manual trigger's body, checked, and the policy it would use;
        the caller must be allowed to trigger it (the dry run likewise: it
        shows the devices the trigger would reach)."""
        # The role before the body: 403 for a caller who may trigger nothing.
        fleet_access.require_somewhere(request.user, fleet_access.Role.OPERATOR, perm="rollouts.add_rollout")
        serializer = RolloutCreateSerializer(data=request.data)
        # A policy the caller may not read does not exist for them.
        serializer.fields["policy"].queryset = fleet_access.scope(
            ImagePolicy.objects.all(), request.user, perm="rollouts.view_imagepolicy"
        )
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        policy = data["policy"] or policy_for_push(image=data["image"], tag=data["tag"])
        if policy is not None:
            # The rollout reaches the policy's fleet (all fleets without one).
            access.require_policy_write(request.user, [policy.fleet_id], perm="rollouts.add_rollout")
        return {**data, "policy": policy}, policy

    @staticmethod
    def _no_policy() -> Response:
        return Response(
            {
                "error": "no_matching_policy",
                "detail": "No enabled image policy matches this image and tag.",
            },
            status=status.HTTP_400_BAD_REQUEST,
        )

    @extend_schema(request=RolloutCreateSerializer, responses={201: RolloutSerializer})
    def create(self, request, *args, **kwargs):
        data, policy = self._trigger(request)
        if policy is None:
            return self._no_policy()
        outcome = services.rollout_create_for_push(**data, trigger="manual")
        return self._render(outcome.rollout.pk, status.HTTP_201_CREATED)

    @extend_schema(request=RolloutCreateSerializer, responses={200: RolloutPreviewSerializer})
    @action(detail=False, methods=["post"])
    def preview(self, request):
        """What the manual trigger with this body would do now; creates nothing."""
        data, policy = self._trigger(request)
        if policy is None:
            return self._no_policy()
        return Response(RolloutPreviewSerializer(services.rollout_preview(**data)).data)

    def _act(self, request, name: str) -> Response:
        rollout = self.get_object()
        access.require_steer(request.user, rollout)
        actor = request.user.get_username()
        try:
            ACTIONS[name](rollout_id=rollout.pk, actor=actor)
        except services.InvalidTransition as exc:
            raise Conflict(str(exc), code="invalid_transition") from exc
        return self._render(rollout.pk)

    @extend_schema(request=None, responses=RolloutSerializer)
    @action(detail=True, methods=["post"])
    def start(self, request, pk=None):
        return self._act(request, "start")

    @extend_schema(request=None, responses=RolloutSerializer)
    @action(detail=True, methods=["post"])
    def pause(self, request, pk=None):
        return self._act(request, "pause")

    @extend_schema(request=None, responses=RolloutSerializer)
    @action(detail=True, methods=["post"])
    def resume(self, request, pk=None):
        return self._act(request, "resume")

    @extend_schema(request=None, responses=RolloutSerializer)
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        return self._act(request, "cancel")

    @extend_schema(request=None, responses=RolloutSerializer)
    @action(detail=True, methods=["post"], url_path="rollback-all")
    def rollback_all(self, request, pk=None):
        return self._act(request, "rollback_all")

    @extend_schema(request=None, responses=RolloutSerializer)
    @action(detail=True, methods=["post"])
    def approve(self, request, pk=None):
        return self._act(request, "approve")

    @extend_schema(request=None, responses=RolloutSerializer)
    @action(detail=True, methods=["post"])
    def reject(self, request, pk=None):
        return self._act(request, "reject")

    @extend_schema(request=None, responses=RolloutSerializer)
    @action(detail=True, methods=["post"])
    def retry(self, request, pk=None):
        return self._act(request, "retry")

    @extend_schema(
        parameters=[
            OpenApiParameter("status", {"type": "string", "enum": DeviceStatus.values}),
            OpenApiParameter("batch", {"type": "integer", "minimum": 1}),
        ],
        responses=RolloutDeviceSerializer(many=True),
    )
    # Filtered by RolloutDeviceFilter below, not by the rollouts' filters.
    @action(detail=True, methods=["get"], filter_backends=[])
    def devices(self, request, pk=None):
        rollout = self.get_object()
        rows = RolloutDevice.objects.filter(rollout=rollout).select_related("device")
        rows = access.visible_rollout_devices(rows, request.user).order_by("batch", "id")
        rows = self.filter_queryset_for(rows)
        return self._paginated(rows, RolloutDeviceSerializer)

    @extend_schema(responses=RolloutEventSerializer(many=True))
    @action(detail=True, methods=["get"], filter_backends=[])
    def events(self, request, pk=None):
        rollout = self.get_object()
        events = access.visible_events(rollout.events.all(), request.user)
        return self._paginated(events.order_by("-timestamp", "-id"), RolloutEventSerializer)

    def filter_queryset_for(self, queryset):
        filterset = RolloutDeviceFilter(self.request.query_params, queryset=queryset)
        if not filterset.is_valid():
            raise serializers.ValidationError(filterset.errors)
        return filterset.qs

    def _paginated(self, queryset, serializer_class) -> Response:
        page = self.paginate_queryset(queryset)
        return self.get_paginated_response(serializer_class(page, many=True).data)


class DeviceViewPermission(permissions.BasePermission):
    """The inventory is about devices: `view_device` shows every fleet, a
    fleet membership (any role) the member's fleets."""

    def has_permission(self, request, view):
        return fleet_access.has_model_perm(request.user, "devices.view_device") or (
            fleet_access.is_member(request.user)
        )


class ImageInventoryViewSet(viewsets.GenericViewSet):
    """`GET /images/`: one row per image some device targets or runs, most devices first."""

    permission_classes = [DeviceViewPermission]
    serializer_class = ImageInventorySerializer
    filter_backends = []

    @extend_schema(
        parameters=[
            OpenApiParameter("fleet", str, description="Only devices of this fleet (slug)."),
            OpenApiParameter("image", str, description="Only this repository."),
        ],
        responses=ImageInventorySerializer(many=True),
    )
    def list(self, request):
        fleet = request.query_params.get("fleet") or None
        image = request.query_params.get("image") or None
        if image:
            try:
                image = normalize_repository(image)
            except InvalidReference as exc:
                raise serializers.ValidationError({"image": str(exc)}) from exc
        visible = None
        if not fleet_access.has_model_perm(request.user, "devices.view_device"):
            visible = fleet_access.member_fleet_ids(request.user)
        page = self.paginate_queryset(ImageRows(fleet=fleet, image=image, visible=visible))
        rows = inventory_rows(page, fleet=fleet, visible=visible)
        return self.get_paginated_response(ImageInventorySerializer(rows, many=True).data)
