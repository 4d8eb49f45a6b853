"""The production URLs plus a bare view, the baseline of the HTTP benchmarks.

The bare view runs behind the same middleware, in the same gunicorn, as the
real endpoints, but touches neither the database nor the cache: what the
real poll costs beyond it is the cost of our own code.
"""

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

from fleet.urls import handler400, handler403, handler404, handler500  # noqa: F401
from fleet.urls import urlpatterns as fleet_urlpatterns

BASELINE_ETAG = '"1.60"'


@csrf_exempt
def bare_state(request: HttpRequest, uuid: str) -> HttpResponse:
    """GET: 304, whatever the request says. PATCH and POST: a fixed small 200."""
    if request.method == "GET":
        response = HttpResponse(status=304)
        response["ETag"] = BASELINE_ETAG
        response["Cache-Control"] = "no-cache"
        return response
    # The body is read, as the real report reads it.
    return JsonResponse({"accepted": True, "target_version": 1, "bytes": len(request.body)})


urlpatterns = [
    path("bench/baseline/<str:uuid>/state", bare_state, name="bench-baseline"),
    *fleet_urlpatterns,
]
