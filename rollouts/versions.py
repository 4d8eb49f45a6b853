"""Reading tags as versions, and a policy's version rules (CONTRACT section 7).

Pure functions, no database: the fan-out asks them once per *distinct* tag
that the fleet runs (a fleet runs few), then hands the answers to SQL.

A tag is a semantic version after an optional leading `v` (`v2.1.0`, `2.1`,
`2.1.0-rc.1`, `16`). A suffix that begins with a prerelease word makes it a
prerelease (`2.1.0-rc.1`, `2.1.0-beta2-alpine`: the part after the
prerelease identifiers is still its variant); any other suffix is a variant
(`1.25.3-alpine`). `+build` metadata is ignored.

Ranges are npm's (`semantic_version.NpmSpec`): `>=2.9.0 <3.0.0`, `^1.2.0`,
`~1.2.3`, `1.2.x`, `1.0.0 - 2.0.0`, `||`. As in npm, a prerelease only
satisfies a range that names a prerelease of the same version; with
`include_prereleases` it satisfies any range that contains it (npm's
`includePrerelease`), and `<3.0.0` still keeps `3.0.0-rc.1` out.
"""

import re
from dataclasses import dataclass, field
from enum import IntEnum

import semantic_version

PRERELEASE_WORDS = ("alpha", "beta", "rc", "preview", "pre", "dev", "snapshot")
MAX_CONSTRAINT_LENGTH = 200

_TAG = re.compile(
    # Leading zeros are let through after the major (`22.04`, as
    # calendar-versioned images spell it): 22.04 < 22.10 as numbers.
    r"^[vV]?(?P<major>0|[1-9]\d{0,8})(?:\.(?P<minor>\d{1,9}))?(?:\.(?P<patch>\d{1,9}))?"
    r"(?P<suffix>[-._]?[A-Za-z][0-9A-Za-z.\-_]*)?(?:\+[0-9A-Za-z.\-]*)?$"
)
_PRERELEASE = re.compile(
    r"^(?P<pre>(?:" + "|".join(PRERELEASE_WORDS) + r")(?:[.\-_]?\d+)*)(?:[-_.](?P<variant>.+))?$",
    re.IGNORECASE,
)


class UpdateKinds:
    ALL = "all"
    MAJOR = "major"
    MINOR = "minor"
    PATCH = "patch"
    CHOICES = (ALL, MAJOR, MINOR, PATCH)


class Risk(IntEnum):
    """Ordered: a rollout's risk is the highest of its devices'."""

    LOW = 1
    MEDIUM = 2
    HIGH = 3

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def from_label(cls, label: str) -> "Risk":
        return cls[label.upper()]


# `auto_approve_max_risk`: a rollout riskier than this waits for approval.
APPROVAL_LEVELS = {"none": 0, "low": Risk.LOW, "medium": Risk.MEDIUM, "high": Risk.HIGH}


@dataclass(frozen=True)
class TagVersion:
    version: semantic_version.Version  # prerelease included, variant not
    variant: str  # "" when none

    @property
    def prerelease(self) -> bool:
        return bool(self.version.prerelease)

    @property
    def release(self) -> tuple[int, int, int]:
        return (self.version.major, self.version.minor, self.version.patch)


def parse_tag(tag: str | None) -> TagVersion | None:
    """The version a tag names, or None when it is not a semantic version."""
    if not tag:
        return None
    match = _TAG.match(tag)
    if not match:
        return None
    major, minor, patch = (int(match[name] or 0) for name in ("major", "minor", "patch"))
    suffix = (match["suffix"] or "").lstrip("-._")
    prerelease: tuple[str, ...] = ()
    variant = suffix
    pre = _PRERELEASE.match(suffix) if suffix else None
    if pre:
        # `rc1` and `rc.1` alike: words and numbers are separate identifiers,
        # so rc.2 < rc.10 as semver orders numeric identifiers.
        prerelease = tuple(re.findall(r"[A-Za-z]+|\d+", pre["pre"].lower()))
        variant = pre["variant"] or ""
    version = semantic_version.Version(major=major, minor=minor, patch=patch, prerelease=prerelease)
    return TagVersion(version=version, variant=variant.lower())


def parse_constraint(text: str) -> semantic_version.NpmSpec:
    """An npm-style range; ValueError with a readable message when malformed."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("Give an npm-style range such as '>=2.9.0 <3.0.0' or '^1.2.0'.")
    if len(text) > MAX_CONSTRAINT_LENGTH:
        raise ValueError(f"At most {MAX_CONSTRAINT_LENGTH} characters.")
    try:
        return semantic_version.NpmSpec(text.strip())
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{text!r} is not an npm-style range ({exc}).") from None


def _with_prereleases(clause):
    """The same range, letting prereleases in (npm's includePrerelease)."""
    if isinstance(clause, semantic_version.base.Range):
        return semantic_version.base.Range(
            clause.operator,
            clause.target,
            prerelease_policy=semantic_version.base.Range.PRERELEASE_NATURAL,
            build_policy=clause.build_policy,
        )
    if isinstance(clause, (semantic_version.base.AllOf, semantic_version.base.AnyOf)):
        return type(clause)(*(_with_prereleases(inner) for inner in clause.clauses))
    return clause


@dataclass(frozen=True)
class VersionRules:
    """A policy's (or rollout's) version rules."""

    constraint: str | None = None
    allowed_updates: str = UpdateKinds.ALL
    include_prereleases: bool = False
    allow_downgrade: bool = False
    required_versions: tuple[str, ...] = ()
    _spec: object = field(default=None, compare=False, repr=False)

    @classmethod
    def of(cls, settings, *, allow_downgrade: bool | None = None) -> "VersionRules":
        """From anything with the policy's fields (a policy or a rollout)."""
        return cls(
            constraint=settings.version_constraint or None,
            allowed_updates=settings.allowed_updates,
            include_prereleases=settings.include_prereleases,
            allow_downgrade=settings.allow_downgrade if allow_downgrade is None else allow_downgrade,
            required_versions=tuple(settings.required_versions or ()),
        )

    def _matcher(self):
        spec = parse_constraint(self.constraint)
        return _with_prereleases(spec.clause) if self.include_prereleases else spec.clause

    def push_reason(self, pushed: TagVersion | None) -> str | None:
        """Why no device may get this tag at all (None: the rules allow it)."""
        if pushed is not None and pushed.prerelease and not self.include_prereleases:
            return "prerelease"
        if self.constraint:
            if pushed is None or not self._matcher().match(pushed.version):
                return "version_constraint"
        return None


@dataclass(frozen=True)
class Decision:
    """What the rules decide for the devices running one tag."""

    skip_reason: str | None
    risk: Risk
    via: tuple[str, ...] = ()


def decide(rules: VersionRules, pushed_tag: str, running_tag: str | None) -> Decision:
    """The decision for a device running `running_tag` when `pushed_tag` is
    pushed. Whether the device is pinned or already current is SQL's to say."""
    pushed = parse_tag(pushed_tag)
    running = parse_tag(running_tag)
    reason = rules.push_reason(pushed)
    if pushed is None or running is None:
        # Nothing to compare: any kind of update may be hiding here.
        if reason is None and rules.allowed_updates not in (UpdateKinds.ALL, UpdateKinds.MAJOR):
            if running_tag != pushed_tag:
                reason = "update_kind"
        return Decision(reason, Risk.HIGH)
    if reason is None and pushed.variant != running.variant:
        reason = "variant"
    downgrade = pushed.version < running.version
    if reason is None and downgrade and not rules.allow_downgrade:
        reason = "downgrade"
    kind = _update_kind(running, pushed)
    if reason is None and not downgrade and not _kind_allowed(kind, rules.allowed_updates):
        reason = "update_kind"
    if downgrade or pushed.prerelease or kind == UpdateKinds.MAJOR:
        risk = Risk.HIGH
    elif kind == UpdateKinds.MINOR:
        risk = Risk.MEDIUM
    else:
        risk = Risk.LOW
    via = () if reason or downgrade else stepping_stones(rules, running, pushed)
    return Decision(reason, risk, via)


def _update_kind(running: TagVersion, pushed: TagVersion) -> str:
    if pushed.version.major != running.version.major:
        return UpdateKinds.MAJOR
    if pushed.version.minor != running.version.minor:
        return UpdateKinds.MINOR
    # A patch, a rebuild of the same version, or a prerelease to its release.
    return UpdateKinds.PATCH


def _kind_allowed(kind: str, allowed: str) -> bool:
    if allowed in (UpdateKinds.ALL, UpdateKinds.MAJOR):
        return True
    if allowed == UpdateKinds.MINOR:
        return kind in (UpdateKinds.MINOR, UpdateKinds.PATCH)
    return kind == UpdateKinds.PATCH


def stepping_stones(rules: VersionRules, running: TagVersion, pushed: TagVersion) -> tuple[str, ...]:
    """The required versions between what the device runs and the push, in
    order: each is a version the device must be healthy on before the next."""
    stones = []
    for tag in rules.required_versions:
        stone = parse_tag(tag)
        if stone is None or stone.variant != running.variant:
            continue
        if running.version < stone.version < pushed.version:
            stones.append((stone.version, tag))
    return tuple(tag for _, tag in sorted(stones))


def validate_required_versions(tags, pushed_tag: str | None = None) -> list[str]:
    """ValueError unless every entry is a semantic version (and, when the
    pushed tag is known, below it)."""
    if not isinstance(tags, list) or any(not isinstance(tag, str) for tag in tags):
        raise ValueError("Give a list of tags.")
    if len(tags) > 20:
        raise ValueError("At most 20 required versions.")
    pushed = parse_tag(pushed_tag) if pushed_tag else None
    for tag in tags:
        version = parse_tag(tag)
        if version is None:
            raise ValueError(f"{tag!r} is not a semantic version.")
        if pushed_tag is not None and (pushed is None or not version.version < pushed.version):
            raise ValueError(f"{tag!r} is not below the pushed version {pushed_tag!r}.")
    return tags
