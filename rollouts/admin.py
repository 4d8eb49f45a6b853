from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path
from rest_framework import serializers as drf_serializers

from devices import access as fleet_access
from devices.admin_access import FleetListFilter, FleetScopedAdminMixin, ReadOnlyAdminMixin
from devices.models import Role
from devices.references import InvalidReference
from devices.serializers import TagListField
from fleet.api import first_error_message

from . import access, services
from .models import ImagePolicy, Rollout, RolloutDevice, RolloutEvent
from .selectors import pattern_is_pollable, pattern_repository
from .serializers import (
    MAX_BATCH_DELAY_MINUTES,
    RolloutCreateSerializer,
    normalize_pattern_to_store,
    validate_batch_percentages,
    validate_maintenance_window,
)
from .versions import parse_constraint, validate_required_versions

OPERATOR_ACTIONS = {
    "pause": services.rollout_pause,
    "resume": services.rollout_resume,
    "cancel": services.rollout_cancel,
    "rollback_all": services.rollout_rollback_all,
    "start": services.rollout_start,
    "approve": services.rollout_approve,
    "reject": services.rollout_reject,
}


class ImagePolicyForm(forms.ModelForm):
    """The API's validation, so the admin cannot store what the API refuses."""

    class Meta:
        model = ImagePolicy
        fields = "__all__"

    def clean_image_pattern(self):
        try:
            return normalize_pattern_to_store(self.cleaned_data["image_pattern"])
        except InvalidReference as exc:
            raise forms.ValidationError(str(exc)) from exc

    def clean_batch_delay_minutes(self):
        delay = self.cleaned_data["batch_delay_minutes"]
        if delay > MAX_BATCH_DELAY_MINUTES:
            raise forms.ValidationError(f"At most {MAX_BATCH_DELAY_MINUTES} minutes (a year).")
        return delay

    def clean_batch_percentages(self):
        return _drf_validated(validate_batch_percentages, self.cleaned_data["batch_percentages"])

    def clean_maintenance_window(self):
        return _drf_validated(validate_maintenance_window, self.cleaned_data["maintenance_window"])

    def clean_device_tags(self):
        return _drf_validated(TagListField().run_validation, self.cleaned_data["device_tags"])

    def clean_device_uuids(self):
        field = drf_serializers.ListField(child=drf_serializers.UUIDField())
        uuids = _drf_validated(field.run_validation, self.cleaned_data["device_uuids"])
        return [str(uuid) for uuid in uuids]

    def clean_version_constraint(self):
        value = (self.cleaned_data.get("version_constraint") or "").strip()
        if not value:
            return None
        try:
            parse_constraint(value)
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from exc
        return value

    def clean_required_versions(self):
        try:
            return validate_required_versions(self.cleaned_data["required_versions"])
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from exc

    def clean(self):
        cleaned = super().clean()
        pattern = cleaned.get("image_pattern") or ""
        if cleaned.get("poll_registry") and not pattern_is_pollable(pattern):
            self.add_error("poll_registry", "A pattern with wildcards in its repository cannot be polled.")
        if cleaned.get("update_strategy") == "scheduled" and not cleaned.get("maintenance_window"):
            self.add_error("maintenance_window", "The scheduled strategy needs a maintenance window.")
        return cleaned


def _drf_validated(validator, value):
    try:
        return validator(value)
    except drf_serializers.ValidationError as exc:
        raise forms.ValidationError(first_error_message(exc.detail)) from exc


@admin.register(ImagePolicy)
class ImagePolicyAdmin(FleetScopedAdminMixin, admin.ModelAdmin):
    form = ImagePolicyForm
    list_display = ["image_pattern", "update_strategy", "batch_percentages", "fleet", "enabled"]
    list_filter = ["enabled", "update_strategy", ("fleet", FleetListFilter)]
    # The fleet column: one join, not a query per row.
    list_select_related = ["fleet"]
    # An operator writes the policies of their fleets; a policy for all
    # fleets (no fleet) needs the model permissions.
    member_roles = {
        "view": Role.VIEWER,
        "add": Role.OPERATOR,
        "change": Role.OPERATOR,
        "delete": Role.OPERATOR,
    }
    search_fields = ["image_pattern"]
    readonly_fields = ["last_polled_at", "last_poll_error", "next_poll_at", "poll_failures"]
    exclude = ["poll_lease_until"]
    # Adds the "Preview" button (the dry run of a push, see preview_view).
    change_form_template = "admin/rollouts/imagepolicy/change_form.html"

    def get_urls(self):
        preview = path(
            "<int:policy_id>/preview/",
            self.admin_site.admin_view(self.preview_view),
            name="rollouts_imagepolicy_preview",
        )
        return [preview, *super().get_urls()]

    def preview_view(self, request, policy_id: int):
        """What a push of image:tag would do under this policy now (the API's
        `POST /rollouts/preview`, same access rules: the policy visible, and
        the right to trigger it)."""
        policy = get_object_or_404(self.get_queryset(request), pk=policy_id)
        if not fleet_access.may(
            request.user, [policy.fleet_id], Role.OPERATOR, perm="rollouts.add_rollout"
        ):
            raise PermissionDenied
        context = {
            **self.admin_site.each_context(request),
            "title": "Preview",
            "policy": policy,
            # The policy's one repository, when its pattern names one.
            "image": request.GET.get("image")
            or (pattern_repository(policy.image_pattern) if pattern_is_pollable(policy.image_pattern) else ""),
            "tag": request.GET.get("tag", ""),
            "allow_downgrade": request.GET.get("allow_downgrade") == "true",
        }
        if context["tag"]:
            context.update(self._preview(policy, context))
        return TemplateResponse(request, "admin/rollouts/imagepolicy/preview.html", context)

    def _preview(self, policy: ImagePolicy, context: dict) -> dict:
        body = {"image": context["image"], "tag": context["tag"], "policy": policy.pk}
        if context["allow_downgrade"]:
            body["allow_downgrade"] = True
        serializer = RolloutCreateSerializer(data=body)
        if not serializer.is_valid():
            return {"error": first_error_message(serializer.errors)}
        preview = services.rollout_preview(**serializer.validated_data)
        seconds = preview["estimated_duration_seconds"]
        return {"preview": preview, "duration": _duration(seconds)}


def _duration(seconds: int) -> str:
    hours, rest = divmod(seconds, 3600)
    return f"{hours} h {rest // 60} min" if hours else f"{rest // 60} min {rest % 60} s"


@admin.register(Rollout)
class RolloutAdmin(FleetScopedAdminMixin, admin.ModelAdmin):
    list_filter = ["status", "strategy", "trigger", "digest_source"]
    search_fields = ["image", "new_tag", "id"]
    actions = ["pause", "resume", "cancel", "rollback_all", "start", "approve", "reject"]
    # The page of one rollout and the list's columns are the console's
    # (console/rollout_pages.py).

    def has_add_permission(self, request):
        # Rollouts come from a push (webhook) or the API's manual trigger.
        return False

    def has_change_permission(self, request, obj=None):
        # Shown read-only; state changes go through the actions.
        return False

    # A rollout belongs to every fleet it touches (rollouts.access): a member
    # of any of them sees it, an operator of all of them steers it.
    member_roles = {"view": Role.VIEWER, "steer": Role.OPERATOR}
    extra_model_perms = {"steer": access.CHANGE_ROLLOUT}

    def member_rows(self, queryset, user, permission, role):
        if permission == "steer":
            return access.steerable_rollouts(queryset, user)
        return access.visible_rollouts(queryset, user)

    def fleets_of(self, rollout):
        return access.rollout_fleet_ids(rollout)

    def has_steer_permission(self, request, obj=None):
        return self.has_fleet_permission(request, "steer", obj)

    def _run(self, request, queryset, name: str) -> None:
        for rollout in queryset:
            try:
                OPERATOR_ACTIONS[name](rollout_id=rollout.pk, actor=request.user.get_username())
            except services.InvalidTransition as exc:
                self.message_user(request, f"{rollout}: {exc}", messages.WARNING)
            else:
                self.message_user(request, f"{rollout}: {name.replace('_', ' ')} done.")

    @admin.action(description="Pause selected rollouts", permissions=["steer"])
    def pause(self, request, queryset):
        self._run(request, queryset, "pause")

    @admin.action(description="Resume selected rollouts", permissions=["steer"])
    def resume(self, request, queryset):
        self._run(request, queryset, "resume")

    @admin.action(description="Cancel selected rollouts", permissions=["steer"])
    def cancel(self, request, queryset):
        self._run(request, queryset, "cancel")

    @admin.action(description="Roll back all devices of selected rollouts", permissions=["steer"])
    def rollback_all(self, request, queryset):
        self._run(request, queryset, "rollback_all")

    @admin.action(description="Start selected (manual) rollouts", permissions=["steer"])
    def start(self, request, queryset):
        self._run(request, queryset, "start")

    @admin.action(description="Approve selected rollouts (awaiting approval)", permissions=["steer"])
    def approve(self, request, queryset):
        self._run(request, queryset, "approve")

    @admin.action(description="Reject selected rollouts (awaiting approval)", permissions=["steer"])
    def reject(self, request, queryset):
        self._run(request, queryset, "reject")


@admin.register(RolloutDevice)
class RolloutDeviceAdmin(FleetScopedAdminMixin, admin.ModelAdmin):
    list_display = [
        "device", "service", "rollout", "batch", "status", "failure_reason", "skip_reason",
        "scheduled_at", "verdict_at",
    ]
    list_filter = ["status", "batch", "failure_reason", "skip_reason"]
    search_fields = ["device__name", "device__uuid", "rollout__id"]
    list_select_related = ["device", "rollout"]
    raw_id_fields = ["device", "rollout"]
    # A member reads the rows of their own devices, not those of the other
    # fleets a rollout spans.
    fleet_field = "device__fleet"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(RolloutEvent)
class RolloutEventAdmin(ReadOnlyAdminMixin, FleetScopedAdminMixin, admin.ModelAdmin):
    list_display = ["timestamp", "event_type", "rollout", "device_uuid", "message"]
    list_filter = ["event_type"]
    search_fields = ["rollout__id", "device_uuid", "message"]
    list_select_related = ["rollout"]

    def member_rows(self, queryset, user, permission, role):
        # Events of the rollouts a member sees; of their device events, only
        # those of their own devices.
        visible = access.visible_rollouts(Rollout.objects.all(), user)
        return access.visible_events(queryset.filter(rollout__in=visible), user)

    def fleets_of(self, event):
        return access.rollout_fleet_ids(event.rollout)
