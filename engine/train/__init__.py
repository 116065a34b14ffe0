"""LoRA training for SD 1.5: config, model loading, data, the loop, LoRA files, samples, events."""
