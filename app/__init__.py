"""bloodseg: segment and count red and white blood cells in microscope images."""

__version__ = "0.1.0"
