"""The Celery application; configuration comes from Django settings (CELERY_* names)."""

import os

from celery import Celery, Task

from hpaweb.broker import use_atomic_filesystem_transport

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hpaweb.settings.local")


class WorkerLimitsTask(Task):
    """Sends no time limits with a message, so the worker's own CELERY_TASK_*TIME_LIMIT apply.

    Celery otherwise stamps the sender's (the web process's) limits into every message.
    """

    def apply_async(self, args=None, kwargs=None, **options):
        options.setdefault("time_limit", None)
        options.setdefault("soft_time_limit", None)
        return super().apply_async(args, kwargs, **options)


use_atomic_filesystem_transport()
app = Celery("hpaweb", task_cls=WorkerLimitsTask)
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
