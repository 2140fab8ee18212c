"""Target configuration: models and loading."""
