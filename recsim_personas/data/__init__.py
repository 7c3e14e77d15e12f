"""recsim_personas.data."""
