"""The cell classifier: its network and the predictor that serves it."""
