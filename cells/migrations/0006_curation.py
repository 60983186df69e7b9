from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("cells", "0005_cell_measurements_qc")]

    operations = []
