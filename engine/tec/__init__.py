"""The text-encoder corruption (TEC) meter: how far a CLIP text encoder drifted from a reference.

Modules: ``loading`` (the text encoder and tokenizer alone, from a folder or a single file),
``vocab`` (the probe words), ``embed`` (per-word embeddings, batched), ``measures`` (score,
confusion, drift, the report), ``lora`` (merging a LoRA's text-encoder weights) and ``meter``
(what the CLI and the TUI call: ``checkpoint_tec_report``, ``lora_tec_report``,
``loras_tec_reports``; a run's series is :func:`kiln.engine.runs.tec_series.run_tec_series`).
"""
