"""Settings read the environment; each default comes from the one place that defines it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hpaweb.settings.base import env_bool, env_int
from ml.constants import DEFAULT_MODEL_PATH, DEFAULT_SEGMENTATION_BACKEND, MAX_SIDE_PX

REPO_ROOT = Path(__file__).resolve().parents[2]
SHOWN = ("ML_MODEL_PATH", "ML_SEGMENTATION_BACKEND", "HPAWEB_MAX_SIDE_PX", "DEBUG")


def settings_of(module: str, **environment: str) -> dict:
    """The settings a fresh process reads from `module` with only these variables set."""
    keep = {key: value for key, value in os.environ.items() if not key.startswith(("ML_", "HPAWEB_", "DJANGO_"))}
    code = f"import json, {module} as s; print(json.dumps({{k: getattr(s, k) for k in {SHOWN!r}}}))"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env={**keep, **environment}, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_defaults_come_from_ml_constants(tmp_path):
    settings = settings_of("hpaweb.settings.local", HPAWEB_VAR_DIR=str(tmp_path))
    assert settings["ML_MODEL_PATH"] == str(DEFAULT_MODEL_PATH)
    assert settings["ML_SEGMENTATION_BACKEND"] == DEFAULT_SEGMENTATION_BACKEND
    assert settings["HPAWEB_MAX_SIDE_PX"] == MAX_SIDE_PX
    assert settings["DEBUG"] is True


def test_the_environment_overrides_the_defaults(tmp_path):
    settings = settings_of(
        "hpaweb.settings.local",
        HPAWEB_VAR_DIR=str(tmp_path),
        ML_MODEL_PATH="/models/other.pt",
        ML_SEGMENTATION_BACKEND="unet",
        HPAWEB_MAX_SIDE_PX="2048",
        DJANGO_DEBUG="0",
    )
    assert settings == {
        "ML_MODEL_PATH": "/models/other.pt",
        "ML_SEGMENTATION_BACKEND": "unet",
        "HPAWEB_MAX_SIDE_PX": 2048,
        "DEBUG": False,
    }


@pytest.mark.parametrize(
    ("value", "expected"), [("1", True), ("yes", True), (" On ", True), ("0", False), ("no", False)]
)
def test_env_bool_reads_the_usual_spellings(monkeypatch, value, expected):
    monkeypatch.setenv("HPAWEB_FLAG", value)
    assert env_bool("HPAWEB_FLAG", not expected) is expected


def test_env_int_falls_back_to_the_default(monkeypatch):
    monkeypatch.delenv("HPAWEB_NUMBER", raising=False)
    assert env_int("HPAWEB_NUMBER", 7) == 7
    monkeypatch.setenv("HPAWEB_NUMBER", "12")
    assert env_int("HPAWEB_NUMBER", 7) == 12


def _production(**environment: str) -> subprocess.CompletedProcess:
    keep = {key: value for key, value in os.environ.items() if not key.startswith(("ML_", "HPAWEB_", "DJANGO_"))}
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=REPO_ROOT,
        env={**keep, "DJANGO_SETTINGS_MODULE": "hpaweb.settings.production", **environment},
        capture_output=True,
        text=True,
    )


@pytest.mark.parametrize("secret_key", [None, "", "   "])
def test_production_refuses_to_start_without_a_secret_key(tmp_path, secret_key):
    environment = {"HPAWEB_VAR_DIR": str(tmp_path)}
    if secret_key is not None:
        environment["DJANGO_SECRET_KEY"] = secret_key
    done = _production(**environment)
    assert done.returncode != 0
    assert "DJANGO_SECRET_KEY is missing or empty; set it to a long random string" in done.stderr
    assert "KeyError" not in done.stderr


def test_check_deploy_is_clean_behind_a_tls_proxy(tmp_path):
    done = _production(
        HPAWEB_VAR_DIR=str(tmp_path),
        DJANGO_SECRET_KEY="k8Jq2-vX9pLr_7TnWz4YbH1sQeM6cUaD0fGiKoN3jRtV5yPxE8wBlZhCmA",
        DJANGO_ALLOWED_HOSTS="hpaweb.example.org",
        DJANGO_BEHIND_TLS_PROXY="1",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "System check identified no issues (0 silenced)." in done.stdout


def test_json_log_format_writes_one_object_a_line(tmp_path):
    code = "import django, logging; django.setup(); logging.getLogger('cells').warning('queued %s', 'f1')"
    keep = {key: value for key, value in os.environ.items() if not key.startswith(("ML_", "HPAWEB_", "DJANGO_"))}
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env={
            **keep,
            "DJANGO_SETTINGS_MODULE": "hpaweb.settings.local",
            "HPAWEB_VAR_DIR": str(tmp_path),
            "DJANGO_LOG_FORMAT": "json",
        },
        capture_output=True,
        text=True,
    )
    records = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    (record,) = [record for record in records if record["logger"] == "cells"]
    assert (record["level"], record["message"]) == ("WARNING", "queued f1")
    assert set(record) >= {"time", "process"}


def test_a_soft_time_limit_above_the_hard_one_is_refused_at_start_with_a_sentence(tmp_path):
    keep = {
        key: value for key, value in os.environ.items() if not key.startswith(("ML_", "HPAWEB_", "DJANGO_", "CELERY_"))
    }
    environment = {
        **keep,
        "HPAWEB_VAR_DIR": str(tmp_path),
        "CELERY_TASK_SOFT_TIME_LIMIT": "600",
        "CELERY_TASK_TIME_LIMIT": "15",
    }
    done = subprocess.run(
        [sys.executable, "-c", "import hpaweb.settings.local"],
        cwd=REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0
    assert (
        "CELERY_TASK_SOFT_TIME_LIMIT (600 s) is above CELERY_TASK_TIME_LIMIT (15 s); set the soft limit below the hard one"
        in done.stderr
    )
