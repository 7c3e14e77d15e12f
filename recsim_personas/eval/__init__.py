"""recsim_personas.eval."""
