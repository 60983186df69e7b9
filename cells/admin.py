from django.contrib import admin

from cells.models import Cell, CellAnnotation, Field, Job, JobShare, RegisteredModel, TrainingJob


class FieldInline(admin.TabularInline):
    model = Field
    fields = ["name", "status", "progress", "error", "width", "height", "model_name"]
    readonly_fields = fields
    extra = 0
    show_change_link = True


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ["id", "name", "owner", "segmentation_backend", "created_at"]
    list_filter = ["segmentation_backend"]
    search_fields = ["name", "owner__username"]
    inlines = [FieldInline]


@admin.register(Field)
class FieldAdmin(admin.ModelAdmin):
    list_display = ["id", "name", "job", "status", "progress", "model_name", "created_at"]
    list_filter = ["status"]
    search_fields = ["name"]
    raw_id_fields = ["job"]


@admin.register(Cell)
class CellAdmin(admin.ModelAdmin):
    list_display = ["id", "field", "label", "area_px", "top_class", "top_confidence"]
    raw_id_fields = ["field"]


@admin.register(JobShare)
class JobShareAdmin(admin.ModelAdmin):
    """Sharing a job lets another user train on its annotations and labels."""

    list_display = ["job", "user", "shared_by", "created_at"]
    raw_id_fields = ["job", "user"]
    readonly_fields = ["shared_by"]

    def save_model(self, request, obj, form, change):
        obj.shared_by = request.user
        super().save_model(request, obj, form, change)


@admin.register(CellAnnotation)
class CellAnnotationAdmin(admin.ModelAdmin):
    list_display = ["field", "cell_label", "kind", "classes", "author", "created_at", "undone_at"]
    list_filter = ["kind"]
    raw_id_fields = ["field", "cell"]


@admin.register(TrainingJob)
class TrainingJobAdmin(admin.ModelAdmin):
    list_display = ["name", "owner", "status", "source", "created_at", "result_model"]
    list_filter = ["status", "source"]
    raw_id_fields = ["result_model", "base_model"]


@admin.register(RegisteredModel)
class RegisteredModelAdmin(admin.ModelAdmin):
    """An administrator shares a user's trained model by setting its visibility to shared."""

    list_display = ["name", "version", "kind", "owner", "visibility", "is_default"]
    list_filter = ["kind", "visibility"]
    fields = ["name", "version", "visibility", "summary", "card"]
