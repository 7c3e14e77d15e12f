"""Reproduction of the paper's Table 1 and the main README job (`recsim-personas reproduce`)."""
