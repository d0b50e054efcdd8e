"""Keras layers of the search spaces."""
