"""The request size limit (`HPAWEB_MAX_UPLOAD_BYTES`), held before a body is spooled to disk, and
the sentences for requests that cannot be taken: too large, unreadable, or a full disk.

`UploadLimitMiddleware` sits before the CSRF middleware: it refuses a declared length over the
limit without reading the body, and otherwise parses a multipart body itself with
`UploadLimitHandler` counting the bytes as they stream in, so the limit holds for every view (DRF
reuses what was parsed). Views read `request.upload_error` for a body that could not be parsed.
"""

import errno

from django.conf import settings
from django.core.files.uploadhandler import FileUploadHandler
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.http.multipartparser import MultiPartParserError
from django.shortcuts import render

DISK_FULL = (
    "The server's disk is full, so the upload could not be stored; nothing was kept. "
    "Try again later, or tell the administrator."
)
UNREADABLE = (
    "The upload could not be read: the request's body is not valid multipart form data. "
    "Choose the files again and send the form from this page."
)


class UploadTooLarge(Exception):
    """The request's body is over HPAWEB_MAX_UPLOAD_BYTES."""


def too_large_message(limit_bytes: int) -> str:
    return (
        f"The upload is larger than the {_size_text(limit_bytes)} one request may hold; "
        "send the fields in several smaller uploads."
    )


def is_disk_full(error: OSError) -> bool:
    return error.errno in (errno.ENOSPC, errno.EDQUOT)


class UploadLimitHandler(FileUploadHandler):
    """Counts the bytes of every file of a request as they arrive and stops at the limit."""

    def __init__(self, request: HttpRequest, *, limit_bytes: int) -> None:
        super().__init__(request)
        self.limit_bytes = limit_bytes
        self.received_bytes = 0

    def handle_raw_input(self, input_data, META, content_length, boundary, encoding=None):
        if content_length > self.limit_bytes:
            raise UploadTooLarge()

    def receive_data_chunk(self, raw_data, start):
        self.received_bytes += len(raw_data)
        if self.received_bytes > self.limit_bytes:
            raise UploadTooLarge()
        return raw_data

    def file_complete(self, file_size):
        return None


class UploadLimitMiddleware:
    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.method in ("POST", "PUT", "PATCH"):
            refused = self._check_body(request)
            if refused is not None:
                return refused
        return self.get_response(request)

    def _check_body(self, request: HttpRequest) -> HttpResponse | None:
        limit_bytes = settings.HPAWEB_MAX_UPLOAD_BYTES
        try:
            declared_bytes = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            declared_bytes = 0
        if declared_bytes > limit_bytes:
            return _refusal(request, too_large_message(limit_bytes), status=413)
        if request.content_type != "multipart/form-data":
            return None
        request.upload_handlers.insert(0, UploadLimitHandler(request, limit_bytes=limit_bytes))
        try:
            request.POST  # noqa: B018 - parsed here, under the limit, before any other middleware or view reads it
        except UploadTooLarge:
            return _refusal(request, too_large_message(limit_bytes), status=413)
        except MultiPartParserError:
            # Django leaves the form empty; the view says why instead of showing a blank form.
            if _is_api(request):
                return _refusal(request, UNREADABLE, status=400)
            request.upload_error = UNREADABLE
        except OSError as error:
            if not is_disk_full(error):
                raise
            return _refusal(request, DISK_FULL, status=507)
        else:
            if declared_bytes and not request.POST and not request.FILES and not _is_api(request):
                # A body that parses to nothing at all (no field, not even the CSRF token): unreadable.
                request.upload_error = UNREADABLE
        return None


def _is_api(request: HttpRequest) -> bool:
    return request.path.startswith("/api/")


def _refusal(request: HttpRequest, sentence: str, *, status: int) -> HttpResponse:
    if _is_api(request):
        return JsonResponse({"detail": sentence}, status=status)
    if request.headers.get("HX-Request") == "true":
        return render(request, "cells/_upload_errors.html", {"upload_errors": {"upload": sentence}}, status=status)
    return HttpResponse(sentence, status=status, content_type="text/plain; charset=utf-8")


def _size_text(size_bytes: int) -> str:
    if size_bytes >= 1024**3:
        return f"{size_bytes / 1024**3:.1f} GiB"
    return f"{size_bytes / 1024**2:.0f} MiB"
