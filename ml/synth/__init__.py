"""Synthetic HPA-like fields with per-cell truth, for training and measuring without real data.

A field is drawn in steps, each in its own module:
- `layout`: nuclei placed and cells grown as irregular ellipses, split where they overlap;
- `classes`: the field's labels and the classes each cell shows (weak labels);
- `references`: each cell's maps and its blue (nucleus), red (microtubules), yellow (ER);
- `painters`: green, one painter per class, keyed by class name;
- `optics`: blur, gain, offset, shot and read noise;
- `field`: `synthesize_field`, which runs the steps in order (`drawing` holds their primitives);
- `writer`: `write_dataset`, the Kaggle layout plus truth, as `python -m ml synth` writes it.

`v2/` is a second style with the same truth and writer (`write_dataset(style="v2")`,
`python -m ml synth --style v2`): colonies of irregular touching cells, real-like staining,
textures and optics. The default style stays v1, unchanged to the bit.
"""

from ml.synth.field import MIN_SIZE_PX, REFERENCE_SIZE_PX, SyntheticField, synthesize_field
from ml.synth.writer import BIT_DEPTHS, field_id, write_dataset

__all__ = [
    "BIT_DEPTHS",
    "MIN_SIZE_PX",
    "REFERENCE_SIZE_PX",
    "SyntheticField",
    "field_id",
    "synthesize_field",
    "write_dataset",
]
