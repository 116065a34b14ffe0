"""Model builders and checkpoint layouts: the tiny SD 1.5-shaped pipeline and LDM key maps."""
