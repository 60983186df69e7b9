"""schemathesis against the OpenAPI schema at /api/schema/, signed in with a token, on a live
server on loopback: no generated request may get a 500. Bounded in examples and time."""

import os
import subprocess
import sys

import pytest

from cells import intake

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

MAX_EXAMPLES = 15
TIME_LIMIT_S = 540


def test_no_generated_api_request_gets_a_server_error(live_server, owner, stored_field, sent_to_worker, tmp_path):
    stored_field()  # one job and field to find, filter and export
    _, key = intake.api_token_regenerate(user=owner)
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        f"{live_server.url}/api/schema/",
        "--checks",
        "not_a_server_error",
        "--header",
        f"Authorization: Token {key}",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        "12",
        "--request-timeout",
        "30",
        "--workers",
        "1",
        "--report-dir",
        str(tmp_path),
    ]
    # In the test's own folder: schemathesis keeps its example cache (.schemathesis/) where it runs.
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=TIME_LIMIT_S,
        env={**os.environ, "NO_COLOR": "1"},
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout[-8000:] + done.stderr[-2000:]
