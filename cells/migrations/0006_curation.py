import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

import cells.models


class Migration(migrations.Migration):
    dependencies = [
        ("cells", "0005_cell_measurements_qc"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name="field",
            name="image_labels",
            field=models.JSONField(
                blank=True,
                help_text="The field's known classes (0..18), as given at upload; null when none.",
                null=True,
            ),
        ),
        migrations.CreateModel(
            name="JobShare",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                (
                    "job",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE, related_name="shares", to="cells.job"
                    ),
                ),
                (
                    "shared_by",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                (
                    "user",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="shared_jobs",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            options={
                "constraints": [models.UniqueConstraint(fields=("job", "user"), name="one_share_per_job_and_user")],
            },
        ),
        migrations.CreateModel(
            name="CellAnnotation",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("cell_label", models.PositiveIntegerField()),
                (
                    "mask_digest",
                    models.CharField(help_text="sha256 of the cell's mask RLE when it was annotated.", max_length=64),
                ),
                (
                    "kind",
                    models.CharField(
                        choices=[
                            ("classes", "Classes"),
                            ("not_a_cell", "Not a cell"),
                            ("badly_outlined", "Badly outlined"),
                        ],
                        default="classes",
                        max_length=20,
                    ),
                ),
                (
                    "classes",
                    models.JSONField(blank=True, default=list, help_text="Class indices 0..18 (kind classes)."),
                ),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("corrected_model_name", models.CharField(blank=True, max_length=260)),
                ("corrected_probabilities", models.JSONField(blank=True, null=True)),
                ("undone_at", models.DateTimeField(blank=True, null=True)),
                (
                    "author",
                    models.ForeignKey(
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                (
                    "cell",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="annotations",
                        to="cells.cell",
                    ),
                ),
                (
                    "corrected_model",
                    models.ForeignKey(
                        blank=True,
                        help_text="The classifier whose prediction this corrected.",
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to="cells.registeredmodel",
                    ),
                ),
                (
                    "field",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE, related_name="annotations", to="cells.field"
                    ),
                ),
                (
                    "undone_by",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            options={
                "ordering": ["-created_at", "-id"],
                "indexes": [models.Index(fields=["field", "cell_label"], name="cells_annot_field_label_idx")],
            },
        ),
        migrations.CreateModel(
            name="MaskEdit",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                (
                    "kind",
                    models.CharField(
                        choices=[("delete", "Delete a cell"), ("merge", "Merge two cells"), ("split", "Split a cell")],
                        max_length=20,
                    ),
                ),
                ("cell_labels_before", models.FileField(upload_to=cells.models._mask_edit_path)),
                ("nuclei_labels_before", models.FileField(upload_to=cells.models._mask_edit_path)),
                (
                    "details",
                    models.JSONField(blank=True, default=dict, help_text="The cells and line of the fix."),
                ),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("undone_at", models.DateTimeField(blank=True, null=True)),
                (
                    "author",
                    models.ForeignKey(
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                (
                    "field",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE, related_name="mask_edits", to="cells.field"
                    ),
                ),
            ],
            options={"ordering": ["-created_at", "-id"]},
        ),
        migrations.CreateModel(
            name="TrainingJob",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("name", models.CharField(max_length=200)),
                (
                    "source",
                    models.CharField(
                        choices=[
                            ("cells", "Annotated cells (cell-level labels)"),
                            ("jobs", "Labelled jobs (image-level labels, weak)"),
                            ("both", "Both"),
                        ],
                        default="cells",
                        max_length=10,
                    ),
                ),
                ("backbone", models.CharField(blank=True, max_length=100)),
                ("epochs", models.PositiveSmallIntegerField(default=6)),
                ("refine_rounds", models.PositiveSmallIntegerField(default=1)),
                (
                    "status",
                    models.CharField(
                        choices=[
                            ("queued", "Queued"),
                            ("running", "Running"),
                            ("done", "Done"),
                            ("failed", "Failed"),
                            ("cancelled", "Cancelled"),
                        ],
                        default="queued",
                        max_length=20,
                    ),
                ),
                (
                    "progress",
                    models.JSONField(
                        blank=True, default=dict, help_text="epoch, epochs, loss, validation score, stage."
                    ),
                ),
                ("history", models.JSONField(blank=True, default=list)),
                ("data_summary", models.JSONField(blank=True, default=dict)),
                ("error", models.TextField(blank=True)),
                ("cancel_requested", models.BooleanField(default=False)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("started_at", models.DateTimeField(blank=True, null=True)),
                ("finished_at", models.DateTimeField(blank=True, null=True)),
                (
                    "base_model",
                    models.ForeignKey(
                        blank=True,
                        help_text="The classifier fine-tuned; empty: trained from the backbone.",
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to="cells.registeredmodel",
                    ),
                ),
                ("jobs", models.ManyToManyField(blank=True, related_name="training_jobs", to="cells.job")),
                (
                    "owner",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="training_jobs",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                (
                    "result_model",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="training_jobs",
                        to="cells.registeredmodel",
                    ),
                ),
            ],
            options={"ordering": ["-created_at", "-id"]},
        ),
    ]
