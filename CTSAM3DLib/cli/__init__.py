"""cli layer of CTSAM3DLib."""
