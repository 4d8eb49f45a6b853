"""factory-boy factories. Devices and fleets get known keys so tests can
authenticate as them: `device.api_key` / `fleet.provisioning_key`."""

from pathlib import Path

import factory
from django.contrib.auth.models import Permission, User
from rest_framework.authtoken.models import Token

from devices.keys import hash_key, new_key
from devices.models import Device, DeviceService, DeviceTag, Fleet


# Registry payloads as the registries send them (copied from ../shared/fixtures).
WEBHOOK_FIXTURES = Path(__file__).resolve().parent / "fixtures" / "webhooks"


class FleetFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Fleet

    slug = factory.Sequence(lambda n: f"fleet-{n}")
    name = factory.LazyAttribute(lambda o: o.slug.replace("-", " ").title())
    provisioning_key = factory.LazyFunction(new_key)
    provisioning_key_hash = factory.LazyAttribute(lambda o: hash_key(o.provisioning_key))

    @classmethod
    def _create(cls, model_class, *args, provisioning_key, **kwargs):
        fleet = super()._create(model_class, *args, **kwargs)
        fleet.provisioning_key = provisioning_key
        return fleet


class DeviceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Device
        skip_postgeneration_save = True

    name = factory.Sequence(lambda n: f"device-{n}")
    fleet = factory.SubFactory(FleetFactory)
    api_key = factory.LazyFunction(new_key)
    api_key_hash = factory.LazyAttribute(lambda o: hash_key(o.api_key))

    @classmethod
    def _create(cls, model_class, *args, api_key, **kwargs):
        device = super()._create(model_class, *args, **kwargs)
        device.api_key = api_key
        return device

    @factory.post_generation
    def tags(device, create, extracted, **kwargs):
        for tag in extracted or ():
            DeviceTag.objects.create(device=device, name=tag)


class DeviceServiceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = DeviceService

    device = factory.SubFactory(DeviceFactory)
    name = "web"
    target_image = "docker.io/iotistic/myapp"
    target_tag = "v1.0.0"
    target_digest = None


def operator(*perms: str, username: str = "operator") -> tuple[User, str]:
    """A user with the given `app_label.codename` permissions and an API token."""
    user = User.objects.create_user(username=username, password="unused-password")
    for perm in perms:
        app_label, codename = perm.split(".")
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=codename)
        )
    token = Token.objects.create(user=user)
    return user, token.key
