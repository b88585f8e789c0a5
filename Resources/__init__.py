"""Bundled data of CTSAM3DLib (default weights, sample CT); installed as ``CTSAM3DLib.resources``."""
