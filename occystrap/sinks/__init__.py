"""Output writers. Each is one adapter over the image model."""
