import os
import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Create the first administrator account if the instance has no user yet, and say how to sign in."

    def handle(self, *args, **options):
        User = get_user_model()
        if User.objects.exists():
            return
        username = os.environ.get("HPAWEB_ADMIN_USER", "admin")
        password = os.environ.get("HPAWEB_ADMIN_PASSWORD") or secrets.token_urlsafe(12)
        User.objects.create_superuser(username=username, email="", password=password)
        password_file = Path(settings.VAR_DIR) / "admin-password.txt"
        password_file.parent.mkdir(parents=True, exist_ok=True)
        password_file.write_text(f"{username} {password}\n")
        password_file.chmod(0o600)
        self.stdout.write(
            self.style.SUCCESS(
                f"Created administrator '{username}' with password '{password}' (saved in {password_file})."
            )
        )
