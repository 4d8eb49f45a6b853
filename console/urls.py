"""Console pages that belong to no single model: the image inventory."""

from django.contrib import admin
from django.urls import path

from . import fleet_pages

urlpatterns = [
    path("", admin.site.admin_view(fleet_pages.images_view), name="console_images"),
    path("<path:image>/", admin.site.admin_view(fleet_pages.image_view), name="console_image"),
]
