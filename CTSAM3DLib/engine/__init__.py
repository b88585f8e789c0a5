"""engine layer of CTSAM3DLib."""
