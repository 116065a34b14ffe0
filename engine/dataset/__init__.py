"""The dataset as Kohya sees it: concept folders, images, caption sidecars and Kiln's state."""

from kiln.engine.dataset.scan import IMAGE_EXTENSIONS, Concept, Dataset, ImageRecord, scan_dataset

__all__ = ["IMAGE_EXTENSIONS", "Concept", "Dataset", "ImageRecord", "scan_dataset"]
