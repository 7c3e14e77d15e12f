"""recsim_personas.memory."""
