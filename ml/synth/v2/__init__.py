"""The v2 style of synthetic fields (`python -m ml synth --style v2`): closer to real HPA images.

Confluent colonies of irregular touching cells of varied size, fading borders, microtubule
filaments and a reticular ER in unsaturated reference channels, dim and bright fields, uneven
illumination, camera offset and noise, out-of-focus cells, and each class's green pattern drawn
as HPA images show it. Same truth and writer as v1; v1's output is untouched.
"""

from ml.synth.v2.field import synthesize_field_v2

__all__ = ["synthesize_field_v2"]
