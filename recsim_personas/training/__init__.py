"""recsim_personas.training."""
