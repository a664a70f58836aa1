"""One module per data source; each exposes `load_<source>(cfg, split) -> ImageDataset`."""
