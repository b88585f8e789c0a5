"""Slicer-side setup of the CTSAM3D module: installing its Python dependencies and registering its sample data.

A package beside ``CTSAM3D.py`` (Slicer loads every top-level ``.py`` there as a module, not a folder).
"""
