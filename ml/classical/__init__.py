"""Classical cell classifiers: texture features of the protein channel, then an SVM or a random forest.

The baseline the seed compares a CNN against: `features.py` turns classifier crops into LBP,
Haralick and wavelet-scattering features (`ml.measure.texture`), `classifier.py` is the
`CellClassifierModel` the product runs (saved as a skops file, a format that cannot run code on
loading), and `training.py` trains one from the same folders as `python -m ml train`.
"""
