from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("cells", "0004_segmenter_pair")]

    operations = [
        migrations.AlterField(
            model_name="registeredmodel",
            name="format",
            field=models.CharField(
                choices=[
                    ("hpaweb", "hpaweb checkpoint"),
                    ("bioimage.io", "bioimage.io package"),
                    ("hpaweb-classical", "classical classifier (skops)"),
                ],
                default="hpaweb",
                max_length=20,
            ),
        ),
        migrations.AddField(
            model_name="job",
            name="pixel_size_um",
            field=models.FloatField(
                blank=True,
                null=True,
                help_text="Microns per pixel of the job's fields, if given; sets the segmentation's scale.",
            ),
        ),
        migrations.AddField(
            model_name="job",
            name="nucleus_diameter_px",
            field=models.FloatField(
                blank=True,
                null=True,
                help_text="Typical nucleus diameter in pixels, if given; sets the segmentation's scale.",
            ),
        ),
        migrations.AddField(
            model_name="job",
            name="channel_mapping",
            field=models.JSONField(
                blank=True, default=dict, help_text="OME-TIFF channel name -> red/green/blue/yellow, if given."
            ),
        ),
        migrations.AddField(
            model_name="cell",
            name="measurements",
            field=models.JSONField(
                blank=True,
                null=True,
                help_text="Shape, intensity and texture by name (ml.measure); null when not measured.",
            ),
        ),
        migrations.AddField(
            model_name="cell",
            name="qc_flags",
            field=models.JSONField(
                blank=True, default=list, help_text="Quality-control flags (ml.qc.QC_FLAGS) that apply."
            ),
        ),
    ]
