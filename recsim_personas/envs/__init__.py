"""recsim_personas.envs."""
