"""Backends: byte stores with a batch interface. See `acacheorm.backends.base.Backend`."""
