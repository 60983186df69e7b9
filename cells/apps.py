from django.apps import AppConfig


class CellsConfig(AppConfig):
    name = "cells"
    verbose_name = "Cells"

    def ready(self) -> None:
        from cells import auth  # noqa: F401  (connects the token revocation on password change)
