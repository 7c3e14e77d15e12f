"""recsim_personas.agents."""
