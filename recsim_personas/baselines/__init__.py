"""recsim_personas.baselines."""
