"""Planning a training run: Kohya's aspect buckets, step arithmetic and the guide's advice."""
