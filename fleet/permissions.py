"""Default DRF permission class. Its own module: DRF imports permission classes
while `rest_framework.views` is still loading, so this must not import it."""

from rest_framework import permissions


class ModelPermissions(permissions.DjangoModelPermissions):
    """DjangoModelPermissions, but reading also needs the `view_*` permission."""

    perms_map = {
        **permissions.DjangoModelPermissions.perms_map,
        "GET": ["%(app_label)s.view_%(model_name)s"],
        "HEAD": ["%(app_label)s.view_%(model_name)s"],
        "OPTIONS": ["%(app_label)s.view_%(model_name)s"],
    }
