"""model layer of CTSAM3DLib."""
