"""train layer of CTSAM3DLib."""
