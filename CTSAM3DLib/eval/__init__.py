"""eval layer of CTSAM3DLib."""
