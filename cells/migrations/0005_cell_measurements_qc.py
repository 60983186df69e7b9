from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("cells", "0004_segmenter_pair")]

    operations = []
