"""tagless: representations and multi-label classifiers from few or no labels."""
__version__ = "0.1.0"
