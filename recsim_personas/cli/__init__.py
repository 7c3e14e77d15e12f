"""recsim_personas.cli."""
