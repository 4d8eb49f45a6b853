"""The rollout list and the rollout page ("cockpit") of the console."""

import uuid
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.admin import display
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import render
from django.template.loader import render_to_string
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.timesince import timesince

from rollouts import access, services
from rollouts.models import DeviceStatus, EventType, FailureReason, Rollout, RolloutStatus, SkipReason

from . import selectors
from .actions import ACTIONS, allowed_actions

# Internal bookkeeping of the engine: shown only in the collapsed section.
INTERNAL_FIELDS = [
    "id",
    "judged_since",
    "batch_finished_at",
    "fanned_out_at",
    "step",
    "supersede_later",
    "superseded_by_id",
    "batch_delay_minutes",
    "health_check_enabled",
    "health_check_timeout_seconds",
    "auto_rollback_enabled",
    "min_failure_samples",
    "maintenance_window",
    "device_tags",
    "device_uuids",
]


class RolloutPagesMixin:
    """List columns that fit 1280 px, and the rollout page with its actions."""

    list_display = [
        "release",
        "status_badge",
        "batch",
        "progress",
        "failure_rate_display",
        "last_event",
        "created",
    ]
    list_display_links = ["release"]
    list_per_page = 50

    def get_queryset(self, request):
        # RolloutAdmin's queryset is already scoped to the user's fleets.
        return selectors.rollouts_for_console(super().get_queryset(request))

    def changelist_view(self, request, extra_context=None):
        return super().changelist_view(request, {"title": "Rollouts", **(extra_context or {})})

    def get_urls(self):
        info = self.opts.app_label, self.opts.model_name
        return [
            path(
                "<uuid:object_id>/act/<str:name>/",
                self.admin_site.admin_view(self.action_view),
                name="%s_%s_act" % info,
            ),
            *super().get_urls(),
        ]

    # --- list columns ---------------------------------------------------------

    @display(description="release", ordering="image")
    def release(self, rollout):
        return format_html(
            '<span class="c-release" title="{}:{}">{}<b>:{}</b></span>',
            rollout.image,
            rollout.new_tag,
            short_image(rollout.image),
            rollout.new_tag,
        )

    @display(description="status", ordering="status")
    def status_badge(self, rollout):
        return format_html('<span class="c-pill c-{}">{}</span>', rollout.status, status_label(rollout.status))

    @display(description="batch")
    def batch(self, rollout):
        return f"{rollout.current_batch}/{rollout.total_batches}"

    @display(description="progress")
    def progress(self, rollout):
        bar = selectors.rollout_progress(rollout)
        return render_to_string("console/_bar.html", {"bar": bar, "small": True})

    @display(description="failures")
    def failure_rate_display(self, rollout):
        rate = selectors.rollout_failure_rate(rollout)
        over = rate > rollout.max_failure_rate
        return format_html(
            '<span class="{}">{}</span> <span class="c-muted">/ {}</span>',
            "c-bad" if over else "",
            f"{rate:.0%}",
            f"{rollout.max_failure_rate:.0%}",
        )

    @display(description="last event", ordering="last_event_at")
    def last_event(self, rollout):
        return time_ago(rollout.last_event_at)

    @display(description="created", ordering="created_at")
    def created(self, rollout):
        return format_html(
            '<time class="c-nowrap" datetime="{}">{}</time>',
            rollout.created_at.isoformat(),
            rollout.created_at.strftime("%b %d, %H:%M"),
        )

    # --- the rollout page -----------------------------------------------------

    def change_view(self, request, object_id, form_url="", extra_context=None):
        if not self.has_view_permission(request):
            raise PermissionDenied
        rollout = self._rollout_or_404(request, object_id)
        context = self._page_context(request, rollout)
        template = "console/_rollout_live.html" if request.GET.get("partial") else "console/rollout.html"
        return render(request, template, context)

    def _rollout_or_404(self, request, object_id) -> Rollout:
        """The rollout if the user may see it; 404 alike for a missing one and
        one outside the user's fleets, so ids do not leak."""
        rollouts = self.get_queryset(request)
        rollout = rollouts.filter(pk=object_id).first() if _is_uuid(object_id) else None
        if rollout is None:
            raise Http404("No such rollout.")
        return rollout

    def _page_context(self, request, rollout: Rollout) -> dict:
        filters = selectors.DeviceFilters.from_query(request.GET, rollout.total_batches)
        rate = selectors.rollout_failure_rate(rollout)
        events = selectors.timeline(rollout, request.user)
        return {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"{short_image(rollout.image)}:{rollout.new_tag}",
            "rollout": rollout,
            "status_label": status_label(rollout.status),
            "auto_rolled_back": auto_rolled_back(rollout),
            "actions": allowed_actions(rollout, request.user),
            "progress": selectors.rollout_progress(rollout),
            "batches": selectors.batch_progress(rollout),
            "failure_rate": rate,
            "failure_rate_over": rate > rollout.max_failure_rate,
            "failure_rate_percent": min(100, round(rate * 100, 1)),
            "threshold_percent": round(rollout.max_failure_rate * 100, 1),
            "filters": filters,
            "devices": selectors.device_page(rollout, filters, request.GET.get("page"), request.user),
            "filter_query": _filter_query(filters),
            "status_choices": DeviceStatus.choices,
            "reason_choices": FailureReason.choices,
            "skip_choices": SkipReason.choices,
            "batch_choices": range(1, rollout.total_batches + 1),
            "events": events,
            "event_types": EventType.values,
            # Resume after the newest event the page shows: an event that
            # commits between this render and the stream's start is not lost.
            "stream_url": reverse("rollout-stream", args=[rollout.pk])
            + f"?last_event_id={max((event.id for event in events), default=0)}",
            "internal": [(name, getattr(rollout, name)) for name in INTERNAL_FIELDS],
            "now": timezone.now(),
        }

    # --- actions --------------------------------------------------------------

    def action_view(self, request, object_id, name):
        """GET: the confirmation page of a destructive action; POST: run it."""
        return _action_view(self, request, object_id, name)


def _action_view(model_admin, request, object_id, name):
    action = ACTIONS.get(name)
    if action is None:
        raise Http404("No such action.")
    if not model_admin.has_view_permission(request):
        raise PermissionDenied
    rollout = model_admin._rollout_or_404(request, object_id)
    if not access.may_steer(request.user, rollout):
        raise PermissionDenied
    page = reverse("admin:rollouts_rollout_change", args=[rollout.pk])
    if request.method == "GET":
        context = {
            **model_admin.admin_site.each_context(request),
            "opts": model_admin.opts,
            "title": f"{action.label} this rollout?",
            "rollout": rollout,
            "action": action,
            "allowed": rollout.status in action.statuses,
            "status_label": status_label(rollout.status),
            "page_url": page,
        }
        return render(request, "console/confirm_action.html", context)
    if request.method != "POST":
        return HttpResponseNotAllowed(["GET", "POST"])
    try:
        action.run(rollout_id=rollout.pk, actor=request.user.get_username())
    except services.InvalidTransition as exc:
        messages.warning(request, str(exc))
    else:
        messages.success(request, f"{action.label}: done.")
    return HttpResponseRedirect(page)


def time_ago(moment) -> str:
    if not moment:
        return "-"
    elapsed = (timezone.now() - moment).total_seconds()
    text = "just now" if elapsed < 60 else f"{timesince(moment, timezone.now(), depth=1)} ago"
    return format_html(
        '<time class="c-nowrap" datetime="{}" title="{}">{}</time>',
        moment.isoformat(),
        moment.strftime("%Y-%m-%d %H:%M:%S UTC"),
        text,
    )


def _is_uuid(value) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


def _filter_query(filters: selectors.DeviceFilters) -> str:
    """The device filters as a query string, kept by the pager's links."""
    pairs = {
        "status": filters.status,
        "batch": filters.batch or "",
        "reason": filters.reason,
        "skip": filters.skip,
    }
    return urlencode({key: value for key, value in pairs.items() if value})


def short_image(image: str) -> str:
    """Docker Hub images without their registry host: what operators type."""
    return image.removeprefix("docker.io/").removeprefix("library/")


STATUS_LABELS = {
    RolloutStatus.IN_PROGRESS: "in progress",
    RolloutStatus.ROLLED_BACK: "rolled back",
}


def status_label(status: str) -> str:
    return STATUS_LABELS.get(status, status.replace("_", " "))


def auto_rolled_back(rollout: Rollout) -> int:
    """Devices the engine sent back by itself (a threshold breach): rolled-back
    rows of a rollout that no operator rolled back as a whole."""
    if rollout.status == RolloutStatus.ROLLED_BACK:
        return 0
    return rollout.count_rolled_back
