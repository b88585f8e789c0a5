"""``ctsam3d serve``: CTSAM3D in the browser on trame-slicer (the ``web`` extra).

``gateway`` gives every browser tab its own worker process (``app``: one trame-slicer scene, one
``mrml_bridge.BridgeLogic``), so the web app and the Slicer module run the same engine code path.
``workspace`` is the trame-free part of a tab (CT, segmentation, segments, clicks, downloads);
``inputs`` turns a server path or an upload into files Slicer can read.
"""
