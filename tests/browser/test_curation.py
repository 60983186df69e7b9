"""Teaching the model in chromium: upload a field with its labels, see them against the prediction,
annotate a cell in the viewer and cells in the gallery, split a cell along a drawn line, and train a
model from the annotations, at desktop (1440 x 900) and phone (390 x 844) widths, with screenshots
under var/screenshots/ (`_shot`, as the other browser tests save theirs)."""

import re

import numpy as np
import pytest
from PIL import Image

from cells.models import CellAnnotation, Field, MaskEdit, TrainingJob
from ml.constants import CHANNELS
from ml.synth import synthesize_field
from tests.browser.test_browser import FIELD_SIZE_PX, PASSWORD, _csp_violations, _shot, _watch_csp

# The chromium fixture `browser` comes from tests/browser/conftest.py.

pytestmark = [pytest.mark.browser, pytest.mark.worker, pytest.mark.django_db(transaction=True)]

WIDE = {"width": 1440, "height": 900}
PHONE = {"width": 390, "height": 844}


@pytest.fixture
def labelled_field(tmp_path):
    """A synthetic field as four PNGs, and its image labels."""
    field = synthesize_field(np.random.default_rng(11), FIELD_SIZE_PX)
    paths = []
    for channel, plane in zip(CHANNELS, field.image, strict=True):
        path = tmp_path / f"plate2-B4_{channel}.png"
        Image.fromarray((np.clip(plane, 0, 1) * 255).astype(np.uint8)).save(path)
        paths.append(path)
    return paths, field.image_labels


def _wait(predicate, page, *, timeout_s: float = 120) -> None:
    for _ in range(int(timeout_s * 4)):
        if predicate():
            return
        page.wait_for_timeout(250)
    pytest.fail("the page did not get there in time")


def _largest_cell_line(field: Field) -> tuple[int, tuple[float, float], tuple[float, float]]:
    """(label, start, end) of a vertical line, in field (row, col), right across the largest cell."""
    with field.cell_labels.open("rb") as handle:
        labels = np.asarray(Image.open(handle))
    cell = field.cells.order_by("-area_px").first()
    col = (cell.min_col + cell.max_col) // 2
    rows = np.flatnonzero(labels[:, col] == cell.label)
    return cell.label, (rows.min() - 6, col), (rows.max() + 6, col)


def _page_xy(page, row: float, col: float) -> tuple[float, float]:
    box = page.locator("[data-layers]").bounding_box()
    return box["x"] + (col + 0.5) * box["width"] / FIELD_SIZE_PX, box["y"] + (row + 0.5) * box["height"] / FIELD_SIZE_PX


def _pin(page, field: Field, label: int) -> None:
    page.evaluate(f"window.hpawebViewer.select({label})")
    page.locator("[data-curation]:not([hidden])").wait_for()


def _sign_in(page, url: str) -> None:
    page.goto(f"{url}/accounts/login/")
    page.get_by_label("Username").fill("biologist")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{url}/")


def test_upload_with_labels_annotate_fix_a_mask_and_train_at_desktop_and_phone_width(
    browser, live_server, django_user_model, labelled_field, worker_process
):
    paths, image_labels = labelled_field
    django_user_model.objects.create_user(username="biologist", password=PASSWORD)
    context = browser.new_context(viewport=WIDE)
    csp_messages = _watch_csp(context)
    page = context.new_page()
    page.set_default_timeout(60_000)
    _sign_in(page, live_server.url)

    # Upload with the labels typed on the form.
    page.goto(f"{live_server.url}/jobs/new/")
    page.get_by_label("Job name").fill("Plate 2")
    page.locator('input[name="files"]').set_input_files([str(path) for path in paths])
    page.get_by_text("Known labels of the fields (optional)").click()
    page.get_by_label("Known labels (optional)").fill(f"plate2-B4,{'|'.join(map(str, image_labels))}")
    _shot(page, "curation-upload-labels-wide")
    page.get_by_role("button", name="Upload and analyse").click()
    page.wait_for_url(re.compile(r".*/jobs/\d+/$"))
    field = Field.objects.get(name="plate2-B4")
    assert field.image_labels == sorted(image_labels)
    _wait(lambda: Field.objects.get(pk=field.pk).status == "done", page)
    # The page reloads itself once the job is finished (a reload of our own would race with it).
    page.locator("[data-field-summary-row='plate2-B4']", has_text="#").wait_for(timeout=30_000)
    summary = page.locator("[data-field-summary-row='plate2-B4']")
    assert "#" in summary.inner_text()  # each label with its rank in the prediction
    _shot(page, "curation-job-summary-wide")

    # The viewer: pin a cell, give it a class with the keyboard.
    field.refresh_from_db()
    page.goto(f"{live_server.url}/fields/{field.pk}/")
    page.locator('[data-viewer][data-ready="true"]').wait_for()
    page.locator('[data-curation][data-ready="true"]').wait_for(state="attached")
    # A second tab on the same field, loaded before the first tab annotates.
    other_tab = context.new_page()
    other_tab.set_default_timeout(60_000)
    other_tab.goto(f"{live_server.url}/fields/{field.pk}/")
    other_tab.locator('[data-curation][data-ready="true"]').wait_for(state="attached")
    first = field.cells.order_by("label").first()
    _pin(page, field, first.label)
    page.keyboard.press("Digit3")  # class 2, Nucleoli
    assert page.locator("[data-curation-class='2']").get_attribute("aria-pressed") == "true"
    page.keyboard.press("Enter")
    page.locator("[data-curation-status]", has_text="Saved").wait_for()
    assert list(CellAnnotation.objects.values_list("cell_label", "classes")) == [(first.label, [2])]
    _shot(page, "curation-viewer-annotated-wide")
    # The stale tab's call on the same cell is refused with a sentence, and nothing changes.
    other_tab.locator('[data-viewer][data-ready="true"]').wait_for()
    _pin(other_tab, field, first.label)
    other_tab.keyboard.press("Digit5")
    other_tab.keyboard.press("Enter")
    other_tab.locator("[data-curation-status]", has_text="was annotated elsewhere since you loaded it").wait_for()
    assert list(CellAnnotation.objects.values_list("cell_label", "classes")) == [(first.label, [2])]
    _shot(other_tab, "curation-viewer-conflict-wide")
    other_tab.close()

    # A mask fix: split the largest cell along a line drawn across it.
    label, start, end = _largest_cell_line(field)
    cells_before = field.cells.count()
    _pin(page, field, label)
    page.get_by_role("button", name="Split along a line…").click()
    page.locator("[data-stage]").scroll_into_view_if_needed()
    page.mouse.move(*_page_xy(page, *start))
    page.mouse.down()
    page.mouse.move(*_page_xy(page, *end), steps=12)
    with page.expect_navigation(timeout=120_000):  # the page reloads once the fix is stored
        page.mouse.up()
    page.locator('[data-viewer][data-ready="true"]').wait_for()
    assert Field.objects.get(pk=field.pk).cells.count() == cells_before + 1
    assert MaskEdit.objects.get().details["cells"][0] == label
    _shot(page, "curation-viewer-split-wide")

    # The gallery: tick two cells, give them a class at once.
    page.goto(f"{live_server.url}/jobs/{field.job_id}/gallery/?min_confidence=0")
    page.locator('[data-curation-gallery][data-ready="true"]').wait_for()
    boxes = page.locator("[data-select-tile]")
    boxes.nth(0).check()
    boxes.nth(1).check()
    page.keyboard.press("Digit1")
    page.get_by_role("button", name="Save classes").click()
    page.locator("[data-curation-gallery] [data-curation-status]", has_text="Saved for 2 cells").wait_for()
    assert CellAnnotation.objects.filter(classes=[0]).count() == 2
    _shot(page, "curation-gallery-wide")

    # Train a model from the annotated cells, fine-tuning the shipped one.
    page.goto(f"{live_server.url}/training/")
    page.get_by_label("Plate 2").check()
    page.get_by_label("Start from").select_option(index=1)
    page.get_by_label("Epochs").fill("2")
    page.get_by_label("Model name").fill("Plate 2 cells")
    _shot(page, "curation-train-form-wide")
    page.get_by_role("button", name="Start training").click()
    page.wait_for_url(re.compile(r".*/training/\d+/$"))
    _wait(lambda: TrainingJob.objects.get().is_finished, page, timeout_s=300)
    # The page reloads itself once the training is finished, and stops polling (no reload of our own to race it).
    page.locator("#training-progress:not([hx-get])").wait_for(timeout=30_000)
    training_job = TrainingJob.objects.get()
    assert training_job.status == "done", training_job.error
    assert page.get_by_test_id("trained-model").inner_text() == training_job.result_model.label
    _shot(page, "curation-training-done-wide")
    assert (_csp_violations(page), csp_messages) == ([], [])

    # Phone width: the same pages fit the screen, and the viewer's panel annotates.
    phone = browser.new_context(viewport=PHONE, storage_state=context.storage_state(), is_mobile=True, has_touch=True)
    phone_page = phone.new_page()
    phone_page.set_default_timeout(60_000)
    for name, url in (
        ("job-summary", f"/jobs/{field.job_id}/"),
        ("gallery", f"/jobs/{field.job_id}/gallery/?min_confidence=0"),
        ("annotations", f"/jobs/{field.job_id}/annotations/"),
        ("train-form", "/training/"),
        ("training-done", f"/training/{training_job.pk}/"),
    ):
        phone_page.goto(f"{live_server.url}{url}")
        assert phone_page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"), name
        _shot(phone_page, f"curation-{name}-phone", full_page=False)
    phone_page.goto(f"{live_server.url}/fields/{field.pk}/")
    phone_page.locator('[data-viewer][data-ready="true"]').wait_for()
    phone_page.locator('[data-curation][data-ready="true"]').wait_for(state="attached")
    last = Field.objects.get(pk=field.pk).cells.order_by("-label").first()
    phone_page.evaluate(f"window.hpawebViewer.select({last.label})")
    phone_page.locator("[data-curation]:not([hidden])").wait_for()
    phone_page.get_by_role("button", name="Not a cell").click()
    phone_page.locator("[data-curation-status]", has_text="Saved").wait_for()
    assert CellAnnotation.objects.filter(kind="not_a_cell", cell_label=last.label).count() == 1
    _shot(phone_page, "curation-viewer-phone", full_page=False)
    phone.close()
    context.close()
