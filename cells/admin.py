from django.contrib import admin

from cells.models import Cell, Field, Job


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
