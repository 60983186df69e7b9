"""Training: the cell data store, the classifier and the segmentation networks."""
