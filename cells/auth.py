"""API tokens end with the password, as Django's sessions do: a user saved after `set_password`
(the password page, the admin, `manage.py changepassword`) loses every API token."""

from django.conf import settings
from django.db.models.signals import pre_save
from django.dispatch import receiver
from knox.models import AuthToken


@receiver(pre_save, sender=settings.AUTH_USER_MODEL, dispatch_uid="cells.auth.revoke_api_tokens")
def revoke_api_tokens_on_password_change(sender, instance, **kwargs) -> None:
    # set_password leaves the new raw password in `_password` until the save; a hash upgrade on
    # sign-in clears it first, so only a real change revokes.
    if instance.pk is not None and getattr(instance, "_password", None) is not None:
        AuthToken.objects.filter(user_id=instance.pk).delete()
