"""Renderers for engine events. The only package that imports rich."""
