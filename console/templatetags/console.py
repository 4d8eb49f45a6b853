"""Small display helpers of the console templates."""

from django import template

from ..fleet_pages import active_rollouts_for

register = template.Library()

# Tone of an event in the timeline, by the last word(s) of its type.
EVENT_TONES = [
    ("failed", "bad"),
    ("rolled_back", "warn"),
    ("paused", "warn"),
    ("cancelled", "warn"),
    ("rejected", "warn"),
    ("superseded", "muted"),
    ("deferred", "muted"),
    ("skipped", "muted"),
    ("passed", "good"),
    ("completed", "good"),
    ("approved", "good"),
]


@register.filter
def event_tone(event_type: str) -> str:
    for suffix, tone in EVENT_TONES:
        if event_type.endswith(suffix):
            return tone
    return "info"


@register.filter
def event_name(event_type: str) -> str:
    """`image.device_scheduled` -> `device scheduled`."""
    return event_type.removeprefix("image.").replace("_", " ")


@register.filter
def words(value: str) -> str:
    """`rolled_back` -> `rolled back`."""
    return str(value).replace("_", " ")


@register.filter
def short_digest(digest: str | None) -> str:
    """`sha256:9f86d081884c...` -> `sha256:9f86d0818` (enough to tell images apart)."""
    if not digest:
        return ""
    algorithm, _, value = digest.partition(":")
    return f"{algorithm}:{value[:12]}" if value else digest[:19]


@register.filter
def pretty(value) -> str:
    if value is None or value == "" or value == []:
        return "-"
    return str(value)


@register.simple_tag(takes_context=True)
def active_rollouts(context):
    """For the admin index: see fleet_pages.active_rollouts_for."""
    return active_rollouts_for(context["request"].user)
