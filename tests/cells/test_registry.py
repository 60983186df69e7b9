"""The model registry: installed models registered once, the default, imports and who may do what."""

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile

from cells import registry
from cells.models import RegisteredModel
from ml.constants import DEFAULT_MODEL_PATH
from tests.ml.bioimageio.support import session_packages

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="session")
def bioimageio_packages(tmp_path_factory):
    """Tiny bioimage.io packages (TorchScript, ONNX, broken ones), built once per session."""
    return session_packages(tmp_path_factory)


@pytest.fixture
def admin(django_user_model):
    return django_user_model.objects.create_user(username="admin", password="admin-password", is_staff=True)


def upload_of(path, name: str | None = None) -> SimpleUploadedFile:
    return SimpleUploadedFile(name or path.name, path.read_bytes())


def test_the_shipped_model_is_registered_once_with_its_card_and_becomes_the_default(settings):
    settings.ML_MODEL_PATH = str(DEFAULT_MODEL_PATH)
    first = registry.models_register_installed()
    again = registry.models_register_installed()
    assert [model.pk for model in first] == [model.pk for model in again]
    shipped = RegisteredModel.objects.get()
    assert (shipped.name, shipped.version, shipped.format, shipped.kind) == (
        "hpaweb-synth-v1",
        "1",
        "hpaweb",
        "classifier",
    )
    assert shipped.sha256 == registry.file_sha256(DEFAULT_MODEL_PATH)
    assert shipped.source_path == str(DEFAULT_MODEL_PATH.resolve())
    assert shipped.input_size_px == 96 and len(shipped.class_names) == 19
    assert shipped.summary
    assert registry.classifier_default() == shipped


def test_a_model_named_by_ml_model_path_is_registered_beside_the_shipped_one_and_is_the_default(
    settings, tiny_classifier_file
):
    settings.ML_MODEL_PATH = str(tiny_classifier_file)
    registered = registry.models_register_installed()
    assert [model.name for model in registered] == ["hpaweb-synth-v1", "tiny-classifier"]
    assert registry.classifier_default().name == "tiny-classifier"


def test_without_ml_model_path_the_installation_has_no_default_classifier(settings):
    settings.ML_MODEL_PATH = ""
    assert registry.classifier_default() is None
    assert RegisteredModel.objects.filter(name="hpaweb-synth-v1").exists()  # still there to choose


def test_an_administrator_imports_a_shared_checkpoint_and_makes_it_the_default(admin, tiny_classifier_file, owner):
    model = registry.model_import(
        owner=admin, upload=upload_of(tiny_classifier_file, "lab-model.pt"), visibility="shared"
    )
    assert (model.owner, model.visibility, model.format, model.input_size_px) == (None, "shared", "hpaweb", 32)
    assert model.file.name.endswith(".pt") and model.sha256 == registry.file_sha256(tiny_classifier_file)
    assert model in registry.classifiers_for(owner)
    registry.model_set_default(model=model, user=admin)
    assert registry.classifier_default() == model
    assert RegisteredModel.objects.filter(is_default=True).count() == 1


def test_only_an_administrator_adds_shared_models_and_sets_the_default(owner, tiny_classifier_file):
    with pytest.raises(PermissionDenied, match="Only an administrator adds shared models"):
        registry.model_import(owner=owner, upload=upload_of(tiny_classifier_file), visibility="shared")
    shipped = registry.models_register_installed()[0]
    with pytest.raises(PermissionDenied, match="Only an administrator sets"):
        registry.model_set_default(model=shipped, user=owner)


def test_private_models_need_the_setting_and_stay_their_owners(settings, owner, outsider, tiny_classifier_file):
    settings.HPAWEB_PRIVATE_MODELS = False
    with pytest.raises(PermissionDenied, match="does not accept private models"):
        registry.model_import(owner=owner, upload=upload_of(tiny_classifier_file))
    settings.HPAWEB_PRIVATE_MODELS = True
    model = registry.model_import(owner=owner, upload=upload_of(tiny_classifier_file))
    assert model.owner == owner and model.visibility == "private"
    assert model in registry.classifiers_for(owner)
    assert model not in registry.classifiers_for(outsider)
    with pytest.raises(ValidationError, match="no classifier with id"):
        registry.classifier_for_job(user=outsider, model_id=model.pk)


def test_a_damaged_file_is_refused_with_the_loaders_sentence_and_nothing_is_stored(admin, tmp_path, media_files):
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    count = RegisteredModel.objects.count()
    with pytest.raises(registry.ModelImportError, match="is not an hpaweb classifier checkpoint or is damaged"):
        registry.model_import(owner=admin, upload=upload_of(broken), visibility="shared")
    assert RegisteredModel.objects.count() == count
    assert media_files() == []


def test_an_unknown_kind_of_file_and_an_oversized_one_are_refused(admin, settings, tiny_classifier_file):
    with pytest.raises(
        registry.ModelImportError,
        match=r"hpaweb checkpoint \(.pt\), a classical classifier \(.skops.*bioimage.io package \(.zip\)",
    ):
        registry.model_import(owner=admin, upload=SimpleUploadedFile("model.h5", b"x"), visibility="shared")
    settings.HPAWEB_MAX_MODEL_BYTES = 100
    with pytest.raises(registry.ModelImportError, match="accepts at most 0 MB"):
        registry.model_import(owner=admin, upload=upload_of(tiny_classifier_file), visibility="shared")


def test_the_same_file_is_not_registered_twice(admin, tiny_classifier_file):
    registry.model_import(owner=admin, upload=upload_of(tiny_classifier_file), visibility="shared")
    with pytest.raises(registry.ModelImportError, match="registered already"):
        registry.model_import(owner=admin, upload=upload_of(tiny_classifier_file), visibility="shared")


def test_deleting_a_model_removes_its_file_but_not_the_default_or_an_installed_one(
    admin, tiny_classifier_file, media_files, django_capture_on_commit_callbacks
):
    model = registry.model_import(owner=admin, upload=upload_of(tiny_classifier_file), visibility="shared")
    assert len(media_files()) == 1
    shipped = registry.models_register_installed()[0]
    with pytest.raises(ValidationError, match="installation provides"):
        registry.model_delete(model=shipped, user=admin)
    registry.model_set_default(model=model, user=admin)
    with pytest.raises(ValidationError, match="default model cannot be deleted"):
        registry.model_delete(model=model, user=admin)
    registry.model_set_default(model=shipped, user=admin)
    with django_capture_on_commit_callbacks(execute=True):
        registry.model_delete(model=model, user=admin)
    assert not RegisteredModel.objects.filter(pk=model.pk).exists()
    assert media_files() == []


def test_an_administrator_imports_a_bioimageio_package_and_a_job_runs_with_it(
    admin, owner, bioimageio_packages, channel_uploads, ml_settings
):
    from cells import intake, processing
    from cells.uploads import FieldUpload

    upload = upload_of(bioimageio_packages.torchscript_zip, "zoo-classifier.zip")
    model = registry.model_import(owner=admin, upload=upload, visibility="shared")
    assert model.format == "bioimage.io" and model.file.name.endswith(".zip")
    assert model.class_names[:2] == ["Nucleoplasm", "Nuclear membrane"]
    job = intake.job_create(
        owner=owner,
        uploads=[FieldUpload(name="f1", channel_files=channel_uploads(size_px=256))],
        classifier_id=model.pk,
    )
    field = job.fields.get()
    processing.field_process(field_id=field.pk)
    field.refresh_from_db()
    assert field.status == "done" and field.classifier == model
    assert all(len(cell.probabilities) == 19 for cell in field.cells.all())


def test_a_pickle_only_package_is_refused_and_nothing_is_stored(admin, bioimageio_packages, media_files):
    with pytest.raises(registry.ModelImportError, match="TorchScript|ONNX"):
        registry.model_import(owner=admin, upload=upload_of(bioimageio_packages.pickle_only), visibility="shared")
    assert not RegisteredModel.objects.filter(format="bioimage.io").exists()
    assert media_files() == []


def import_pair(owner, packages, *, visibility="shared", **options) -> RegisteredModel:
    return registry.segmenter_import(
        owner=owner,
        nuclei_upload=upload_of(packages.nuclei_zip, "nuclei.zip"),
        cell_upload=upload_of(packages.cell_zip, "cell.zip"),
        visibility=visibility,
        **options,
    )


def test_an_administrator_imports_a_segmentation_pair_and_a_job_is_segmented_by_it(
    admin, owner, bioimageio_packages, channel_uploads, ml_settings, media_files
):
    from cells import intake, processing
    from cells.uploads import FieldUpload

    model = import_pair(admin, bioimageio_packages)
    assert (model.kind, model.format, model.owner, model.visibility) == ("segmenter", "bioimage.io", None, "shared")
    assert model.name == "tiny nuclei segmentation + tiny cell segmentation"
    assert model.file.name.endswith("tiny-nuclei-segmentation.zip")
    assert model.cell_file.name.endswith("tiny-cell-segmentation.zip")
    assert (model.sha256, model.cell_sha256) == (
        registry.file_sha256(bioimageio_packages.nuclei_zip),
        registry.file_sha256(bioimageio_packages.cell_zip),
    )
    assert len(media_files()) == 2
    assert (model.segmentation_backend, model.label) in registry.segmentation_choices(owner)
    job = intake.job_create(
        owner=owner,
        uploads=[FieldUpload(name="f1", channel_files=channel_uploads(size_px=512))],
        segmentation_backend=f"model:{model.pk}",
        classify=False,
    )
    assert job.segmentation_backend == f"model:{model.pk}"
    field = job.fields.get()
    processing.field_process(field_id=field.pk)
    field.refresh_from_db()
    assert (field.status, field.error, field.segmentation_backend) == ("done", "", "bioimageio")
    assert field.cells.count() == 4  # one per nucleus the factory draws


def test_a_classifier_given_as_a_segmentation_package_is_refused_naming_it_and_nothing_is_stored(
    admin, bioimageio_packages, media_files
):
    with pytest.raises(registry.ModelImportError, match="The cell package tiny linear classifier is a classifier"):
        registry.segmenter_import(
            owner=admin,
            nuclei_upload=upload_of(bioimageio_packages.nuclei_zip),
            cell_upload=upload_of(bioimageio_packages.torchscript_zip),
            visibility="shared",
        )
    with pytest.raises(registry.ModelImportError, match="The nuclei package was refused: .*TorchScript"):
        registry.segmenter_import(
            owner=admin,
            nuclei_upload=upload_of(bioimageio_packages.pickle_only, "pickle-only.zip"),
            cell_upload=upload_of(bioimageio_packages.cell_zip),
            visibility="shared",
        )
    with pytest.raises(registry.ModelImportError, match=r"The cell package must be a bioimage.io model package"):
        registry.segmenter_import(
            owner=admin,
            nuclei_upload=upload_of(bioimageio_packages.nuclei_zip),
            cell_upload=SimpleUploadedFile("cell.pt", b"x"),
            visibility="shared",
        )
    assert not RegisteredModel.objects.filter(kind="segmenter").exists()
    assert media_files() == []


def test_only_an_administrator_adds_a_shared_segmentation_pair_and_a_private_one_stays_its_owners(
    settings, owner, outsider, bioimageio_packages, channel_uploads, media_files
):
    from cells import intake
    from cells.uploads import FieldUpload, JobInputError

    with pytest.raises(PermissionDenied, match="Only an administrator adds shared models"):
        import_pair(owner, bioimageio_packages, visibility="shared")
    assert media_files() == []
    settings.HPAWEB_PRIVATE_MODELS = True
    model = import_pair(owner, bioimageio_packages, visibility="private", name="my HPA pair")
    assert (model.name, model.owner) == ("my HPA pair", owner)
    assert registry.segmenters_for(outsider).count() == 0
    with pytest.raises(JobInputError) as refused:
        intake.job_create(
            owner=outsider,
            uploads=[FieldUpload(name="f1", channel_files=channel_uploads(size_px=64))],
            segmentation_backend=model.segmentation_backend,
        )
    assert refused.value.field_errors == {
        "segmentation": f"There is no segmentation model with id {model.pk} that you can use; "
        "choose one from /api/models/."
    }
    with pytest.raises(registry.ModelImportError, match="registered already"):
        import_pair(owner, bioimageio_packages, visibility="private")


def test_deleting_a_segmentation_pair_removes_both_files_and_it_cannot_be_the_default(
    admin, bioimageio_packages, media_files, django_capture_on_commit_callbacks
):
    model = import_pair(admin, bioimageio_packages)
    with pytest.raises(ValidationError, match="Only a classifier can be the installation's default"):
        registry.model_set_default(model=model, user=admin)
    with django_capture_on_commit_callbacks(execute=True):
        registry.model_delete(model=model, user=admin)
    assert not RegisteredModel.objects.filter(pk=model.pk).exists()
    assert media_files() == []
