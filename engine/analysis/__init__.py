"""Image and dataset measures: tones (W/B), DSB and its verdict, rebalance, quality, cache."""
