"""The URL router every app uses. Its own module: `rest_framework.routers`
imports `rest_framework.views`, which loads `fleet.api` (the parser setting),
so `fleet.api` must not import it."""

from rest_framework.routers import SimpleRouter


class OptionalSlashRouter(SimpleRouter):
    """The contract spells actions without a trailing slash
    (`/rollouts/{id}/pause`, `/fleets/{slug}/rotate-key`) and lists with one
    (`/rollouts/{id}/devices/`): accept both spellings everywhere instead of
    redirecting POSTs."""

    def __init__(self):
        super().__init__()
        self.trailing_slash = "/?"
